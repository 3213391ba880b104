//! The lifecycle record kept beside each key in the token, as a `CKO_DATA` object.
//!
//! Keeping it in the token means a token backup carries keys and their states together,
//! with no second database to drift out of step.

use serde::{Deserialize, Serialize};

use crate::algorithm::Algorithm;

/// `CKA_APPLICATION` of signetd's data objects.
pub use crate::hsm::DATA_APPLICATION as APPLICATION;
/// Prefix of the `CKA_LABEL` of every signetd key object: `signetd/ISSUER/KID`.
pub const KEY_LABEL_PREFIX: &str = "signetd/";
/// Prefix of the `CKA_LABEL` of every state record: `signetd-state/KID`.
pub const STATE_LABEL_PREFIX: &str = "signetd-state/";

pub use crate::algorithm::KeyPurpose;

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing, and published.
    Active,
    /// No longer signing; published until every token it signed has expired.
    Retired,
    /// Out of the JWKS; still retrievable by kid.
    Archived,
    /// Compromised: out of the JWKS at once, listed in revocations.
    Revoked,
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyState::Pending => "pending",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Archived => "archived",
            KeyState::Revoked => "revoked",
        })
    }
}

impl KeyState {
    /// Whether a key may move from `self` to `to`. Revocation is always possible (a
    /// compromise can surface at any time); everything else only moves forward.
    pub fn may_become(self, to: KeyState) -> bool {
        use KeyState::*;
        matches!(
            (self, to),
            (Pending, Active)
                | (Pending | Active, Retired)
                | (Retired, Archived)
                | (Pending | Active | Retired | Archived, Revoked)
        )
    }

    /// Whether verifiers should find this key in the JWKS.
    pub fn is_published(self) -> bool {
        matches!(
            self,
            KeyState::Pending | KeyState::Active | KeyState::Retired
        )
    }
}

/// The JSON stored as `CKA_VALUE` of a key's state object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Format version, 1.
    pub v: u32,
    /// The key id (`CKA_ID` of the key objects).
    pub kid: String,
    /// The issuer the key belongs to.
    pub issuer: String,
    /// The key's algorithm.
    pub alg: Algorithm,
    /// Lifecycle state.
    pub state: KeyState,
    /// When the key was generated, seconds since the epoch.
    pub created_at: u64,
    /// Incremented at every state change. Tokens may not allow rewriting a data object
    /// (SoftHSM2 does not), so a change writes a new record before destroying the old;
    /// if both survive a crash, the higher revision is the truth.
    #[serde(default)]
    pub revision: u64,
    /// When the key entered its current state, seconds since the epoch (0: at creation).
    #[serde(default)]
    pub changed_at: u64,
    /// What the key signs.
    #[serde(default)]
    pub purpose: KeyPurpose,
}

impl KeyRecord {
    /// When the key entered its current state.
    pub fn state_since(&self) -> u64 {
        if self.changed_at == 0 {
            self.created_at
        } else {
            self.changed_at
        }
    }
}

impl KeyRecord {
    /// The `CKA_LABEL` of this record's data object.
    pub fn label(&self) -> String {
        format!("{STATE_LABEL_PREFIX}{}", self.kid)
    }
}

/// The `CKA_LABEL` of a key's objects.
pub fn key_label(issuer: &str, kid: &str) -> String {
    format!("{KEY_LABEL_PREFIX}{issuer}/{kid}")
}
