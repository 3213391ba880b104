//! The key room: which keys exist, whose they are, what state they are in, and their
//! public forms. The token is the only store ([`store`]); [`registry`] is the daemon's
//! in-memory view of it, built at start-up; [`carry`] merges each new reading of the
//! token into the last good view, so a read failure never empties what is published.

pub mod carry;
pub mod inventory;
pub mod jwk;
pub mod registry;
pub mod revoked;
pub mod state;
pub mod store;

pub use jwk::{Jwk, JwkSet};
pub use registry::{KeyRegistry, Published};
pub use revoked::RevokedTokens;
pub use state::{KeyPurpose, KeyRecord, KeyState};
pub use store::{Inventory, KeyStoreError, StoredKey};
