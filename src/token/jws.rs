//! The JWS compact serialization (RFC 7515 §7.1).

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;
pub use crate::util::{b64, unb64};

/// The protected header signetd writes. The daemon alone chooses every field.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Header {
    /// `ES256` or `EdDSA`.
    pub alg: String,
    /// The issuer's profile's `typ` for minted tokens (`JWT` unless configured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The key id, as published in the JWKS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

impl Header {
    /// The header of a plain JWT (`typ: JWT`) signed by `kid`.
    pub fn jwt(algorithm: Algorithm, kid: &str) -> Self {
        Self::typed(algorithm.jws_name(), "JWT", kid)
    }

    /// The header of a token of type `typ` signed by `kid` with `alg`.
    pub fn typed(alg: &str, typ: &str, kid: &str) -> Self {
        Header {
            alg: alg.to_string(),
            typ: Some(typ.to_string()),
            kid: Some(kid.to_string()),
        }
    }
}

/// `BASE64URL(header) "." BASE64URL(payload)`: the bytes the key signs.
pub fn signing_input(header: &Header, payload: &[u8]) -> String {
    let header = serde_json::to_vec(header).expect("a header always serializes");
    format!("{}.{}", b64(header), b64(payload))
}

/// Appends the signature to a signing input.
pub fn compact(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", b64(signature))
}
