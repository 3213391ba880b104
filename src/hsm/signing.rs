//! Signing (PKCS#11 §5.13): one `C_Sign` per request on a kept handle.

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::HsmError;
use crate::algorithm::Algorithm;
use crate::signer::SignInput;

/// Signs `input` with the private key `key` of `algorithm`; returns the JWS form (raw
/// `r‖s` for ES256, the 64-byte signature for Ed25519).
pub(crate) fn sign(
    session: &Session,
    key: ObjectHandle,
    algorithm: Algorithm,
    input: &SignInput,
) -> Result<Vec<u8>, HsmError> {
    let signature = match (algorithm, input) {
        (Algorithm::Es256, SignInput::Digest(digest)) => {
            session.sign(&Mechanism::Ecdsa, key, digest)?
        }
        (Algorithm::Es256, SignInput::Message(message)) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(message);
            session.sign(&Mechanism::Ecdsa, key, &digest)?
        }
        (Algorithm::EdDsa, SignInput::Message(message)) => {
            let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
            session.sign(&mechanism, key, message)?
        }
        (Algorithm::EdDsa, SignInput::Digest(_)) => {
            return Err(HsmError::Unsupported(
                "EdDSA signs whole messages, not digests".to_string(),
            ));
        }
    };
    if signature.len() != algorithm.signature_len() {
        return Err(HsmError::Malformed(format!(
            "{algorithm} signature of {} bytes",
            signature.len()
        )));
    }
    Ok(signature)
}
