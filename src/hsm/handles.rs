//! Which object handle signs for which key id.
//!
//! Signing must not search the token on every request, so the private key's handle is
//! kept per `CKA_ID` once found. A handle can go stale (the token was removed and
//! re-inserted, the key was deleted): the signer then drops the entry and looks the key
//! up again ([`super::Hsm`]'s signing path). Every inventory scan refreshes the entries
//! it sees. Each entry keeps the algorithm and public key the token reported, and a
//! signature is made only when they are what the caller expects: a handle that now
//! names another key (deleted and re-created under the same id) is never used.

use std::collections::HashMap;
use std::sync::RwLock;

use cryptoki::object::ObjectHandle;

use crate::algorithm::Algorithm;
use crate::signer::KeyRef;

/// A private key's handle and what the token reported about its key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SigningHandle {
    pub(crate) handle: ObjectHandle,
    pub(crate) algorithm: Algorithm,
    pub(crate) public_key: Vec<u8>,
}

/// What the map says about a key the caller wants to sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The handle of exactly that key.
    Found(ObjectHandle),
    /// A handle under that id, for another key.
    Mismatch,
    /// No handle under that id.
    Missing,
}

/// Handles by `CKA_ID`.
#[derive(Debug, Default)]
pub(crate) struct Handles(RwLock<HashMap<Vec<u8>, SigningHandle>>);

impl Handles {
    /// The handle for `key`, compared under the lock so no key bytes are copied per
    /// signature.
    pub(crate) fn find(&self, key: KeyRef<'_>) -> Lookup {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        match map.get(key.kid.as_bytes()) {
            Some(h) if h.algorithm == key.algorithm && h.public_key == key.public_key => {
                Lookup::Found(h.handle)
            }
            Some(_) => Lookup::Mismatch,
            None => Lookup::Missing,
        }
    }

    pub(crate) fn insert(&self, id: &[u8], handle: SigningHandle) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_vec(), handle);
    }

    /// Drops the entry of `id` if it still holds `handle`: a concurrent request may
    /// already have stored a fresh one.
    pub(crate) fn remove_if(&self, id: &[u8], handle: ObjectHandle) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.get(id).is_some_and(|h| h.handle == handle) {
            map.remove(id);
        }
    }

    /// Every id with a kept handle.
    pub(crate) fn ids(&self) -> Vec<Vec<u8>> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.keys().cloned().collect()
    }

    pub(crate) fn remove(&self, id: &[u8]) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
