//! The signer port: what the rest of signetd needs from the HSM to make a signature.
//!
//! A key is named by its key id (the `kid`, which is also its PKCS#11 `CKA_ID`), never
//! by an object handle: the PKCS#11 implementation ([`crate::hsm::Hsm`]) maps ids to
//! handles itself and looks a handle up again when the token says it is stale. The
//! service, the attestation CA and the audit log's checkpoints all sign through this
//! trait, so unit tests can put a fake behind it.

use std::any::Any;
use std::time::Duration;

use crate::algorithm::Algorithm;
use crate::util::BoxFuture;

/// Which key signs: its id, and what the caller knows it to be. The signer refuses to
/// sign with a key of that id that is not this key (another algorithm or public key),
/// so a key deleted and re-created under the same id never signs in its place.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    /// The key id (`CKA_ID`).
    pub kid: &'a str,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its public key: the SEC1 uncompressed point (P-256) or the 32 Ed25519 bytes.
    pub public_key: &'a [u8],
}

/// What to sign.
#[derive(Clone, Debug)]
pub enum SignInput {
    /// A SHA-256 digest computed by the caller (ES256 only).
    Digest([u8; 32]),
    /// A message: ES256 hashes it on the host first (the token only sees the digest);
    /// EdDSA signs it whole, as Ed25519 requires.
    Message(Vec<u8>),
}

/// Why a signature could not be made. The text is for the log: clients get a coarse
/// code only.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SignError {
    /// The signer has no key with this id (it was deleted, or never existed).
    #[error("no signing key with id {0:?}")]
    UnknownKey(String),
    /// The signer's key with this id is not the key the caller expects (another
    /// algorithm or public key): it was replaced.
    #[error(
        "the key with id {0:?} is not the key signetd knows by that id (algorithm or public key differ)"
    )]
    KeyMismatch(String),
    /// The signer did not answer in time.
    #[error("the signer did not answer within {0:?}")]
    Timeout(Duration),
    /// The signer is busy with as much as it may queue: refused at once, not queued.
    #[error("the signer is overloaded")]
    Overloaded,
    /// The signer failed; the detail says how (which PKCS#11 function, which code).
    #[error("{0}")]
    Unavailable(String),
}

/// What runs right after a signature is made, with it, on the thread that made it:
/// a caller's next step (its audit record) then needs no hand-off back to the caller's
/// thread first, which on a lone request costs more than the step itself. Type-erased
/// so that [`Signer`] stays object-safe; [`sign_then`] is the typed form.
pub type AfterSign = Box<dyn FnOnce(Vec<u8>) -> Box<dyn Any + Send> + Send>;

/// Signs with keys it holds, by key id.
pub trait Signer: Send + Sync {
    /// Signs `input` with `key`. Returns the JWS form of the signature: raw `r‖s` for
    /// ES256, the 64-byte signature for Ed25519.
    fn sign<'a>(
        &'a self,
        key: KeyRef<'a>,
        input: SignInput,
    ) -> BoxFuture<'a, Result<Vec<u8>, SignError>>;

    /// [`Signer::sign`], then `then` with the signature on the signer's own thread;
    /// returns what `then` returned. `then` runs once, and not at all if signing fails.
    fn sign_then<'a>(
        &'a self,
        key: KeyRef<'a>,
        input: SignInput,
        then: AfterSign,
    ) -> BoxFuture<'a, Result<Box<dyn Any + Send>, SignError>>;
}

/// [`Signer::sign_then`] with a typed continuation.
pub async fn sign_then<T: Send + 'static>(
    signer: &dyn Signer,
    key: KeyRef<'_>,
    input: SignInput,
    then: impl FnOnce(Vec<u8>) -> T + Send + 'static,
) -> Result<T, SignError> {
    let erased: AfterSign = Box::new(move |signature| Box::new(then(signature)));
    let made = signer.sign_then(key, input, erased).await?;
    made.downcast::<T>().map(|t| *t).map_err(|_| {
        SignError::Unavailable("the signer returned something else than what `then` made".into())
    })
}
