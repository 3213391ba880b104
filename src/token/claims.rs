//! The claims policy: what a caller may ask for, and what the daemon always decides.

use rand::RngCore;
use serde_json::{Map, Value};

use super::jws::Header;
use super::profile::SubjectRefusal;
use super::{HARD_MAX_TTL_SECONDS, RESERVED_CLAIMS};
use crate::algorithm::Algorithm;
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
    check_profile(policy, request)?;
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

/// What the issuer's profile asks of a request beyond the issuer's claim rules: a
/// `sub` (RFC 9068, JWT-SVID), a `client_id` (RFC 9068), a SPIFFE ID of the issuer's
/// trust domain as `sub` (JWT-SVID).
fn check_profile(policy: &IssuerConfig, request: &MintRequest) -> Result<(), Error> {
    let profile = policy.profile();
    let sub = request.sub.as_deref();
    if profile.requires_sub() && sub.is_none() {
        return Err(Error::MissingClaim("sub".to_string()));
    }
    for claim in profile.required_claims() {
        match request.claims.get(*claim) {
            None | Some(Value::Null) => return Err(Error::MissingClaim(claim.to_string())),
            Some(Value::String(text)) if !text.is_empty() => {}
            Some(_) => {
                return Err(Error::InvalidRequest(format!(
                    "claim {claim:?} must be a non-empty string"
                )));
            }
        }
    }
    match sub.map(|sub| profile.check_subject(sub)) {
        Some(Err(SubjectRefusal::NotSpiffeId(why))) => Err(Error::InvalidSpiffeId(why)),
        Some(Err(SubjectRefusal::OtherTrustDomain(found))) => {
            Err(Error::TrustDomainNotAllowed(found))
        }
        _ => Ok(()),
    }
}

/// The protected header of a token `policy` mints with its key `kid` of `algorithm`:
/// the issuer's name for the algorithm and its profile's `typ`, and nothing else.
pub fn header(policy: &IssuerConfig, algorithm: Algorithm, kid: &str) -> Result<Header, Error> {
    let profile = policy.profile();
    // Config validation holds a jwt-svid issuer to ES256, but a key generated before its
    // config changed may still be active.
    if !profile.allows(algorithm) {
        return Err(Error::Conflict(format!(
            "the active key {kid} is {algorithm}, and the {} profile signs with ES256 only: rotate the issuer's key",
            profile.name()
        )));
    }
    Ok(Header::typed(policy.jws_alg(algorithm), profile.typ(), kid))
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

    fn profiled(lines: &str) -> IssuerConfig {
        let text = format!(
            "[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n\
             [issuers.p]\niss = \"https://p.example\"\naudiences = [\"api\"]\ncallers = [\"uid:1\"]\n{lines}\n"
        );
        Config::parse(&text).unwrap().issuers.remove("p").unwrap()
    }

    #[test]
    fn profiles_ask_for_their_claims() {
        let at = profiled("profile = \"at+jwt\"");
        let svid = profiled("profile = \"jwt-svid\"\ntrust_domain = \"example.org\"");
        let cases = [
            (
                &at,
                serde_json::json!({"issuer":"p","aud":"api","claims":{"client_id":"c"}}),
                "missing_claim",
            ),
            (
                &at,
                serde_json::json!({"issuer":"p","sub":"u","aud":"api"}),
                "missing_claim",
            ),
            (
                &at,
                serde_json::json!({"issuer":"p","sub":"u","aud":"api","claims":{"client_id":null}}),
                "missing_claim",
            ),
            (
                &at,
                serde_json::json!({"issuer":"p","sub":"u","aud":"api","claims":{"client_id":7}}),
                "invalid_request",
            ),
            (
                &at,
                serde_json::json!({"issuer":"p","sub":"u","aud":"api","claims":{"client_id":""}}),
                "invalid_request",
            ),
            (
                &svid,
                serde_json::json!({"issuer":"p","aud":"api"}),
                "missing_claim",
            ),
            (
                &svid,
                serde_json::json!({"issuer":"p","sub":"web","aud":"api"}),
                "invalid_spiffe_id",
            ),
            (
                &svid,
                serde_json::json!({"issuer":"p","sub":"spiffe://example.org","aud":"api"}),
                "invalid_spiffe_id",
            ),
            (
                &svid,
                serde_json::json!({"issuer":"p","sub":"spiffe://example.org/a?b","aud":"api"}),
                "invalid_spiffe_id",
            ),
            (
                &svid,
                serde_json::json!({"issuer":"p","sub":"spiffe://other.org/web","aud":"api"}),
                "trust_domain_not_allowed",
            ),
        ];
        for (policy, body, code) in cases {
            let got = build(policy, &request(body.clone()), 0).unwrap_err();
            assert_eq!(got.code(), code, "{body}");
        }
        let ok = request(
            serde_json::json!({"issuer":"p","sub":"u","aud":"api","claims":{"client_id":"c"}}),
        );
        let claims: Map<String, Value> =
            serde_json::from_slice(&build(&at, &ok, 0).unwrap().payload).unwrap();
        assert_eq!(
            (claims["sub"].as_str(), claims["client_id"].as_str()),
            (Some("u"), Some("c"))
        );
        let ok = request(
            serde_json::json!({"issuer":"p","sub":"spiffe://example.org/ns/web","aud":"api"}),
        );
        build(&svid, &ok, 0).unwrap();
    }

    #[test]
    fn the_header_carries_the_profile_typ_and_nothing_else() {
        let at = profiled("profile = \"at+jwt\"");
        let header =
            serde_json::to_value(super::header(&at, Algorithm::Es256, "k").unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg":"ES256","typ":"at+jwt","kid":"k"})
        );
        let custom = profiled(
            "profile = { typ = \"secevent+jwt\" }\nalgorithm = \"EdDSA\"\neddsa_alg = \"Ed25519\"",
        );
        let header =
            serde_json::to_value(super::header(&custom, Algorithm::EdDsa, "k").unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg":"Ed25519","typ":"secevent+jwt","kid":"k"})
        );
        let svid = profiled("profile = \"jwt-svid\"\ntrust_domain = \"example.org\"");
        let header =
            serde_json::to_value(super::header(&svid, Algorithm::Es256, "k").unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg":"ES256","typ":"JWT","kid":"k"})
        );
        // A key left from before the issuer became a jwt-svid issuer does not sign.
        let err = super::header(&svid, Algorithm::EdDsa, "k").unwrap_err();
        assert_eq!(err.code(), "invalid_state");
        let plain =
            serde_json::to_value(super::header(&policy(), Algorithm::Es256, "k").unwrap()).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"alg":"ES256","typ":"JWT","kid":"k"})
        );
    }
}
