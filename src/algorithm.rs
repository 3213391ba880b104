//! The signature algorithms signetd signs with, and what a key signs ([`KeyPurpose`]).
//!
//! Deliberately closed: never `none`, never an HMAC. Adding one means adding its key
//! generation template, its PKCS#11 mechanism and its JWK form, so the compiler points at
//! every place that must learn about it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A JWS algorithm together with the key type it implies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256 (RFC 7518 §3.4). The default: every verifier accepts it.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037), for verifiers that support OKP keys.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl Algorithm {
    /// The `alg` value of a JWS header and a JWK.
    pub fn jws_name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// The `alg` value for this algorithm when Ed25519 keys are called `eddsa`.
    pub fn jws_name_with(self, eddsa: EdDsaName) -> &'static str {
        match (self, eddsa) {
            (Algorithm::EdDsa, EdDsaName::Ed25519) => "Ed25519",
            _ => self.jws_name(),
        }
    }

    /// The algorithm a JWS `alg` or JWK `alg` names, if signetd accepts it: `ES256`,
    /// and for Ed25519 both RFC 8037's `EdDSA` and RFC 9864's fully specified `Ed25519`.
    pub fn from_jws_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "EdDSA" | "Ed25519" => Some(Algorithm::EdDsa),
            _ => None,
        }
    }

    /// Length in bytes of a JWS signature (raw `r‖s` for ES256).
    pub fn signature_len(self) -> usize {
        64
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so tables can align it with `{:<6}`.
        f.pad(self.jws_name())
    }
}

/// Parses an algorithm as the command line and ceremony transcripts name it, in any
/// case: `ES256`, and for Ed25519 `EdDSA` or `Ed25519` (so `es256`, `eddsa` and
/// `ed25519` too). The config file is stricter: it takes the JWS names exactly, as
/// serde spells them (`ES256`, `EdDSA`).
impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "eddsa" | "ed25519" => Ok(Algorithm::EdDsa),
            _ => Err(format!(
                "unsupported algorithm {s:?}: expected ES256 or EdDSA (Ed25519), in any case"
            )),
        }
    }
}

/// Which name an issuer writes for its Ed25519 keys, in token headers and in the JWKS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdDsaName {
    /// `EdDSA` (RFC 8037): what most verifiers know today.
    #[default]
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// `Ed25519` (RFC 9864): names the curve as well as the scheme.
    #[serde(rename = "Ed25519")]
    Ed25519,
}

/// What a key signs, fixed when it is generated.
///
/// Recorded per key rather than read from the issuer's current config: a key that ever
/// signed caller-chosen bytes must never become trusted for JWTs, even if an operator
/// later flips the issuer's `raw_sign` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// Signs JWTs the daemon mints; published in the JWKS.
    #[default]
    Jwt,
    /// Signs caller-supplied bytes (`POST /v1/sign`); never in the JWKS.
    Raw,
}

#[cfg(test)]
mod tests {
    use super::Algorithm;

    #[test]
    fn the_command_line_takes_algorithm_names_in_any_case() {
        for name in ["ES256", "es256", "Es256"] {
            assert_eq!(name.parse::<Algorithm>(), Ok(Algorithm::Es256), "{name}");
        }
        for name in ["EdDSA", "eddsa", "EDDSA", "Ed25519", "ed25519"] {
            assert_eq!(name.parse::<Algorithm>(), Ok(Algorithm::EdDsa), "{name}");
        }
        // What a transcript writes (`detail` is lowercased) parses back.
        let written = format!("{}", Algorithm::Es256).to_lowercase();
        assert_eq!(written.parse::<Algorithm>(), Ok(Algorithm::Es256));
        for refused in ["HS256", "none", "", "es512"] {
            assert!(refused.parse::<Algorithm>().is_err(), "{refused}");
        }
    }

    #[test]
    fn the_config_takes_the_jws_names_exactly() {
        #[derive(serde::Deserialize)]
        struct Issuer {
            #[allow(dead_code)]
            algorithm: Algorithm,
        }
        assert!(toml::from_str::<Issuer>("algorithm = \"ES256\"").is_ok());
        let refused = toml::from_str::<Issuer>("algorithm = \"es256\"")
            .err()
            .expect("refused");
        assert!(refused.to_string().contains("ES256"), "{refused}");
    }
}
