//! Verifying a compact JWS against a JWK set, as a careful verifier would: the algorithm
//! comes from an allowlist and must match the key, never from the token alone.

use serde_json::{Map, Value};

use super::jws::Header;
use super::profile::Profile;
use crate::algorithm::Algorithm;
use crate::keys::{JwkSet, VerifyingKey};
use crate::util::unb64;

/// Why a token was rejected; each has a stable code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Not three base64url parts of JSON.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is not ES256, EdDSA or Ed25519 (for example `none` or an HMAC).
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No published key has this `kid`, or its algorithm differs (`EdDSA` and `Ed25519`
    /// name the same algorithm).
    #[error("no key {0:?} for this algorithm")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A required claim is missing or has the wrong type.
    #[error("claim {0:?} is missing or malformed")]
    MissingClaim(&'static str),
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `iat` or `nbf` lies in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `exp - iat` is longer than allowed.
    #[error("token lifetime exceeds the allowed maximum")]
    LifetimeTooLong,
    /// `iss` differs from the expected issuer.
    #[error("issuer does not match")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("audience does not match")]
    WrongAudience,
    /// The key that signed the token is revoked.
    #[error("the signing key is revoked")]
    KeyRevoked,
    /// The header's `typ` is not the one the issuer's profile gives its tokens, or is
    /// missing: a token of one profile is never taken for one of another.
    #[error("token type (typ) {found:?} is not {expected:?}, the type of this issuer's tokens")]
    WrongType {
        /// The profile's `typ`.
        expected: String,
        /// The token's `typ`, if any.
        found: Option<String>,
    },
    /// `sub` is not a SPIFFE ID in the trust domain of the issuer (JWT-SVID).
    #[error("sub is not a SPIFFE ID in this issuer's trust domain")]
    WrongSubject,
    /// The token's `jti` is revoked.
    #[error("the token is revoked")]
    TokenRevoked,
    /// A single-use token was verified before.
    #[error("the token was already used (replay)")]
    Replayed,
}

impl VerifyError {
    /// The stable code of this rejection.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed_token",
            VerifyError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            VerifyError::UnknownKey(_) => "unknown_key",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::MissingClaim(_) => "missing_claim",
            VerifyError::Expired => "token_expired",
            VerifyError::NotYetValid => "token_not_yet_valid",
            VerifyError::LifetimeTooLong => "lifetime_too_long",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::WrongType { .. } => "wrong_token_type",
            VerifyError::WrongSubject => "wrong_subject",
            VerifyError::KeyRevoked => "key_revoked",
            VerifyError::TokenRevoked => "token_revoked",
            VerifyError::Replayed => "replayed",
        }
    }
}

/// What the verifier expects of the claims.
#[derive(Clone, Debug, Default)]
pub struct Expected<'a> {
    /// Required `iss`, if any.
    pub issuer: Option<&'a str>,
    /// An audience `aud` must contain, if any.
    pub audience: Option<&'a str>,
    /// Longest allowed `exp - iat`, if any.
    pub max_ttl: Option<u64>,
    /// Current time, seconds since the epoch.
    pub now: u64,
    /// Allowed clock skew, seconds.
    pub leeway: u64,
    /// The issuer's profile: its `typ`, and what else it asks of header and claims.
    pub profile: Option<Profile<'a>>,
}

/// Verifies `token` against `keys` and `expected`; returns the header and claims.
pub fn verify(
    token: &str,
    keys: &JwkSet,
    expected: &Expected<'_>,
) -> Result<(Header, Map<String, Value>), VerifyError> {
    verify_with(token, expected, |kid, algorithm| {
        let jwk = keys
            .keys
            .iter()
            .find(|k| k.kid == kid && Algorithm::from_jws_name(&k.alg) == Some(algorithm))
            .ok_or_else(|| VerifyError::UnknownKey(kid.to_string()))?;
        // A published key that does not parse verifies nothing.
        jwk.verifying_key().map_err(|_| VerifyError::BadSignature)
    })
}

/// Verifies `token` against `expected` with the key `find` returns for the token's `kid`
/// and algorithm (or the error it returns); returns the header and claims.
pub fn verify_with(
    token: &str,
    expected: &Expected<'_>,
    find: impl FnOnce(&str, Algorithm) -> Result<VerifyingKey, VerifyError>,
) -> Result<(Header, Map<String, Value>), VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a compact JWS has three parts"));
    };
    let header_json: Map<String, Value> = unb64(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("header is not base64url JSON"))?;
    // RFC 7515 §4.1.11: a verifier must reject critical extensions it does not understand,
    // and this one understands none.
    if header_json.contains_key("crit") {
        return Err(malformed("header has critical extensions (crit)"));
    }
    if let Some(only) = expected.profile.as_ref().and_then(Profile::only_headers)
        && let Some(extra) = header_json.keys().find(|k| !only.contains(&k.as_str()))
    {
        return Err(VerifyError::Malformed(format!(
            "header has {extra:?}; this issuer's tokens have only {}",
            only.join(", ")
        )));
    }
    let header: Header = serde_json::from_value(Value::Object(header_json))
        .map_err(|_| malformed("header fields have the wrong types"))?;
    let Some(algorithm) = Algorithm::from_jws_name(&header.alg) else {
        return Err(VerifyError::AlgorithmNotAllowed(header.alg));
    };
    // A profile that narrows the algorithms (JWT-SVID: ES256 only) is enforced here too,
    // not only at mint: an issuer's EdDSA key, published before the profile changed,
    // must not make an EdDSA token pass for a JWT-SVID. Refused before any signature
    // work, as for an algorithm outside the allowlist.
    if let Some(profile) = &expected.profile
        && !profile.allows(algorithm)
    {
        return Err(VerifyError::AlgorithmNotAllowed(header.alg));
    }
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| malformed("header has no kid"))?;
    let key = find(kid, algorithm)?;
    // A key is used only as the algorithm it is, whatever `find` returned: no token can
    // make an Ed25519 key check an ES256 signature or the reverse.
    if key.algorithm() != algorithm {
        return Err(VerifyError::UnknownKey(kid.to_string()));
    }
    let signature = unb64(s).ok_or_else(|| malformed("signature is not base64url"))?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;
    let claims: Map<String, Value> = unb64(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| malformed("payload is not base64url JSON object"))?;
    check_claims(&claims, expected)?;
    if let Some(profile) = &expected.profile {
        check_profile(profile, &header, &claims)?;
    }
    Ok((header, claims))
}

/// What the issuer's profile asks of a token: its `typ`, and the claims the daemon
/// would not have minted it without.
fn check_profile(
    profile: &Profile<'_>,
    header: &Header,
    claims: &Map<String, Value>,
) -> Result<(), VerifyError> {
    if !profile.accepts_typ(header.typ.as_deref()) {
        return Err(VerifyError::WrongType {
            expected: profile.typ().to_string(),
            found: header.typ.clone(),
        });
    }
    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingClaim(name))
    };
    if profile.requires_sub() {
        profile
            .check_subject(text("sub")?)
            .map_err(|_| VerifyError::WrongSubject)?;
    }
    for claim in profile.required_claims() {
        text(claim)?;
    }
    Ok(())
}

fn check_claims(claims: &Map<String, Value>, expected: &Expected<'_>) -> Result<(), VerifyError> {
    let number = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_u64)
            .ok_or(VerifyError::MissingClaim(name))
    };
    let (iat, exp) = (number("iat")?, number("exp")?);
    // Saturating: claims are attacker-chosen numbers and must not overflow the checks.
    let latest_acceptable = expected.now.saturating_add(expected.leeway);
    if exp.saturating_add(expected.leeway) <= expected.now {
        return Err(VerifyError::Expired);
    }
    if iat > latest_acceptable {
        return Err(VerifyError::NotYetValid);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_u64().ok_or(VerifyError::MissingClaim("nbf"))?;
        if nbf > latest_acceptable {
            return Err(VerifyError::NotYetValid);
        }
    }
    if exp <= iat || expected.max_ttl.is_some_and(|max| exp - iat > max) {
        return Err(VerifyError::LifetimeTooLong);
    }
    if let Some(want) = expected.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(want)
    {
        return Err(VerifyError::WrongIssuer);
    }
    if let Some(want) = expected.audience {
        let found = match claims.get("aud") {
            Some(Value::String(one)) => one == want,
            Some(Value::Array(many)) => many.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        if !found {
            return Err(VerifyError::WrongAudience);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;
    use crate::keys::Jwk;
    use crate::token::jws;
    use crate::util::b64;
    use p256::ecdsa::signature::Signer;

    fn setup() -> (p256::ecdsa::SigningKey, JwkSet) {
        let secret = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
        let point = secret.verifying_key().to_encoded_point(false);
        let keys = JwkSet {
            keys: vec![Jwk::from_public_key(
                Algorithm::Es256,
                "k",
                point.as_bytes(),
            )],
        };
        (secret, keys)
    }

    fn token(secret: &p256::ecdsa::SigningKey, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig: p256::ecdsa::Signature = secret.sign(input.as_bytes());
        let sig = sig.normalize_s().unwrap_or(sig);
        jws::compact(&input, &sig.to_bytes())
    }

    #[test]
    fn checks_signature_algorithm_and_claims() {
        let (secret, keys) = setup();
        let header = r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#;
        let claims = r#"{"iss":"i","aud":"a","iat":100,"exp":160}"#;
        let good = token(&secret, header, claims);
        let at = |now| Expected {
            issuer: Some("i"),
            audience: Some("a"),
            max_ttl: Some(60),
            now,
            leeway: 5,
            profile: Some(Profile::Jwt),
        };
        verify(&good, &keys, &at(120)).unwrap();
        assert_eq!(
            verify(&good, &keys, &at(170)).unwrap_err(),
            VerifyError::Expired
        );
        assert_eq!(
            verify(&good, &keys, &at(90)).unwrap_err(),
            VerifyError::NotYetValid
        );
        let wrong_aud = Expected {
            audience: Some("b"),
            ..at(120)
        };
        assert_eq!(
            verify(&good, &keys, &wrong_aud).unwrap_err(),
            VerifyError::WrongAudience
        );
        let mut tampered = good.clone();
        tampered.replace_range(
            good.find('.').unwrap() + 2..good.find('.').unwrap() + 3,
            "A",
        );
        assert!(verify(&tampered, &keys, &at(120)).is_err());
        let none = format!("{}.{}.", b64(r#"{"alg":"none","kid":"k"}"#), b64(claims));
        assert_eq!(
            verify(&none, &keys, &at(120)).unwrap_err().code(),
            "algorithm_not_allowed"
        );
        let other_kid = token(&secret, r#"{"alg":"ES256","kid":"x"}"#, claims);
        assert_eq!(
            verify(&other_kid, &keys, &at(120)).unwrap_err().code(),
            "unknown_key"
        );
        let huge = token(
            &secret,
            header,
            r#"{"iss":"i","aud":"a","iat":100,"exp":18446744073709551615}"#,
        );
        assert_eq!(
            verify(&huge, &keys, &at(120)).unwrap_err(),
            VerifyError::LifetimeTooLong
        );
        let crit = token(
            &secret,
            r#"{"alg":"ES256","kid":"k","crit":["exp"]}"#,
            claims,
        );
        assert_eq!(
            verify(&crit, &keys, &at(120)).unwrap_err().code(),
            "malformed_token"
        );
        let long = token(
            &secret,
            header,
            r#"{"iss":"i","aud":"a","iat":100,"exp":200}"#,
        );
        assert_eq!(
            verify(&long, &keys, &at(120)).unwrap_err(),
            VerifyError::LifetimeTooLong
        );
    }

    #[test]
    fn the_profile_decides_typ_and_more() {
        let (secret, keys) = setup();
        let at = |profile| Expected {
            now: 120,
            leeway: 5,
            profile: Some(profile),
            ..Expected::default()
        };
        let claims = r#"{"iss":"i","aud":"a","iat":100,"exp":160,"sub":"u","client_id":"c"}"#;
        let jwt = token(&secret, r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#, claims);
        let access = token(
            &secret,
            r#"{"alg":"ES256","typ":"at+jwt","kid":"k"}"#,
            claims,
        );
        let untyped = token(&secret, r#"{"alg":"ES256","kid":"k"}"#, claims);
        let long_form = token(
            &secret,
            r#"{"alg":"ES256","typ":"application/AT+JWT","kid":"k"}"#,
            claims,
        );
        verify(&jwt, &keys, &at(Profile::Jwt)).unwrap();
        verify(&access, &keys, &at(Profile::AccessToken)).unwrap();
        verify(&long_form, &keys, &at(Profile::AccessToken)).unwrap();
        for (token, profile) in [
            (&jwt, Profile::AccessToken),
            (&access, Profile::Jwt),
            (&untyped, Profile::Jwt),
            (&untyped, Profile::AccessToken),
            (&access, Profile::Custom("secevent+jwt")),
        ] {
            assert_eq!(
                verify(token, &keys, &at(profile)).unwrap_err().code(),
                "wrong_token_type",
                "{profile:?}"
            );
        }
        // Without a profile (the CLI), typ is not checked.
        verify(
            &untyped,
            &keys,
            &Expected {
                now: 120,
                ..Expected::default()
            },
        )
        .unwrap();
        let no_client = token(
            &secret,
            r#"{"alg":"ES256","typ":"at+jwt","kid":"k"}"#,
            r#"{"iss":"i","aud":"a","iat":100,"exp":160,"sub":"u"}"#,
        );
        assert_eq!(
            verify(&no_client, &keys, &at(Profile::AccessToken)).unwrap_err(),
            VerifyError::MissingClaim("client_id")
        );

        let svid = Profile::JwtSvid {
            trust_domain: "example.org",
        };
        let svid_claims = r#"{"aud":"a","iat":100,"exp":160,"sub":"spiffe://example.org/web"}"#;
        let good = token(
            &secret,
            r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#,
            svid_claims,
        );
        verify(&good, &keys, &at(svid)).unwrap();
        let extra = token(
            &secret,
            r#"{"alg":"ES256","typ":"JWT","kid":"k","cty":"x"}"#,
            svid_claims,
        );
        assert_eq!(
            verify(&extra, &keys, &at(svid)).unwrap_err().code(),
            "malformed_token"
        );
        let elsewhere = token(
            &secret,
            r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#,
            r#"{"aud":"a","iat":100,"exp":160,"sub":"spiffe://other.org/web"}"#,
        );
        assert_eq!(
            verify(&elsewhere, &keys, &at(svid)).unwrap_err(),
            VerifyError::WrongSubject
        );
    }

    #[test]
    fn a_jwt_svid_is_es256_only_at_verification_too() {
        use ed25519_dalek::Signer as _;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let keys = JwkSet {
            keys: vec![Jwk::from_public_key(
                Algorithm::EdDsa,
                "ed",
                secret.verifying_key().as_bytes(),
            )],
        };
        let claims = r#"{"aud":"a","iat":100,"exp":160,"sub":"spiffe://example.org/web"}"#;
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#),
            b64(claims)
        );
        let signed = jws::compact(&input, &secret.sign(input.as_bytes()).to_bytes());
        let at = |profile| Expected {
            now: 120,
            leeway: 5,
            profile: Some(profile),
            ..Expected::default()
        };
        // Well signed by a published key, and a plain JWT issuer takes it...
        verify(&signed, &keys, &at(Profile::Jwt)).unwrap();
        // ...but a JWT-SVID issuer does not: JWT-SVIDs are ES256 only.
        let svid = Profile::JwtSvid {
            trust_domain: "example.org",
        };
        assert_eq!(
            verify(&signed, &keys, &at(svid)).unwrap_err(),
            VerifyError::AlgorithmNotAllowed("EdDSA".into())
        );
    }

    #[test]
    fn a_key_is_used_only_as_the_algorithm_it_is_whatever_the_lookup_returns() {
        use ed25519_dalek::Signer as _;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let ed = VerifyingKey::new(Algorithm::EdDsa, secret.verifying_key().as_bytes()).unwrap();
        let input = format!(
            "{}.{}",
            b64(r#"{"alg":"EdDSA","typ":"JWT","kid":"ed"}"#),
            b64(r#"{"aud":"a","iat":100,"exp":160}"#)
        );
        let signed = jws::compact(&input, &secret.sign(input.as_bytes()).to_bytes());
        let at = Expected {
            now: 120,
            leeway: 5,
            ..Expected::default()
        };
        let mut asked = None;
        verify_with(&signed, &at, |kid, algorithm| {
            asked = Some((kid.to_string(), algorithm));
            Ok(ed)
        })
        .unwrap();
        assert_eq!(asked, Some(("ed".to_string(), Algorithm::EdDsa)));
        // The same token, relabelled ES256, finds an ES256 key under its kid: refused as
        // unknown before any signature work, not checked with the wrong algorithm.
        let relabelled = format!(
            "{}.{}",
            b64(r#"{"alg":"ES256","typ":"JWT","kid":"ed"}"#),
            signed.split_once('.').unwrap().1
        );
        let p256 = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = p256.verifying_key().to_encoded_point(false);
        let es = VerifyingKey::new(Algorithm::Es256, point.as_bytes()).unwrap();
        assert_eq!(
            verify_with(&relabelled, &at, |_, _| Ok(ed)).unwrap_err(),
            VerifyError::UnknownKey("ed".into())
        );
        assert_eq!(
            verify_with(&relabelled, &at, |_, _| Ok(es)).unwrap_err(),
            VerifyError::BadSignature
        );
        // What the lookup refuses with is what the caller gets.
        assert_eq!(
            verify_with(&signed, &at, |kid, _| Err(VerifyError::UnknownKey(
                kid.into()
            )))
            .unwrap_err(),
            VerifyError::UnknownKey("ed".into())
        );
    }
}
