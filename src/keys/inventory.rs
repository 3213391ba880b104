//! Reading the keys: the state store's records checked against the token's key pairs.
//!
//! A complete key is a row in the state store (state, purpose, attestation certificate)
//! and a hardware-bound key pair in the token whose `CKA_ID` the row names. [`inventory`]
//! returns the complete ones and describes everything else for the operator: a row whose
//! key pair is gone ([`Mismatch::NotInToken`]), a signetd key pair no row names
//! ([`Mismatch::NotInStore`]: an interrupted generation, or a store that is not this
//! token's), a key that could leave the token. Nothing is used, published, deleted or
//! written because of what does not match.

use std::collections::HashMap;

use super::jwk::Jwk;
use super::state::{self, KeyPurpose, KeyState};
use crate::algorithm::Algorithm;
use crate::attest;
use crate::hsm::{Hsm, KeyAttributes, KeyPairInfo};
use crate::signer::KeyRef;
use crate::store::{KeyMetadata, KeyRow};

/// A complete key: its row in the state store and its key pair in the token.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// The key id.
    pub kid: String,
    /// The issuer it belongs to.
    pub issuer: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its lifecycle state.
    pub state: KeyState,
    /// When it was generated, seconds since the epoch.
    pub created_at: u64,
    /// The public key (SEC1 uncompressed point, or 32 Ed25519 bytes).
    pub public_key: Vec<u8>,
    /// What the token reports about the private key.
    pub attributes: KeyAttributes,
    /// The key's attestation certificate (DER), issued by the attestation CA.
    pub certificate: Vec<u8>,
    /// When it entered its current state, seconds since the epoch.
    pub changed_at: u64,
    /// What it signs.
    pub purpose: KeyPurpose,
}

impl StoredKey {
    /// A JWT key of `issuer` for unit tests, with the attributes signetd requires of a
    /// key pair, created and changed at 1.
    #[cfg(test)]
    pub(crate) fn for_tests(
        kid: &str,
        issuer: &str,
        algorithm: Algorithm,
        state: KeyState,
        public_key: Vec<u8>,
    ) -> StoredKey {
        StoredKey {
            kid: kid.to_string(),
            issuer: issuer.to_string(),
            algorithm,
            state,
            created_at: 1,
            public_key,
            attributes: KeyAttributes {
                sensitive: true,
                always_sensitive: true,
                extractable: false,
                never_extractable: true,
                local: true,
            },
            certificate: Vec::new(),
            changed_at: 1,
            purpose: KeyPurpose::Jwt,
        }
    }

    /// This key as the signer port names it.
    pub fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            kid: &self.kid,
            algorithm: self.algorithm,
            public_key: &self.public_key,
        }
    }

    /// A complete key from its row and its key pair.
    pub(super) fn assemble(pair: KeyPairInfo, row: KeyRow) -> Self {
        StoredKey {
            changed_at: row.updated_at,
            purpose: row.purpose,
            kid: row.kid,
            issuer: row.issuer,
            algorithm: pair.algorithm,
            state: row.state,
            created_at: row.created_at,
            public_key: pair.public_key,
            attributes: pair.attributes,
            certificate: row.certificate,
        }
    }

    /// The public JWK of this key, with its attestation chain (`ca_chain` is the CA's
    /// certificate and the chain above it).
    pub fn jwk(&self, ca_chain: &[Vec<u8>]) -> Jwk {
        let mut chain = vec![self.certificate.clone()];
        chain.extend_from_slice(ca_chain);
        Jwk::from_public_key(self.algorithm, &self.kid, &self.public_key).with_chain(&chain)
    }
}

/// Where the state store and the token disagree about a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The store has the key; the token has no key pair with its `CKA_ID`.
    NotInToken {
        /// The key id.
        kid: String,
        /// Its issuer.
        issuer: String,
        /// Its state in the store.
        state: KeyState,
    },
    /// The token has a signetd key pair that no row of the store names.
    NotInStore {
        /// The kid its `CKA_ID` spells.
        kid: String,
        /// The issuer its label names, if it is labelled `signetd/ISSUER/KID`.
        issuer: Option<String>,
        /// Its `CKA_LABEL`.
        label: String,
    },
}

impl Mismatch {
    /// The key id.
    pub fn kid(&self) -> &str {
        match self {
            Mismatch::NotInToken { kid, .. } | Mismatch::NotInStore { kid, .. } => kid,
        }
    }

    /// The issuer, when known.
    pub fn issuer(&self) -> Option<&str> {
        match self {
            Mismatch::NotInToken { issuer, .. } => Some(issuer),
            Mismatch::NotInStore { issuer, .. } => issuer.as_deref(),
        }
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::NotInToken { kid, issuer, state } => write!(
                f,
                "key {kid} of issuer {issuer} ({state}) is missing: the state store has it but its private key is missing from the token; it can sign nothing, and a running daemon keeps publishing it until every token it signed has expired"
            ),
            Mismatch::NotInStore { kid, label, .. } => write!(
                f,
                "key {kid} ({label}) is in the token but not in the state store (an interrupted generation, or a store that is not this token's); it is neither used nor published: finish with `signetd keys finish --kid {kid}` or undo with `signetd keys destroy-incomplete --kid {kid}`"
            ),
        }
    }
}

/// Every key signetd knows, and everything it could not make sense of.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Complete, usable keys.
    pub keys: Vec<StoredKey>,
    /// Keys that are incomplete, unusable or unreadable, described for the operator
    /// (every [`Inventory::mismatches`] entry among them). They are reported at every
    /// start and never deleted automatically.
    pub problems: Vec<String>,
    /// Keys the state store and the token disagree about.
    pub mismatches: Vec<Mismatch>,
    /// Signetd key pairs the token showed that are not complete keys (unreadable,
    /// unknown to the store, or unusable): with [`Inventory::keys`], what the token
    /// itself showed, which tells an empty-looking token from a store without keys.
    pub incomplete_pairs: usize,
}

impl Inventory {
    /// A key of `issuer` in `state` (the first, if several).
    pub fn of_issuer(&self, issuer: &str, state: KeyState) -> Option<&StoredKey> {
        self.keys
            .iter()
            .find(|k| k.issuer == issuer && k.state == state)
    }
}

/// Why the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] crate::hsm::HsmError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Reads every key row from the state store and every signetd key pair from the token,
/// and matches them by `CKA_ID`.
pub async fn inventory(hsm: &Hsm, meta: &dyn KeyMetadata) -> Result<Inventory, InventoryError> {
    let mut rows: HashMap<Vec<u8>, KeyRow> = meta
        .keys()
        .await?
        .into_iter()
        .map(|row| (row.token_id.clone(), row))
        .collect();
    let mut inventory = Inventory::default();
    for pair in hsm.key_pairs(state::KEY_LABEL_PREFIX).await? {
        let pair = match pair {
            Ok(pair) => pair,
            Err(unreadable) => {
                inventory.incomplete_pairs += 1;
                inventory.problems.push(format!(
                    "key {:?} is unreadable: {}",
                    unreadable.label, unreadable.error
                ));
                continue;
            }
        };
        let row = rows.remove(&pair.id);
        match complete(pair, row) {
            Ok(key) => inventory.keys.push(key),
            Err(problem) => {
                inventory.incomplete_pairs += 1;
                match problem {
                    Problem::Mismatch(mismatch) => inventory.mismatches.push(mismatch),
                    Problem::Other(problem) => inventory.problems.push(problem),
                }
            }
        }
    }
    // Deleted by hand (pkcs11-tool) or lost, or a store restored beside another token.
    let mut gone: Vec<KeyRow> = rows.into_values().collect();
    gone.sort_by(|a, b| a.kid.cmp(&b.kid));
    inventory
        .mismatches
        .extend(gone.into_iter().map(|row| Mismatch::NotInToken {
            kid: row.kid,
            issuer: row.issuer,
            state: row.state,
        }));
    inventory
        .problems
        .extend(inventory.mismatches.iter().map(ToString::to_string));
    inventory
        .keys
        .sort_by(|a, b| (&a.issuer, a.created_at, &a.kid).cmp(&(&b.issuer, b.created_at, &b.kid)));
    Ok(inventory)
}

enum Problem {
    Mismatch(Mismatch),
    Other(String),
}

/// Assembles a complete key, or describes what is wrong with it.
fn complete(pair: KeyPairInfo, row: Option<KeyRow>) -> Result<StoredKey, Problem> {
    let kid = String::from_utf8_lossy(&pair.id).into_owned();
    if !pair.attributes.is_hardware_bound() {
        return Err(Problem::Other(format!(
            "key {kid} ({}) could leave the token or was not generated in it ({:?}); it is neither used nor published",
            pair.label, pair.attributes
        )));
    }
    let Some(row) = row else {
        let issuer = pair
            .label
            .strip_prefix(state::KEY_LABEL_PREFIX)
            .and_then(|rest| rest.strip_suffix(&format!("/{kid}")))
            .map(str::to_string);
        return Err(Problem::Mismatch(Mismatch::NotInStore {
            kid,
            issuer,
            label: pair.label,
        }));
    };
    if row.algorithm != pair.algorithm || pair.label != state::key_label(&row.issuer, &row.kid) {
        return Err(Problem::Other(format!(
            "key {kid}: the token holds a {} key labelled {:?} but the state store says {} for issuer {}",
            pair.algorithm, pair.label, row.algorithm, row.issuer
        )));
    }
    let certifies_key =
        attest::verify::parse(&row.certificate).is_ok_and(|c| c.public_key() == pair.public_key);
    if !certifies_key {
        return Err(Problem::Other(format!(
            "key {kid}: its attestation certificate is not for this key; it is neither used nor published"
        )));
    }
    Ok(StoredKey::assemble(pair, row))
}
