//! JWT profiles: the `typ` an issuer's tokens carry, and what each profile asks of a
//! token beyond the issuer's own claim rules (docs/profiles.md).
//!
//! Explicit typing (RFC 8725 §3.11) is what keeps a token of one kind from being taken
//! for another: an access token (RFC 9068, `at+jwt`) is not an identity assertion, and a
//! verifier that checks `typ` tells them apart. This module only describes; the claims
//! policy ([`super::claims`]) enforces it at mint and the verifier ([`super::verify`]) at
//! verification, each with its own errors.

use crate::algorithm::Algorithm;

use super::spiffe;

/// An issuer's profile, borrowed from its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile<'a> {
    /// Plain JWTs (`typ: JWT`): signetd's behaviour before profiles existed.
    Jwt,
    /// OAuth 2.0 access tokens (RFC 9068): `typ: at+jwt`, with `sub` and `client_id`.
    AccessToken,
    /// SPIFFE JWT-SVIDs: ES256, `sub` a workload's SPIFFE ID in `trust_domain`, `aud`
    /// required, no header beyond `alg`, `kid` and `typ` (which is `JWT`).
    JwtSvid {
        /// The trust domain every `sub` must be in.
        trust_domain: &'a str,
    },
    /// Plain JWTs with an operator-chosen `typ`, a media type checked at load.
    Custom(&'a str),
}

/// Why a `sub` is not acceptable to a JWT-SVID issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectRefusal {
    /// Not a workload's SPIFFE ID; the text says why.
    NotSpiffeId(String),
    /// A SPIFFE ID of another trust domain (named here).
    OtherTrustDomain(String),
}

/// The headers a JWT-SVID may have; a validator must reject any other (JWT-SVID §2).
pub const JWT_SVID_HEADERS: &[&str] = &["alg", "kid", "typ"];

impl<'a> Profile<'a> {
    /// The profile's name as the config writes it (`custom` for a custom `typ`).
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Jwt => "jwt",
            Profile::AccessToken => "at+jwt",
            Profile::JwtSvid { .. } => "jwt-svid",
            Profile::Custom(_) => "custom",
        }
    }

    /// The `typ` header of this profile's tokens.
    pub fn typ(&self) -> &'a str {
        match self {
            // RFC 7519 §5.1 recommends the upper-case spelling, and JWT-SVID allows
            // only "JWT" or "JOSE".
            Profile::Jwt | Profile::JwtSvid { .. } => "JWT",
            Profile::AccessToken => "at+jwt",
            Profile::Custom(typ) => typ,
        }
    }

    /// Whether a token's `typ` is this profile's: media types compared without regard to
    /// case, `application/` implied where the value has no `/` (RFC 7515 §4.1.9). A token
    /// without `typ` is not.
    pub fn accepts_typ(&self, typ: Option<&str>) -> bool {
        typ.is_some_and(|typ| same_media_type(typ, self.typ()))
    }

    /// Whether tokens of this profile may be signed with `algorithm`.
    pub fn allows(&self, algorithm: Algorithm) -> bool {
        match self {
            Profile::JwtSvid { .. } => algorithm == Algorithm::Es256,
            _ => true,
        }
    }

    /// Whether every token of this profile has a `sub`.
    pub fn requires_sub(&self) -> bool {
        matches!(self, Profile::AccessToken | Profile::JwtSvid { .. })
    }

    /// Custom claims every token of this profile carries, as non-empty strings.
    pub fn required_claims(&self) -> &'static [&'static str] {
        match self {
            Profile::AccessToken => &["client_id"],
            _ => &[],
        }
    }

    /// The only header fields a token of this profile may have, if the profile limits them.
    pub fn only_headers(&self) -> Option<&'static [&'static str]> {
        match self {
            Profile::JwtSvid { .. } => Some(JWT_SVID_HEADERS),
            _ => None,
        }
    }

    /// Checks a `sub` against what the profile allows (only JWT-SVIDs restrict it).
    pub fn check_subject(&self, sub: &str) -> Result<(), SubjectRefusal> {
        let Profile::JwtSvid { trust_domain } = self else {
            return Ok(());
        };
        let id = spiffe::parse_workload(sub).map_err(SubjectRefusal::NotSpiffeId)?;
        if id.trust_domain != *trust_domain {
            return Err(SubjectRefusal::OtherTrustDomain(
                id.trust_domain.to_string(),
            ));
        }
        Ok(())
    }
}

/// Whether two `typ` values name the same media type (RFC 7515 §4.1.9, RFC 6838 §4.2:
/// case-insensitive, `application/` implied when there is no `/`).
pub fn same_media_type(a: &str, b: &str) -> bool {
    fn full(typ: &str) -> (&str, &str) {
        typ.split_once('/').unwrap_or(("application", typ))
    }
    let ((a_type, a_sub), (b_type, b_sub)) = (full(a), full(b));
    a_type.eq_ignore_ascii_case(b_type) && a_sub.eq_ignore_ascii_case(b_sub)
}

/// Checks a custom `typ`: a media type `type/subtype`, or a bare subtype that stands for
/// `application/subtype`, each name as RFC 6838 §4.2 restricts it, without parameters.
pub fn check_media_type(typ: &str) -> Result<(), String> {
    let names: Vec<&str> = typ.split('/').collect();
    if names.len() > 2 {
        return Err(format!(
            "{typ:?} has more than one '/': write \"subtype\" or \"type/subtype\""
        ));
    }
    for name in names {
        check_restricted_name(name).map_err(|why| format!("{typ:?} is not a media type: {why}"))?;
    }
    Ok(())
}

/// RFC 6838 §4.2 `restricted-name`: 1 to 127 characters, a letter or digit first, then
/// letters, digits and `! # $ & - ^ _ . +`.
fn check_restricted_name(name: &str) -> Result<(), String> {
    let first = name
        .chars()
        .next()
        .ok_or_else(|| "a type or subtype name is empty".to_string())?;
    if name.len() > 127 {
        return Err("a type or subtype name is longer than 127 characters".to_string());
    }
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "a name starts with {first:?}, not a letter or digit"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(*c)))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits and ! # $ & - ^ _ . + only; no parameters)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_comparison_follows_rfc_7515() {
        assert!(Profile::Jwt.accepts_typ(Some("JWT")));
        assert!(Profile::Jwt.accepts_typ(Some("jwt")));
        assert!(Profile::Jwt.accepts_typ(Some("application/JWT")));
        assert!(!Profile::Jwt.accepts_typ(Some("at+jwt")));
        assert!(!Profile::Jwt.accepts_typ(Some("text/jwt")));
        assert!(!Profile::Jwt.accepts_typ(None));
        assert!(Profile::AccessToken.accepts_typ(Some("application/at+JWT")));
        assert!(!Profile::AccessToken.accepts_typ(Some("JWT")));
        assert!(!Profile::AccessToken.accepts_typ(None));
        let custom = Profile::Custom("secevent+jwt");
        assert!(custom.accepts_typ(Some("application/SecEvent+JWT")));
        assert!(!custom.accepts_typ(Some("JWT")));
        let svid = Profile::JwtSvid {
            trust_domain: "example.org",
        };
        assert_eq!(svid.typ(), "JWT");
        assert!(svid.accepts_typ(Some("JWT")));
        assert!(!svid.accepts_typ(Some("at+jwt")));
    }

    #[test]
    fn media_types() {
        for good in [
            "foo+jwt",
            "application/foo+jwt",
            "vnd.example.token+jwt",
            "a/b",
        ] {
            assert!(check_media_type(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/jwt",
            "application/",
            "a/b/c",
            "foo jwt",
            "foo+jwt; charset=utf-8",
            "+jwt",
            "fo\"o",
            &"a".repeat(128),
        ] {
            assert!(check_media_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jwt_svid_rules() {
        let svid = Profile::JwtSvid {
            trust_domain: "example.org",
        };
        assert!(svid.allows(Algorithm::Es256));
        assert!(!svid.allows(Algorithm::EdDsa));
        assert!(Profile::Jwt.allows(Algorithm::EdDsa));
        assert!(svid.requires_sub() && Profile::AccessToken.requires_sub());
        assert!(!Profile::Jwt.requires_sub());
        assert_eq!(svid.check_subject("spiffe://example.org/web"), Ok(()));
        assert_eq!(
            svid.check_subject("spiffe://other.org/web"),
            Err(SubjectRefusal::OtherTrustDomain("other.org".into()))
        );
        assert!(matches!(
            svid.check_subject("web"),
            Err(SubjectRefusal::NotSpiffeId(_))
        ));
        assert!(matches!(
            svid.check_subject("spiffe://example.org"),
            Err(SubjectRefusal::NotSpiffeId(_))
        ));
        assert_eq!(Profile::Jwt.check_subject("anything"), Ok(()));
        assert_eq!(svid.only_headers(), Some(JWT_SVID_HEADERS));
        assert_eq!(Profile::AccessToken.required_claims(), &["client_id"]);
    }
}
