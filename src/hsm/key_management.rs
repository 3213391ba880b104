//! Key pair generation inside the token (PKCS#11 §5.14) and the templates that keep
//! private keys in it.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::Session;

use super::HsmError;
use super::curve::{ED25519_PARAMS, P256_PARAMS};
use super::objects::{self, KeyObjects, KeyPairInfo};
use crate::algorithm::Algorithm;

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
) -> Result<(KeyPairInfo, KeyObjects), HsmError> {
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
        Ok(info) => Ok((info, keys)),
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
