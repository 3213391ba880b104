//! The two documents served as cached bytes, the JWKS and the revocation list, as
//! schemas only.
//!
//! [`crate::keys::KeyRegistry`] renders them once per registry build, so the daemon never
//! serializes these types. They exist so that the OpenAPI document describes what is
//! served; the tests below parse rendered documents into them (every type refuses unknown
//! fields), and schemathesis checks the served bytes against the schemas, so the two
//! cannot drift apart unnoticed.

use serde::Deserialize;
use utoipa::ToSchema;

/// A public key, RFC 7517: as `/.well-known/jwks.json` lists it and `GET /v1/keys/{kid}`
/// embeds it.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    /// `EC` for P-256, `OKP` for Ed25519.
    #[schema(pattern = "^(EC|OKP)$")]
    pub kty: String,
    /// `P-256` or `Ed25519`.
    #[schema(pattern = "^(P-256|Ed25519)$")]
    pub crv: String,
    /// The x coordinate (EC) or the public key (OKP), base64url.
    pub x: String,
    /// The y coordinate (EC only), base64url.
    #[serde(default)]
    pub y: Option<String>,
    /// The key id, also the JWS header `kid`.
    pub kid: String,
    /// `ES256`, `EdDSA` or `Ed25519` (the issuer's `eddsa_alg`).
    #[schema(pattern = "^(ES256|EdDSA|Ed25519)$")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub use_: String,
    /// The attestation chain: the key's certificate, then the CA chain (standard base64
    /// DER).
    #[serde(default)]
    pub x5c: Option<Vec<String>>,
    /// base64url SHA-256 of the key's certificate.
    #[serde(default, rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

/// `GET /.well-known/jwks.json`: the published keys of the JWT issuers.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwkSet {
    /// Pending, active and retired keys.
    pub keys: Vec<Jwk>,
}

/// `GET /v1/revocations`: revoked keys, and revoked tokens until they expire.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevocationList {
    /// Revoked keys.
    pub keys: Vec<RevokedKey>,
    /// Revoked tokens that have not expired yet.
    pub tokens: Vec<super::RevokedToken>,
}

/// A revoked key in the revocation list.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokedKey {
    /// Key id.
    pub kid: String,
    /// Owning issuer.
    pub issuer: String,
    /// When it was revoked, seconds since the epoch.
    pub revoked_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys room renders these documents; they parse into the schema types.
    #[test]
    fn rendered_documents_fit_their_schemas() {
        let jwk = crate::keys::Jwk::from_public_key(crate::Algorithm::EdDsa, "k", &[7; 32]);
        let set = crate::keys::JwkSet { keys: vec![jwk] };
        let parsed: JwkSet = serde_json::from_value(serde_json::to_value(&set).unwrap()).unwrap();
        assert_eq!(parsed.keys[0].use_, "sig");
        let list = serde_json::json!({
            "keys": [{"kid": "k", "issuer": "i", "revoked_at": 1}],
            "tokens": [{"jti": "j", "exp": 2, "revoked_at": 1}],
        });
        serde_json::from_value::<RevocationList>(list).unwrap();
    }
}
