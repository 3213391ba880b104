//! Session copies of signing keys, one set per worker session.
//!
//! `C_CopyObject` with `CKA_TOKEN=false` makes a session object of a private key. It
//! keeps every other attribute, `CKA_SENSITIVE` and `CKA_EXTRACTABLE` among them, so it
//! never leaves the token either, and it ends with the session that made it. SoftHSM2
//! signs one without re-reading the token object: ES256 about 1.5× faster
//! (docs/performance.md). `[pkcs11] session_copies = false` signs with the token objects.
//!
//! Each worker keeps the copies **its own session** made, and uses no other: a handle
//! is only known to name the copy while the session that made it is open, and some
//! tokens reuse the numbers of destroyed objects. The worker forgets them all when its
//! session is lost ([`forget`]), and a recovery starts new worker threads. A copy is
//! used only for the token object (handle and public key) it was made from: a key
//! deleted and re-created gets a new copy, and the old one is destroyed.

use std::cell::RefCell;
use std::collections::HashMap;

use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;

use super::{HsmError, objects};

/// What a worker knows of one key's copy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kept<H> {
    /// The token object it was made from, and that key's public key.
    token: H,
    public_key: Vec<u8>,
    /// The copy, or `None` when the token refused to make one.
    copy: Option<H>,
}

/// One worker session's copies, by key id. Generic over the handle only so the unit
/// tests can use plain numbers: cryptoki makes an `ObjectHandle` only from a module.
#[derive(Debug)]
struct Copies<H>(HashMap<String, Kept<H>>);

/// What to sign with, or what to do first.
#[derive(Debug, PartialEq, Eq)]
enum Choice<H> {
    /// This object (the copy, or the token object the token would not copy).
    Use(H),
    /// Make a copy of the token object, after destroying this outdated one if any.
    Copy { outdated: Option<H> },
}

impl<H: Copy + PartialEq> Copies<H> {
    fn choose(&self, kid: &str, token: H, public_key: &[u8]) -> Choice<H> {
        match self.0.get(kid) {
            Some(kept) if kept.token == token && kept.public_key == public_key => {
                Choice::Use(kept.copy.unwrap_or(token))
            }
            Some(kept) => Choice::Copy {
                outdated: kept.copy,
            },
            None => Choice::Copy { outdated: None },
        }
    }

    fn keep(&mut self, kid: &str, token: H, public_key: &[u8], copy: Option<H>) {
        let kept = Kept {
            token,
            public_key: public_key.to_vec(),
            copy,
        };
        self.0.insert(kid.to_string(), kept);
    }
}

thread_local! {
    /// The copies of the session this worker thread owns. Only worker threads sign, and
    /// each owns exactly one session at a time.
    static COPIES: RefCell<Copies<ObjectHandle>> = RefCell::new(Copies(HashMap::new()));
}

/// Runs `op` in this worker's `session` on the object to sign `kid`'s key with: the copy
/// this session made of `token`, made now if there is none, or the token object if the
/// token refuses. A copy the token calls stale is forgotten, so the caller's retry (after
/// looking the key up again) makes a new one.
pub(super) fn with_signing_object<R>(
    session: &Session,
    kid: &str,
    token: ObjectHandle,
    public_key: &[u8],
    op: impl FnOnce(ObjectHandle) -> Result<R, HsmError>,
) -> Result<R, HsmError> {
    let handle = signing_object(session, kid, token, public_key)?;
    let result = op(handle);
    if handle != token && result.as_ref().is_err_and(HsmError::stale_handle) {
        COPIES.with_borrow_mut(|c| c.0.remove(kid));
    }
    result
}

fn signing_object(
    session: &Session,
    kid: &str,
    token: ObjectHandle,
    public_key: &[u8],
) -> Result<ObjectHandle, HsmError> {
    let outdated = match COPIES.with_borrow(|c| c.choose(kid, token, public_key)) {
        Choice::Use(handle) => return Ok(handle),
        Choice::Copy { outdated } => outdated,
    };
    if let Some(old) = outdated {
        destroy(session, old);
    }
    let copy = match objects::session_copy(session, token) {
        Ok(copy) => {
            tracing::debug!(%kid, "signing with a session copy of the key");
            Some(copy)
        }
        // The session, the device or the handle failed, not the copy: the signing path
        // handles these as for any signature, and the next try copies again.
        Err(e) if e.session_lost() || e.device_fault() || e.stale_handle() => {
            COPIES.with_borrow_mut(|c| c.0.remove(kid));
            return Err(e);
        }
        Err(e) => {
            tracing::warn!(%kid, error = %e, "the token refused a session copy of the key; this session signs with the token object ([pkcs11] session_copies = false stops trying)");
            None
        }
    };
    COPIES.with_borrow_mut(|c| c.keep(kid, token, public_key, copy));
    Ok(copy.unwrap_or(token))
}

/// Forgets this worker's copies: its session is gone, and they with it.
pub(super) fn forget() {
    COPIES.with_borrow_mut(|c| c.0.clear());
}

/// Destroys this worker's copy of `kid`'s key, if it made one (the key is being
/// destroyed, or is gone from the token).
pub(super) fn destroy_copy_of(session: &Session, kid: &str) {
    if let Some(copy) = COPIES
        .with_borrow_mut(|c| c.0.remove(kid))
        .and_then(|kept| kept.copy)
    {
        destroy(session, copy);
    }
}

fn destroy(session: &Session, copy: ObjectHandle) {
    if let Err(e) = session.destroy_object(copy) {
        tracing::warn!(error = %HsmError::from(e), "cannot destroy a session copy of a key; it ends with its session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_serves_only_the_token_object_and_public_key_it_was_made_from() {
        let mut copies = Copies::<u64>(HashMap::new());
        assert_eq!(
            copies.choose("k", 1, b"pub"),
            Choice::Copy { outdated: None }
        );
        copies.keep("k", 1, b"pub", Some(9));
        assert_eq!(copies.choose("k", 1, b"pub"), Choice::Use(9));
        // Re-created under the same id: another token handle, or the same handle number
        // reused for another key.
        assert_eq!(
            copies.choose("k", 2, b"pub"),
            Choice::Copy { outdated: Some(9) }
        );
        assert_eq!(
            copies.choose("k", 1, b"other"),
            Choice::Copy { outdated: Some(9) }
        );
        assert_eq!(
            copies.choose("other", 1, b"pub"),
            Choice::Copy { outdated: None }
        );
    }

    #[test]
    fn a_refused_copy_signs_with_the_token_object_without_asking_again() {
        let mut copies = Copies::<u64>(HashMap::new());
        copies.keep("k", 1, b"pub", None);
        assert_eq!(copies.choose("k", 1, b"pub"), Choice::Use(1));
    }
}
