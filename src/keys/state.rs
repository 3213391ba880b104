//! A key's lifecycle states, and how its objects in the token are labelled.
//!
//! The state itself is kept in the state store (`store::KeyMetadata`); the token holds
//! the key pair, labelled `signetd/ISSUER/KID` with `CKA_ID` = the kid.

use serde::{Deserialize, Serialize};

/// Prefix of the `CKA_LABEL` of every signetd key object: `signetd/ISSUER/KID`.
pub const KEY_LABEL_PREFIX: &str = "signetd/";

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

/// The `CKA_LABEL` of a key's objects.
pub fn key_label(issuer: &str, kid: &str) -> String {
    format!("{KEY_LABEL_PREFIX}{issuer}/{kid}")
}
