//! A public key parsed once, ready to check signatures: what `/v1/verify` uses for every
//! token a key signed, rather than re-encoding the key as a JWK and parsing it back (an
//! Ed25519 key's point decompression included) per request. The [`super::registry`]
//! parses each key when it is built; [`super::Jwk::verify`] parses a JWK's on the spot.

use crate::algorithm::Algorithm;

/// A public key that checks JWS signatures, as signetd makes them.
#[derive(Clone, Copy, Debug)]
pub enum VerifyingKey {
    /// A P-256 point, SEC1 uncompressed (checked to be on the curve).
    Es256([u8; 65]),
    /// An Ed25519 key (its point checked to decompress).
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl VerifyingKey {
    /// Parses `public_key` as the token returns it: a SEC1 uncompressed point for ES256,
    /// 32 raw bytes for EdDSA.
    pub fn new(algorithm: Algorithm, public_key: &[u8]) -> Result<Self, String> {
        match algorithm {
            Algorithm::Es256 => {
                let point: [u8; 65] = public_key.try_into().map_err(|_| {
                    "a P-256 public key is a 65-byte uncompressed point".to_string()
                })?;
                p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| "the public key is not a P-256 point".to_string())?;
                Ok(VerifyingKey::Es256(point))
            }
            Algorithm::EdDsa => {
                let bytes: [u8; 32] = public_key
                    .try_into()
                    .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map(VerifyingKey::EdDsa)
                    .map_err(|_| "the public key is not an Ed25519 point".to_string())
            }
        }
    }

    /// The algorithm the key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            VerifyingKey::Es256(_) => Algorithm::Es256,
            VerifyingKey::EdDsa(_) => Algorithm::EdDsa,
        }
    }

    /// Verifies a JWS signature (raw `r‖s` for ES256) over `message`. ES256 signatures
    /// must be in low-S form (`s ≤ n/2`), as signetd makes them; Ed25519 ones are checked
    /// strictly (no small-order keys or non-canonical encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), String> {
        match self {
            VerifyingKey::Es256(point) => {
                let parsed = p256::ecdsa::Signature::from_slice(signature)
                    .map_err(|_| "signature is not a 64-byte r||s pair".to_string())?;
                // (r, n − s) verifies whenever (r, s) does; signetd signs with low S only,
                // so a high S is a copy someone made, not a token signetd issued.
                if parsed.normalize_s().is_some() {
                    return Err("signature is not in low-S form".to_string());
                }
                // ring checks r and s in [1, n−1] and the signature; it takes a fraction
                // of p256's time (docs/performance.md).
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_FIXED,
                    point,
                )
                .verify(message, signature)
                .map_err(|_| "signature does not verify".to_string())
            }
            VerifyingKey::EdDsa(key) => {
                let signature = ed25519_dalek::Signature::from_slice(signature)
                    .map_err(|_| "signature is not 64 bytes".to_string())?;
                key.verify_strict(message, &signature)
                    .map_err(|_| "signature does not verify".to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_not_points_are_refused_when_parsed() {
        assert!(VerifyingKey::new(Algorithm::Es256, &[4u8; 64]).is_err());
        let mut off_curve = [1u8; 65];
        off_curve[0] = 4;
        assert!(VerifyingKey::new(Algorithm::Es256, &off_curve).is_err());
        assert!(VerifyingKey::new(Algorithm::EdDsa, &[0u8; 31]).is_err());
        // y = 2 has no x on edwards25519: the encoding does not decompress.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(VerifyingKey::new(Algorithm::EdDsa, &not_a_point).is_err());
    }

    #[test]
    fn a_parsed_key_verifies_what_its_secret_signs_and_nothing_else() {
        use ed25519_dalek::Signer as _;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let key = VerifyingKey::new(Algorithm::EdDsa, secret.verifying_key().as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::EdDsa);
        let signature = secret.sign(b"hello").to_bytes();
        key.verify(b"hello", &signature).unwrap();
        assert!(key.verify(b"hello!", &signature).is_err());
        assert!(key.verify(b"hello", &signature[..63]).is_err());

        // (The same `signature::Signer` trait signs with p256's key.)
        let secret = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = secret.verifying_key().to_encoded_point(false);
        let key = VerifyingKey::new(Algorithm::Es256, point.as_bytes()).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Es256);
        let signature: p256::ecdsa::Signature = secret.sign(b"hello");
        let signature = signature.normalize_s().unwrap_or(signature);
        key.verify(b"hello", &signature.to_bytes()).unwrap();
        let high = p256::ecdsa::Signature::from_scalars(signature.r(), -*signature.s()).unwrap();
        assert!(key.verify(b"hello", &high.to_bytes()).is_err());
        assert!(key.verify(b"hellp", &signature.to_bytes()).is_err());
    }
}
