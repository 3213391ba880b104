//! The key room: which keys exist, whose they are, what state they are in, and their
//! public forms. The PKCS#11 token holds the key pairs and nothing else; what signetd
//! knows about each key (issuer, purpose, state and its history, attestation
//! certificate) is in the state store, reached through the `store::KeyMetadata` port
//! ([`store`] changes keys, [`inventory`] reads both and reports where they disagree).
//! [`registry`] is the daemon's in-memory view, built at start-up; [`carry`] merges each
//! new reading into the last good view, so a read failure never empties what is
//! published.

pub mod carry;
pub mod inventory;
pub mod jwk;
pub mod registry;
pub mod revoked;
pub mod state;
pub mod store;
pub mod verifying;

pub use jwk::{Jwk, JwkSet};
pub use registry::{KeyRegistry, Published};
pub use revoked::RevokedTokens;
pub use state::{KeyPurpose, KeyState};
pub use store::{Inventory, InventoryError, KeyStoreError, Mismatch, StoredKey};
pub use verifying::VerifyingKey;
