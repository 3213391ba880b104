//! Response bodies, each built from what the service returned.
//!
//! Field order is the order clients have always seen: serde writes fields as declared.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{Algorithm, KeyPurpose, KeyState, SignatureFormat};
use crate::keys::Jwk;
use crate::store;
use crate::{hsm, service};

/// A minted token, as `POST /v1/tokens` returns it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub kid: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// Lowercase hex SHA-256 of the exact token string, for audit lookups.
    pub token_sha256: String,
}

impl From<service::MintedToken> for MintedToken {
    fn from(minted: service::MintedToken) -> Self {
        MintedToken {
            token: minted.token,
            kid: minted.kid,
            jti: minted.jti,
            expires_at: minted.expires_at,
            token_sha256: minted.token_sha256,
        }
    }
}

/// A raw signature, as `POST /v1/sign` returns it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignedData {
    /// The signature, base64url.
    pub signature: String,
    /// The key that made it.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// Its encoding.
    pub format: SignatureFormat,
}

impl From<service::SignedData> for SignedData {
    fn from(signed: service::SignedData) -> Self {
        SignedData {
            signature: signed.signature,
            kid: signed.kid,
            alg: signed.alg.into(),
            format: signed.format.into(),
        }
    }
}

/// A valid token, as `POST /v1/verify` returns it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Verified {
    /// Always true; failures are errors with a code.
    pub valid: bool,
    /// The token's claims.
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
    /// The key that signed it.
    pub kid: String,
    /// The issuer (config name) whose key it is.
    pub issuer: String,
}

impl From<service::verify::Verified> for Verified {
    fn from(verified: service::verify::Verified) -> Self {
        Verified {
            valid: verified.valid,
            claims: verified.claims,
            kid: verified.kid,
            issuer: verified.issuer,
        }
    }
}

/// A key, as `GET /v1/keys/{kid}` and the admin calls return it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// Owning issuer.
    pub issuer: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// Lifecycle state.
    pub state: KeyState,
    /// What the key signs: `jwt` or `raw`.
    pub purpose: KeyPurpose,
    /// Generation time, seconds since the epoch.
    pub created_at: u64,
    /// The public JWK, as the JWKS publishes it.
    #[schema(value_type = super::documents::Jwk)]
    pub jwk: Jwk,
    /// What the token reports about the private key.
    pub token_attributes: KeyAttributes,
    /// The key's attestation certificate, PEM.
    pub certificate: String,
}

impl From<service::KeyView> for KeyView {
    fn from(key: service::KeyView) -> Self {
        KeyView {
            kid: key.kid,
            issuer: key.issuer,
            alg: key.alg.into(),
            state: key.state.into(),
            purpose: key.purpose.into(),
            created_at: key.created_at,
            jwk: key.jwk,
            token_attributes: key.token_attributes.into(),
            certificate: key.certificate,
        }
    }
}

/// Security attributes of a private key, as the token reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct KeyAttributes {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside the token, not imported.
    pub local: bool,
}

impl From<hsm::KeyAttributes> for KeyAttributes {
    fn from(a: hsm::KeyAttributes) -> Self {
        KeyAttributes {
            sensitive: a.sensitive,
            always_sensitive: a.always_sensitive,
            extractable: a.extractable,
            never_extractable: a.never_extractable,
            local: a.local,
        }
    }
}

/// Every key the token holds, as `GET /v1/keys` returns them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys, whatever their state.
    pub keys: Vec<KeyView>,
}

impl From<Vec<service::KeyView>> for KeyList {
    fn from(keys: Vec<service::KeyView>) -> Self {
        KeyList {
            keys: keys.into_iter().map(KeyView::from).collect(),
        }
    }
}

// Deserialize too: `super::documents` parses the revocation list that lists these.
/// A revoked token, as `POST /v1/revocations` returns it and `GET /v1/revocations` lists
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokedToken {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`: the revocation is listed until then.
    pub exp: u64,
    /// When it was revoked, seconds since the epoch.
    pub revoked_at: u64,
}

impl From<store::RevokedToken> for RevokedToken {
    fn from(revoked: store::RevokedToken) -> Self {
        RevokedToken {
            jti: revoked.jti,
            exp: revoked.exp,
            revoked_at: revoked.revoked_at,
        }
    }
}

/// `GET /healthz` and `GET /readyz`: `{"status":"ok"}` or `{"status":"ready"}`, with
/// `"warnings"` when `/readyz` finds something wrong that does not stop signing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    /// What the probe found.
    pub status: HealthStatus,
    /// What the operator should look at although the daemon can sign: keys the state
    /// store and the token disagree about (docs/state.md). Left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer of a health probe that succeeded; failures are errors with a code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// The process serves requests (`/healthz`).
    Ok,
    /// The token answers and the audit log takes records (`/readyz`).
    Ready,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clients parse these bodies; their spelling and field order are pinned.
    #[test]
    fn responses_keep_their_json() {
        let signed = SignedData::from(service::SignedData {
            signature: "c2ln".into(),
            kid: "k".into(),
            alg: crate::Algorithm::EdDsa,
            format: service::SignatureFormat::Der,
        });
        assert_eq!(
            serde_json::to_string(&signed).unwrap(),
            r#"{"signature":"c2ln","kid":"k","alg":"EdDSA","format":"der"}"#
        );
        let attributes = KeyAttributes::from(hsm::KeyAttributes {
            sensitive: true,
            always_sensitive: true,
            extractable: false,
            never_extractable: true,
            local: true,
        });
        assert_eq!(
            serde_json::to_string(&attributes).unwrap(),
            r#"{"sensitive":true,"always_sensitive":true,"extractable":false,"never_extractable":true,"local":true}"#
        );
        let mut health = Health {
            status: HealthStatus::Ready,
            warnings: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            r#"{"status":"ready"}"#
        );
        health.warnings.push("w".into());
        assert_eq!(
            serde_json::to_string(&health).unwrap(),
            r#"{"status":"ready","warnings":["w"]}"#
        );
    }
}
