//! `profile` in `[issuers.NAME]`: which JWT profile the issuer mints (docs/profiles.md).
//!
//! A string names a standard profile: `"jwt"` (the default), `"at+jwt"` or `"jwt-svid"`.
//! An inline table `{ typ = "..." }` is a plain JWT profile with a `typ` of the
//! operator's choosing. One key, two shapes, so a custom `typ` can never be combined with
//! a standard profile's name.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::token::profile::{check_media_type, same_media_type};

/// An issuer's `profile`, as written in the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProfileConfig {
    /// `"jwt"`: `typ: JWT`, the issuer's own claim rules only.
    #[default]
    Jwt,
    /// `"at+jwt"`: RFC 9068 access tokens.
    AccessToken,
    /// `"jwt-svid"`: SPIFFE JWT-SVIDs; needs `trust_domain`.
    JwtSvid,
    /// `{ typ = "..." }`: a plain JWT with this `typ`.
    Custom(String),
}

impl ProfileConfig {
    /// Checks a custom `typ`: a media type, and not one a standard profile (or JOSE
    /// itself) already means, so a custom profile never passes for a standard one.
    pub(super) fn check(&self) -> Result<(), String> {
        let ProfileConfig::Custom(typ) = self else {
            return Ok(());
        };
        check_media_type(typ)?;
        let taken = [
            ("JWT", "profile = \"jwt\""),
            (
                "at+jwt",
                "profile = \"at+jwt\", which also checks sub and client_id",
            ),
            ("JOSE", "nothing: it names a JWS, not a JWT"),
            ("JOSE+JSON", "nothing: it names a JWS, not a JWT"),
        ];
        match taken.iter().find(|(t, _)| same_media_type(typ, t)) {
            Some((t, instead)) => Err(format!("typ {typ:?} means {t:?}: use {instead}")),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for ProfileConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ProfileVisitor)
    }
}

struct ProfileVisitor;

impl<'de> Visitor<'de> for ProfileVisitor {
    type Value = ProfileConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#""jwt", "at+jwt", "jwt-svid", or a table { typ = "MEDIA-TYPE" }"#)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ProfileConfig, E> {
        match name {
            "jwt" => Ok(ProfileConfig::Jwt),
            "at+jwt" => Ok(ProfileConfig::AccessToken),
            "jwt-svid" => Ok(ProfileConfig::JwtSvid),
            other => Err(E::custom(format!(
                "unknown profile {other:?}: expected \"jwt\", \"at+jwt\", \"jwt-svid\", \
                 or {{ typ = \"MEDIA-TYPE\" }} for a custom typ"
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ProfileConfig, A::Error> {
        let mut typ: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "typ" {
                return Err(de::Error::unknown_field(&key, &["typ"]));
            }
            if typ.is_some() {
                return Err(de::Error::duplicate_field("typ"));
            }
            typ = Some(map.next_value()?);
        }
        typ.map(ProfileConfig::Custom)
            .ok_or_else(|| de::Error::missing_field("typ"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        profile: ProfileConfig,
    }

    fn parse(text: &str) -> Result<ProfileConfig, String> {
        toml::from_str::<Holder>(text)
            .map(|h| h.profile)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn both_shapes_parse() {
        assert_eq!(parse(r#"profile = "jwt""#), Ok(ProfileConfig::Jwt));
        assert_eq!(
            parse(r#"profile = "at+jwt""#),
            Ok(ProfileConfig::AccessToken)
        );
        assert_eq!(parse(r#"profile = "jwt-svid""#), Ok(ProfileConfig::JwtSvid));
        assert_eq!(
            parse(r#"profile = { typ = "secevent+jwt" }"#),
            Ok(ProfileConfig::Custom("secevent+jwt".into()))
        );
        let unknown = parse(r#"profile = "oidc""#).unwrap_err();
        assert!(unknown.contains("unknown profile \"oidc\""), "{unknown}");
        assert!(parse(r#"profile = { type = "x+jwt" }"#).is_err());
        assert!(parse(r#"profile = {}"#).is_err());
        assert!(parse(r#"profile = 3"#).is_err());
    }

    #[test]
    fn custom_typs_are_media_types_of_their_own() {
        assert!(ProfileConfig::Custom("secevent+jwt".into()).check().is_ok());
        assert!(
            ProfileConfig::Custom("application/vnd.x+jwt".into())
                .check()
                .is_ok()
        );
        for taken in [
            "JWT",
            "jwt",
            "application/jwt",
            "AT+JWT",
            "jose",
            "JOSE+JSON",
        ] {
            assert!(
                ProfileConfig::Custom(taken.into()).check().is_err(),
                "{taken}"
            );
        }
        assert!(ProfileConfig::Custom("x+jwt; a=b".into()).check().is_err());
    }

    const BASE: &str = r#"
[pkcs11]
module = "/m.so"
token_label = "t"
pin_env = "P"
[issuers.demo]
iss = "https://issuer.example"
audiences = ["api"]
callers = ["uid:1"]
"#;

    fn with(lines: &str) -> Result<crate::config::Config, String> {
        crate::config::Config::parse(&format!("{BASE}{lines}\n")).map_err(|e| e.to_string())
    }

    #[test]
    fn profiles_are_checked_at_load() {
        use crate::token::profile::Profile;
        let c = with("").unwrap();
        assert_eq!(c.issuer("demo").unwrap().profile(), Profile::Jwt);
        let c = with("profile = \"at+jwt\"").unwrap();
        assert_eq!(c.issuer("demo").unwrap().profile(), Profile::AccessToken);
        let c = with("profile = \"jwt-svid\"\ntrust_domain = \"example.org\"").unwrap();
        assert_eq!(
            c.issuer("demo").unwrap().profile(),
            Profile::JwtSvid {
                trust_domain: "example.org"
            }
        );
        let c = with("profile = { typ = \"secevent+jwt\" }").unwrap();
        assert_eq!(c.issuer("demo").unwrap().profile().typ(), "secevent+jwt");

        for (lines, field, says) in [
            (
                "profile = \"jwt-svid\"",
                "issuers.demo.trust_domain",
                "needs the SPIFFE trust domain",
            ),
            (
                "profile = \"jwt-svid\"\ntrust_domain = \"example.org\"\nalgorithm = \"EdDSA\"",
                "issuers.demo.algorithm",
                "ES256 only",
            ),
            (
                "profile = \"jwt-svid\"\ntrust_domain = \"Example.org:443\"",
                "issuers.demo.trust_domain",
                "lower-case",
            ),
            (
                "trust_domain = \"example.org\"",
                "issuers.demo.trust_domain",
                "only a jwt-svid issuer",
            ),
            (
                "spiffe_refresh_hint_seconds = 10",
                "issuers.demo.spiffe_refresh_hint_seconds",
                "only a jwt-svid",
            ),
            (
                "profile = \"jwt-svid\"\ntrust_domain = \"example.org\"\nspiffe_refresh_hint_seconds = 31",
                "issuers.demo.spiffe_refresh_hint_seconds",
                "prepublish_seconds (30)",
            ),
            (
                "profile = \"at+jwt\"\nraw_sign = true",
                "issuers.demo.profile",
                "raw-signing",
            ),
            (
                "profile = \"at+jwt\"\nforbidden_claims = [\"client_id\"]",
                "issuers.demo.forbidden_claims",
                "required by the at+jwt profile",
            ),
            (
                "profile = { typ = \"JWT\" }",
                "issuers.demo.profile",
                "use profile = \"jwt\"",
            ),
            (
                "profile = { typ = \"a b\" }",
                "issuers.demo.profile",
                "not a media type",
            ),
        ] {
            let e = with(lines).unwrap_err();
            assert!(e.contains(field) && e.contains(says), "{lines}: {e}");
        }
        assert!(
            with("profile = \"jwt-svid\"\ntrust_domain = \"example.org\"\nspiffe_refresh_hint_seconds = 30")
                .is_ok()
        );
    }
}
