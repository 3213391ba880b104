//! Public keys as JWKs (RFC 7517, RFC 7518 §6.2, RFC 8037) and their verification.

use serde::{Deserialize, Serialize};

use super::verifying::VerifyingKey;
use crate::algorithm::Algorithm;
use crate::util::{b64, unb64};

/// A public JWK as signetd publishes it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    /// `EC` for P-256, `OKP` for Ed25519.
    pub kty: String,
    /// `P-256` or `Ed25519`.
    pub crv: String,
    /// The x coordinate (EC) or the public key (OKP), base64url.
    pub x: String,
    /// The y coordinate (EC only), base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key id, also the JWS header `kid`.
    pub kid: String,
    /// `ES256` or `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// The attestation chain: the key's certificate, then the CA chain (standard base64 DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// base64url SHA-256 of the key's certificate.
    #[serde(default, rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

/// A JWK Set: `{"keys":[...]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// The JWK of a public key as the token returns it: a SEC1 uncompressed point for
    /// ES256, 32 raw bytes for EdDSA.
    pub fn from_public_key(algorithm: Algorithm, kid: &str, public_key: &[u8]) -> Self {
        let (kty, crv, x, y) = match algorithm {
            Algorithm::Es256 => (
                "EC",
                "P-256",
                b64(&public_key[1..33]),
                Some(b64(&public_key[33..65])),
            ),
            Algorithm::EdDsa => ("OKP", "Ed25519", b64(public_key), None),
        };
        Jwk {
            kty: kty.to_string(),
            crv: crv.to_string(),
            x,
            y,
            kid: kid.to_string(),
            alg: algorithm.jws_name().to_string(),
            use_: "sig".to_string(),
            x5c: None,
            x5t_s256: None,
        }
    }

    /// Attaches the attestation chain (key certificate first, DER).
    pub fn with_chain(mut self, chain: &[Vec<u8>]) -> Self {
        use base64::Engine;
        let standard = base64::engine::general_purpose::STANDARD;
        self.x5c = Some(chain.iter().map(|der| standard.encode(der)).collect());
        self.x5t_s256 = chain
            .first()
            .map(|der| b64(crate::attest::profile::thumbprint(der)));
        self
    }

    /// The key this JWK describes, parsed.
    pub fn verifying_key(&self) -> Result<VerifyingKey, String> {
        let (algorithm, public_key) = match (self.kty.as_str(), self.crv.as_str()) {
            ("EC", "P-256") => {
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&self.coordinate(&self.x, 32)?);
                point.extend_from_slice(&self.coordinate(self.y.as_deref().unwrap_or(""), 32)?);
                (Algorithm::Es256, point)
            }
            ("OKP", "Ed25519") => (Algorithm::EdDsa, self.coordinate(&self.x, 32)?),
            (kty, crv) => return Err(format!("unsupported key type {kty}/{crv}")),
        };
        VerifyingKey::new(algorithm, &public_key)
            .map_err(|e| format!("JWK {} is not a valid key: {e}", self.kid))
    }

    /// Verifies a JWS signature (raw `r‖s` for ES256) over `message` with this key, as
    /// [`VerifyingKey::verify`] does.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        self.verifying_key()?.verify(message, signature)
    }

    fn coordinate(&self, text: &str, len: usize) -> Result<Vec<u8>, String> {
        unb64(text)
            .filter(|v| v.len() == len)
            .ok_or_else(|| format!("JWK {} has a malformed coordinate", self.kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_jwk_verifies_what_the_matching_key_signs() {
        use p256::ecdsa::signature::Signer;
        let secret = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = secret.verifying_key().to_encoded_point(false);
        let jwk = Jwk::from_public_key(Algorithm::Es256, "k1", point.as_bytes());
        assert_eq!(
            (jwk.kty.as_str(), jwk.crv.as_str(), jwk.use_.as_str()),
            ("EC", "P-256", "sig")
        );
        let signature: p256::ecdsa::Signature = secret.sign(b"hello");
        let signature = signature.normalize_s().unwrap_or(signature);
        jwk.verify(b"hello", &signature.to_bytes()).unwrap();
        // The same signature with s replaced by n − s: valid ECDSA, refused here.
        let high = p256::ecdsa::Signature::from_scalars(signature.r(), -*signature.s()).unwrap();
        assert!(jwk.verify(b"hello", &high.to_bytes()).is_err());
        assert!(jwk.verify(b"hellp", &signature.to_bytes()).is_err());
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["use"], "sig");
    }

    #[test]
    fn ed25519_jwk_verifies_what_the_matching_key_signs() {
        use ed25519_dalek::Signer;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let jwk = Jwk::from_public_key(Algorithm::EdDsa, "k2", secret.verifying_key().as_bytes());
        assert!(jwk.y.is_none());
        let signature = secret.sign(b"hello");
        jwk.verify(b"hello", &signature.to_bytes()).unwrap();
        assert!(jwk.verify(b"hello!", &signature.to_bytes()).is_err());
    }
}
