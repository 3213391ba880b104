//! Which object handle signs for which key id.
//!
//! Signing must not search the token on every request, so the private key's handle is
//! kept per `CKA_ID` once found. A handle can go stale (the token was removed and
//! re-inserted, the key was deleted): the signer then drops the entry and looks the key
//! up again ([`super::Hsm`]'s signing path). Every inventory scan refreshes the entries
//! it sees, so a handle never outlives one lifecycle tick unchecked.

use std::collections::HashMap;
use std::sync::RwLock;

use cryptoki::object::ObjectHandle;

use crate::algorithm::Algorithm;

/// A private key's handle and the algorithm it was read back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SigningHandle {
    pub(crate) handle: ObjectHandle,
    pub(crate) algorithm: Algorithm,
}

/// Handles by `CKA_ID`.
#[derive(Debug, Default)]
pub(crate) struct Handles(RwLock<HashMap<Vec<u8>, SigningHandle>>);

impl Handles {
    pub(crate) fn get(&self, id: &[u8]) -> Option<SigningHandle> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    pub(crate) fn insert(&self, id: &[u8], handle: SigningHandle) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_vec(), handle);
    }

    pub(crate) fn remove(&self, id: &[u8]) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}
