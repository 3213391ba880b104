//! The claims policy: what a caller may ask for, and what the daemon always decides.

use rand::RngCore;
use serde_json::{Map, Value};

use super::{HARD_MAX_TTL_SECONDS, RESERVED_CLAIMS};
use crate::config::IssuerConfig;
use crate::error::Error;
use crate::util::b64;

/// Longest `sub` accepted, in bytes.
const MAX_SUB_BYTES: usize = 256;

/// `aud`: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// A single audience, serialized as a string.
    One(String),
    /// Several audiences, serialized as an array.
    Many(Vec<String>),
}

impl Audience {
    fn values(&self) -> &[String] {
        match self {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Audience::One(one) => Value::String(one.clone()),
            Audience::Many(many) => Value::from(many.clone()),
        }
    }
}

/// What `POST /v1/tokens` asks for (`api::wire::MintRequest` on the wire).
#[derive(Clone, Debug)]
pub struct MintRequest {
    /// Name of the issuer (a key of `[issuers]` in the config).
    pub issuer: String,
    /// The `sub` claim.
    pub sub: Option<String>,
    /// The `aud` claim; every value must be one the issuer allows.
    pub aud: Audience,
    /// Requested lifetime; default and maximum are the issuer's `max_ttl_seconds`.
    pub ttl_seconds: Option<u64>,
    /// Custom claims, under the issuer's size cap and claim rules.
    pub claims: Map<String, Value>,
}

/// A claims set ready to sign, with the values the response reports.
#[derive(Clone, Debug)]
pub struct ClaimsSet {
    /// The serialized JWT payload.
    pub payload: Vec<u8>,
    /// The `jti`: 128 random bits, base64url.
    pub jti: String,
    /// The `exp`, seconds since the epoch.
    pub exp: u64,
}

/// Checks `request` against `policy` and builds the claims the daemon will sign.
/// `now` is seconds since the epoch.
pub fn build(policy: &IssuerConfig, request: &MintRequest, now: u64) -> Result<ClaimsSet, Error> {
    if let Some(claim) = request
        .claims
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(Error::ReservedClaim(claim.clone()));
    }
    if let Some(claim) = policy
        .forbidden_claims
        .iter()
        .find(|c| request.claims.contains_key(*c))
    {
        return Err(Error::ForbiddenClaim(claim.clone()));
    }
    // A null value does not satisfy a requirement: `{"nonce": null}` carries no nonce.
    let present = |c: &String| request.claims.get(c).is_some_and(|v| !v.is_null());
    if let Some(claim) = policy.required_claims.iter().find(|c| !present(c)) {
        return Err(Error::MissingClaim(claim.clone()));
    }
    let size = serde_json::to_vec(&request.claims).map_or(usize::MAX, |v| v.len());
    if size > policy.max_claims_bytes {
        return Err(Error::ClaimsTooLarge {
            size,
            max: policy.max_claims_bytes,
        });
    }
    let audiences = request.aud.values();
    if audiences.is_empty() {
        return Err(Error::InvalidRequest(
            "aud must name at least one audience".to_string(),
        ));
    }
    if let Some(aud) = audiences.iter().find(|a| !policy.audiences.contains(a)) {
        return Err(Error::AudienceNotAllowed(aud.clone()));
    }
    if let Some(sub) = &request.sub
        && (sub.is_empty() || sub.len() > MAX_SUB_BYTES)
    {
        return Err(Error::InvalidRequest(format!(
            "sub must be 1 to {MAX_SUB_BYTES} bytes"
        )));
    }
    let max = policy.max_ttl_seconds.min(HARD_MAX_TTL_SECONDS);
    let ttl = request.ttl_seconds.unwrap_or(max);
    if ttl == 0 {
        return Err(Error::InvalidRequest(
            "ttl_seconds must be at least 1".to_string(),
        ));
    }
    if ttl > max {
        return Err(Error::TtlExceedsMax {
            requested: ttl,
            max,
        });
    }

    let mut random = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let jti = b64(random);
    let exp = now + ttl;
    let mut claims = request.claims.clone();
    claims.insert("iss".into(), Value::String(policy.iss.clone()));
    if let Some(sub) = &request.sub {
        claims.insert("sub".into(), Value::String(sub.clone()));
    }
    claims.insert("aud".into(), request.aud.to_value());
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(exp));
    claims.insert("jti".into(), Value::String(jti.clone()));
    let payload = serde_json::to_vec(&claims).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(ClaimsSet { payload, jti, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn policy() -> IssuerConfig {
        let text = r#"
[pkcs11]
module = "/m.so"
token_label = "t"
pin_env = "P"
[issuers.demo]
iss = "https://issuer.example"
audiences = ["api", "web"]
required_claims = ["nonce"]
forbidden_claims = ["admin"]
max_claims_bytes = 100
callers = ["uid:1"]
"#;
        Config::parse(text).unwrap().issuers.remove("demo").unwrap()
    }

    /// A request written as the JSON a client would send.
    fn request(json: Value) -> MintRequest {
        let text = |v: &Value| v.as_str().unwrap().to_string();
        let aud = match &json["aud"] {
            Value::Array(many) => Audience::Many(many.iter().map(text).collect()),
            one => Audience::One(text(one)),
        };
        MintRequest {
            issuer: text(&json["issuer"]),
            sub: json.get("sub").map(text),
            aud,
            ttl_seconds: json.get("ttl_seconds").and_then(Value::as_u64),
            claims: json["claims"].as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn daemon_sets_registered_claims() {
        let r = request(
            serde_json::json!({"issuer":"demo","sub":"alice","aud":"api","ttl_seconds":30,"claims":{"nonce":"n"}}),
        );
        let set = build(&policy(), &r, 1_000).unwrap();
        let claims: Map<String, Value> = serde_json::from_slice(&set.payload).unwrap();
        assert_eq!(claims["iss"], "https://issuer.example");
        assert_eq!(claims["iat"], 1_000);
        assert_eq!(claims["exp"], 1_030);
        assert_eq!(set.exp, 1_030);
        assert_eq!(claims["jti"], set.jti.as_str());
        assert_eq!(crate::util::unb64(&set.jti).unwrap().len(), 16);
        assert_eq!(claims["nonce"], "n");
        let again = build(&policy(), &r, 1_000).unwrap();
        assert_ne!(again.jti, set.jti);
    }

    #[test]
    fn ttl_defaults_to_the_issuer_max_and_is_capped() {
        let r = request(
            serde_json::json!({"issuer":"demo","aud":["api","web"],"claims":{"nonce":"n"}}),
        );
        assert_eq!(build(&policy(), &r, 0).unwrap().exp, 60);
        let r = request(
            serde_json::json!({"issuer":"demo","aud":"api","ttl_seconds":61,"claims":{"nonce":"n"}}),
        );
        assert!(matches!(
            build(&policy(), &r, 0),
            Err(Error::TtlExceedsMax {
                requested: 61,
                max: 60
            })
        ));
    }

    #[test]
    fn policy_violations_have_their_own_errors() {
        let p = policy();
        let cases = [
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{"nonce":"n","exp":9}}),
                "reserved_claim",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{"nonce":"n","iss":"x"}}),
                "reserved_claim",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{}}),
                "missing_claim",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{"nonce":null}}),
                "missing_claim",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{"nonce":"n","admin":true}}),
                "forbidden_claim",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"evil","claims":{"nonce":"n"}}),
                "audience_not_allowed",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":["api","evil"],"claims":{"nonce":"n"}}),
                "audience_not_allowed",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","claims":{"nonce":"x".repeat(200)}}),
                "claims_too_large",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":"api","ttl_seconds":0,"claims":{"nonce":"n"}}),
                "invalid_request",
            ),
            (
                serde_json::json!({"issuer":"demo","aud":[],"claims":{"nonce":"n"}}),
                "invalid_request",
            ),
        ];
        for (body, code) in cases {
            let got = build(&p, &request(body.clone()), 0).unwrap_err();
            assert_eq!(got.code(), code, "{body}");
        }
    }
}
