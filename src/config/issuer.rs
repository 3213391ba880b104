//! `[issuers.NAME]`: one token issuer's policy, and its validation.

use serde::Deserialize;

use super::profile::ProfileConfig;
use super::{ConfigError, Rate, field_error};
use crate::algorithm::{Algorithm, EdDsaName};
use crate::identity::CallerSelector;
use crate::token::profile::Profile;
use crate::token::{HARD_MAX_TTL_SECONDS, RESERVED_CLAIMS, spiffe};

/// `[issuers.NAME]`: one token issuer's policy.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim of every token this issuer mints.
    pub iss: String,
    /// `ES256` (default) or `EdDSA`.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// The `alg` an Ed25519 key of this issuer goes by in token headers and the JWKS:
    /// `"EdDSA"` (default, RFC 8037) or `"Ed25519"` (RFC 9864). The verifier accepts both.
    #[serde(default)]
    pub eddsa_alg: EdDsaName,
    /// Longest token lifetime a caller may ask for (default 60, hard cap 3600).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// Audiences a caller may put in `aud`; at least one.
    pub audiences: Vec<String>,
    /// Custom claims every mint request must carry (e.g. `nonce`).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Custom claims no mint request may carry.
    #[serde(default)]
    pub forbidden_claims: Vec<String>,
    /// Largest serialized size of the custom claims, in bytes (default 4096).
    #[serde(default = "default_max_claims_bytes")]
    pub max_claims_bytes: usize,
    /// Who may use this issuer ([`CallerSelector`]s such as `"uid:1000"`).
    #[serde(default)]
    pub callers: Vec<CallerSelector>,
    /// The form before `callers`: folded into it when the config is loaded.
    #[serde(default, rename = "allowed_uids")]
    pub(super) legacy_uids: Vec<u32>,
    /// The form before `callers`: folded into it when the config is loaded.
    #[serde(default, rename = "allowed_gids")]
    pub(super) legacy_gids: Vec<u32>,
    /// Makes this a raw-signing issuer (default false): its callers may use
    /// `POST /v1/sign`, it never mints JWTs, and its keys are kept out of the JWKS.
    /// Raw signatures and JWTs never share a key: a raw signature over a JWT the caller
    /// wrote would otherwise verify as a token of any issuer in the JWKS.
    #[serde(default)]
    pub raw_sign: bool,
    /// Rotate automatically when the active key is this old, in seconds (default: never).
    #[serde(default)]
    pub rotation_period_seconds: Option<u64>,
    /// Overrides `[limits] rate_per_principal` for this issuer.
    #[serde(default)]
    pub rate_per_principal: Option<Rate>,
    /// Overrides `[limits] rate_per_issuer` for this issuer.
    #[serde(default)]
    pub rate_per_issuer: Option<Rate>,
    /// The JWT profile this issuer mints (docs/profiles.md): `"jwt"` (default),
    /// `"at+jwt"`, `"jwt-svid"`, or `{ typ = "MEDIA-TYPE" }`.
    #[serde(default)]
    pub profile: ProfileConfig,
    /// The SPIFFE trust domain of a `jwt-svid` issuer (e.g. `"example.org"`): every `sub`
    /// is a SPIFFE ID in it. Required for that profile, refused for any other.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// `spiffe_refresh_hint` of a `jwt-svid` issuer's SPIFFE bundle, in seconds (default
    /// `jwks.max_age_seconds`; at most `lifecycle.prepublish_seconds`, so a consumer that
    /// follows the hint has a new key before it signs).
    #[serde(default)]
    pub spiffe_refresh_hint_seconds: Option<u64>,
}

fn default_algorithm() -> Algorithm {
    Algorithm::Es256
}
fn default_max_ttl() -> u64 {
    60
}
fn default_max_claims_bytes() -> usize {
    4096
}

impl IssuerConfig {
    /// What this issuer's keys sign: raw bytes for a raw-signing issuer, else JWTs.
    pub fn key_purpose(&self) -> crate::algorithm::KeyPurpose {
        if self.raw_sign {
            crate::algorithm::KeyPurpose::Raw
        } else {
            crate::algorithm::KeyPurpose::Jwt
        }
    }

    /// The `alg` this issuer writes for a key of `algorithm`.
    pub fn jws_alg(&self, algorithm: Algorithm) -> &'static str {
        algorithm.jws_name_with(self.eddsa_alg)
    }

    /// The profile this issuer mints, with what it needs from the rest of the table.
    pub fn profile(&self) -> Profile<'_> {
        match &self.profile {
            ProfileConfig::Jwt => Profile::Jwt,
            ProfileConfig::AccessToken => Profile::AccessToken,
            ProfileConfig::JwtSvid => Profile::JwtSvid {
                // Validation requires it; an empty one matches no SPIFFE ID.
                trust_domain: self.trust_domain.as_deref().unwrap_or_default(),
            },
            ProfileConfig::Custom(typ) => Profile::Custom(typ),
        }
    }

    /// The `profile`, `trust_domain` and `spiffe_refresh_hint_seconds` fields together.
    fn validate_profile(&self, field: impl Fn(&str) -> String) -> Result<(), ConfigError> {
        self.profile
            .check()
            .map_err(|why| field_error(field("profile"), why))?;
        let svid = self.profile == ProfileConfig::JwtSvid;
        if self.raw_sign && self.profile != ProfileConfig::Jwt {
            return Err(field_error(
                field("profile"),
                "a raw-signing issuer (raw_sign = true) mints no JWTs: remove profile",
            ));
        }
        if svid && self.algorithm != Algorithm::Es256 {
            return Err(field_error(
                field("algorithm"),
                format!(
                    "the jwt-svid profile signs with ES256 only, not {}",
                    self.algorithm
                ),
            ));
        }
        match (&self.trust_domain, svid) {
            (None, true) => {
                return Err(field_error(
                    field("trust_domain"),
                    "the jwt-svid profile needs the SPIFFE trust domain of its subjects, e.g. trust_domain = \"example.org\"",
                ));
            }
            (Some(domain), true) => spiffe::check_trust_domain(domain)
                .map_err(|why| field_error(field("trust_domain"), why))?,
            (Some(_), false) => {
                return Err(field_error(
                    field("trust_domain"),
                    "only a jwt-svid issuer has a trust domain (profile = \"jwt-svid\")",
                ));
            }
            (None, false) => {}
        }
        if self.spiffe_refresh_hint_seconds.is_some() && !svid {
            return Err(field_error(
                field("spiffe_refresh_hint_seconds"),
                "only a jwt-svid issuer serves a SPIFFE bundle (profile = \"jwt-svid\")",
            ));
        }
        if let Some(claim) = self
            .profile()
            .required_claims()
            .iter()
            .find(|c| self.forbidden_claims.iter().any(|f| f == *c))
        {
            return Err(field_error(
                field("forbidden_claims"),
                format!(
                    "{claim:?} is required by the {} profile",
                    self.profile().name()
                ),
            ));
        }
        if self.spiffe_refresh_hint_seconds == Some(0) {
            return Err(field_error(
                field("spiffe_refresh_hint_seconds"),
                "must be at least 1",
            ));
        }
        Ok(())
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("issuers.{name}.{f}");
        if !is_issuer_name(name) {
            return Err(field_error(
                format!("issuers.{name}"),
                "issuer names are 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit",
            ));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(field_error(
                format!("issuers.{name}"),
                format!(
                    "issuer names starting with {RESERVED_PREFIX:?} are reserved for signetd's own keys (signetd-audit signs the audit log's checkpoints)"
                ),
            ));
        }
        if self.iss.trim().is_empty() {
            return Err(field_error(field("iss"), "must not be empty"));
        }
        if !(1..=HARD_MAX_TTL_SECONDS).contains(&self.max_ttl_seconds) {
            return Err(field_error(
                field("max_ttl_seconds"),
                format!(
                    "{} is outside 1..={HARD_MAX_TTL_SECONDS} (the hard cap)",
                    self.max_ttl_seconds
                ),
            ));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(field_error(
                field("audiences"),
                "list at least one non-empty audience",
            ));
        }
        for (list, what) in [
            (&self.required_claims, "required_claims"),
            (&self.forbidden_claims, "forbidden_claims"),
        ] {
            if let Some(claim) = list.iter().find(|c| RESERVED_CLAIMS.contains(&c.as_str())) {
                return Err(field_error(
                    field(what),
                    format!("{claim:?} is a registered claim the daemon or request fields own"),
                ));
            }
        }
        if let Some(claim) = self
            .required_claims
            .iter()
            .find(|c| self.forbidden_claims.contains(c))
        {
            return Err(field_error(
                field("forbidden_claims"),
                format!("{claim:?} is also required"),
            ));
        }
        if !(64..=65_536).contains(&self.max_claims_bytes) {
            return Err(field_error(
                field("max_claims_bytes"),
                "must be between 64 and 65536",
            ));
        }
        if self.callers.is_empty() {
            return Err(field_error(
                field("callers"),
                "no caller is allowed: list who may use this issuer, e.g. callers = [\"uid:1000\", \"gid:50\"]",
            ));
        }
        self.validate_profile(field)
    }
}

/// Issuer names with this prefix belong to signetd itself, such as
/// [`crate::audit::AUDIT_ISSUER`]; no configured issuer may use one.
pub const RESERVED_PREFIX: &str = "signetd-";

/// Issuer names appear in key labels and URLs, so they are kept plain.
pub fn is_issuer_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}
