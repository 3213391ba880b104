//! Key pair generation inside the token (PKCS#11 §5.14) and the templates that keep
//! private keys in it.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::Session;

use super::objects::{self, KeyPairInfo};
use super::{HsmError, KeyObjects};
use crate::algorithm::Algorithm;

/// DER of the named curve OID prime256v1 (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of P-256.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID id-Ed25519 (1.3.101.112), the `CKA_EC_PARAMS` of Ed25519 keys.
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", how PKCS#11 v3.0 tokens may name the same curve.
pub(crate) const EDWARDS25519_NAME: &[u8] = b"\x13\x0cedwards25519";

/// Generates a key pair for `algorithm` inside the token.
///
/// The private key is a token object that is private, sensitive and never extractable,
/// usable only to sign; the public key is a public token object so the JWKS survives
/// restarts. Both carry `id` as `CKA_ID` and `label` as `CKA_LABEL`.
///
/// Every usage other than signing is switched off explicitly: tokens choose their own
/// defaults (SoftHSM2 marks EC private keys usable for decrypt and unwrap), and a signing
/// key should be good for nothing else.
pub(crate) fn generate(
    session: &Session,
    algorithm: Algorithm,
    id: &[u8],
    label: &str,
) -> Result<KeyPairInfo, HsmError> {
    let (mechanism, params) = match algorithm {
        Algorithm::Es256 => (Mechanism::EccKeyPairGen, P256_PARAMS),
        Algorithm::EdDsa => (Mechanism::EccEdwardsKeyPairGen, ED25519_PARAMS),
    };
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::EcParams(params.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::SignRecover(false),
        Attribute::Derive(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let (public, private) =
        session.generate_key_pair(&mechanism, &public_template, &private_template)?;
    let keys = KeyObjects { private, public };
    // Read back what the token actually made rather than trusting the template.
    match objects::describe_pair(session, keys) {
        Ok(info) => Ok(info),
        Err(e) => {
            destroy(session, keys);
            Err(e)
        }
    }
}

/// Destroys both halves of a key pair; used to undo a generation that cannot complete.
pub(crate) fn destroy(session: &Session, keys: KeyObjects) {
    for handle in [keys.private, keys.public] {
        if let Err(e) = session.destroy_object(handle) {
            tracing::error!(error = %HsmError::from(e), "cannot destroy key object while undoing");
        }
    }
}
