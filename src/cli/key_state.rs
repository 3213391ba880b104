//! What a running daemon says about a key now, for `attest verify`: an attestation stays
//! valid after its key is revoked (the certificate still says where the key was made),
//! so a verdict alone must not read as "this key may be trusted".

use hyper::Method;
use serde_json::Value;
use signetd::client::{self, Endpoint};
use signetd::keys::Jwk;

/// A key as `GET /v1/keys/{kid}` shows it, with the time of its revocation if revoked.
pub struct KeyNow {
    /// `pending`, `active`, `retired`, `archived` or `revoked`.
    pub state: String,
    /// When it was revoked (from `/v1/revocations`), seconds since the epoch.
    pub revoked_at: Option<u64>,
    /// Its public JWK, published or not.
    pub jwk: Option<Jwk>,
}

impl KeyNow {
    /// Whether verifiers may still trust tokens it signed: the states the JWKS
    /// publishes. Archived and revoked keys are out of it.
    pub fn usable(&self) -> bool {
        matches!(self.state.as_str(), "pending" | "active" | "retired")
    }

    /// `revoked (since 1767000000)`, `active`, ...
    pub fn describe(&self) -> String {
        match self.revoked_at {
            Some(at) => format!("{} (since {at}, seconds since the epoch)", self.state),
            None => self.state.clone(),
        }
    }
}

/// The path of `kid` under `/v1/keys/`, refusing what no signetd kid holds (so
/// nothing needs escaping).
fn key_path(kid: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~".contains(c);
    if kid.is_empty() || !kid.chars().all(plain) {
        return Err(format!("--kid {kid:?}: not a key id signetd makes"));
    }
    Ok(format!("/v1/keys/{kid}"))
}

async fn get_json(endpoint: &Endpoint, path: &str) -> Result<Option<Value>, String> {
    let (status, body) = client::send(endpoint, Method::GET, path, None).await?;
    if status.as_u16() == 404 {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(format!("GET {path}: HTTP {}", status.as_u16()));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("GET {path}: not JSON: {e}"))
}

/// Asks the daemon at `endpoint` about `kid`; `None` if it knows no such key.
pub async fn fetch(endpoint: &Endpoint, kid: &str) -> Result<Option<KeyNow>, String> {
    let Some(view) = get_json(endpoint, &key_path(kid)?).await? else {
        return Ok(None);
    };
    let state = view["state"]
        .as_str()
        .ok_or_else(|| format!("GET /v1/keys/{kid}: no state"))?
        .to_string();
    let jwk = serde_json::from_value(view["jwk"].clone()).ok();
    let revoked_at = if state == "revoked" {
        get_json(endpoint, "/v1/revocations")
            .await?
            .and_then(|list| {
                list["keys"]
                    .as_array()?
                    .iter()
                    .find(|k| k["kid"].as_str() == Some(kid))?["revoked_at"]
                    .as_u64()
            })
    } else {
        None
    };
    Ok(Some(KeyNow {
        state,
        revoked_at,
        jwk,
    }))
}

/// The key's attestation chain (`GET /v1/keys/{kid}/attestation`), PEM: how a key that
/// has left the JWKS (archived, revoked) is still checked.
pub async fn chain_pem(endpoint: &Endpoint, kid: &str) -> Result<String, String> {
    let path = format!("{}/attestation", key_path(kid)?);
    let (status, body) = client::send(endpoint, Method::GET, &path, None).await?;
    if !status.is_success() {
        return Err(format!("GET {path}: HTTP {}", status.as_u16()));
    }
    String::from_utf8(body.to_vec()).map_err(|_| format!("GET {path}: not PEM text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_are_put_in_paths_only_when_nothing_needs_escaping() {
        assert_eq!(key_path("es-1_x.y~z").unwrap(), "/v1/keys/es-1_x.y~z");
        for bad in ["", "a/b", "../x", "a b", "k?x=1"] {
            assert!(key_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_published_states_are_usable() {
        let key = |state: &str, revoked_at| KeyNow {
            state: state.to_string(),
            revoked_at,
            jwk: None,
        };
        assert!(key("active", None).usable() && key("retired", None).usable());
        assert!(!key("revoked", Some(5)).usable() && !key("archived", None).usable());
        assert!(
            key("revoked", Some(5))
                .describe()
                .starts_with("revoked (since 5")
        );
    }
}
