//! The last good view, and how a new reading of the token is merged into it.
//!
//! A reading of the token is not the truth about which keys verifiers need: a token that
//! cannot be read, or that reads as empty (SoftHSM2 answers every search with nothing
//! once its directory has gone), says nothing about the keys that signed the tokens out
//! there. [`merge`] is the one rule, pure so it is tested without a token:
//!
//! - a reading in which the token shows none of its objects (no key pair, complete or
//!   not, and no CA key) while the last good view had keys is an outage, not a
//!   deletion: the last good view is kept whole (the state store's rows say nothing
//!   here: they are there whether or not the token answers);
//! - a key missing from an otherwise readable token (its private key deleted) is carried
//!   from the last good view, out of signing but still published, until every token it
//!   may have signed has expired: its issuer's `max_ttl` plus the leeway after it was
//!   last seen; then it is dropped;
//! - a CA chain that vanished is kept; token revocations are the union of both views
//!   (a revocation is only ever removed once its token has expired, which the registry
//!   filters anyway).

use std::collections::HashMap;

use super::state::KeyState;
use super::store::{Inventory, StoredKey};

/// What the token showed at one reading.
#[derive(Debug, Default)]
pub struct Reading {
    /// The keys and problems it showed.
    pub inventory: Inventory,
    /// The attestation CA's chain; empty if there is none, or the token shows no CA key.
    pub ca_chain: Vec<Vec<u8>>,
}

/// The view the registry is built from, remembered between readings.
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    /// Every key of the view, as last seen in the token.
    pub keys: Vec<StoredKey>,
    /// When each key was last seen in the token, seconds since the epoch.
    pub seen_at: HashMap<String, u64>,
    /// The attestation CA's chain.
    pub ca_chain: Vec<Vec<u8>>,
}

/// A key the token no longer shows, still published from the last good view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingKey {
    /// The key id.
    pub kid: String,
    /// Its issuer.
    pub issuer: String,
    /// Its state when last seen.
    pub state: KeyState,
    /// When it was last seen in the token.
    pub last_seen: u64,
    /// Until when it stays published: the last token it may have signed expires then.
    pub until: u64,
}

impl std::fmt::Display for MissingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {} of issuer {} ({}) is missing from the token (its private key deleted?), last seen at {}; it signs nothing and stays published until {}",
            self.kid, self.issuer, self.state, self.last_seen, self.until
        )
    }
}

/// What [`merge`] decided.
#[derive(Debug)]
pub struct Merged {
    /// The view to build the registry from, and to remember for the next reading.
    pub view: LastGood,
    /// The reading's problems (the registry's builder reports them).
    pub problems: Vec<String>,
    /// Keys carried although the token does not show them.
    pub missing: Vec<MissingKey>,
    /// Keys carried until now whose last token has expired: no longer published.
    pub dropped: Vec<MissingKey>,
    /// Set when the reading showed nothing of the last good view: the view was kept
    /// whole and the reading is treated as a failed one.
    pub looks_empty: bool,
}

/// Merges `reading`, taken at `now`, into `last`. `grace(issuer)` is how long after a
/// key was last seen a token it signed may still verify (`max_ttl` plus the leeway).
pub fn merge(last: &LastGood, reading: Reading, now: u64, grace: impl Fn(&str) -> u64) -> Merged {
    // What the token itself showed: the store's rows are there whether or not the
    // token answers, so a key the store has but the token does not show is no sign.
    let empty = reading.inventory.keys.is_empty()
        && reading.inventory.incomplete_pairs == 0
        && reading.ca_chain.is_empty();
    if empty && !last.keys.is_empty() {
        return Merged {
            view: last.clone(),
            problems: Vec::new(),
            missing: Vec::new(),
            dropped: Vec::new(),
            looks_empty: true,
        };
    }
    let Reading {
        inventory,
        ca_chain,
    } = reading;
    let mut seen_at: HashMap<String, u64> = inventory
        .keys
        .iter()
        .map(|k| (k.kid.clone(), now))
        .collect();
    let mut keys = inventory.keys;
    let (mut missing, mut dropped) = (Vec::new(), Vec::new());
    let gone_keys: Vec<&StoredKey> = last
        .keys
        .iter()
        .filter(|k| !seen_at.contains_key(&k.kid))
        .collect();
    for key in gone_keys {
        let last_seen = last.seen_at.get(&key.kid).copied().unwrap_or(now);
        let gone = MissingKey {
            kid: key.kid.clone(),
            issuer: key.issuer.clone(),
            state: key.state,
            last_seen,
            until: last_seen + grace(&key.issuer),
        };
        if now <= gone.until {
            seen_at.insert(key.kid.clone(), last_seen);
            keys.push(key.clone());
            missing.push(gone);
        } else {
            dropped.push(gone);
        }
    }
    keys.sort_by(|a, b| (&a.issuer, a.created_at, &a.kid).cmp(&(&b.issuer, b.created_at, &b.kid)));
    let ca_chain = if ca_chain.is_empty() {
        last.ca_chain.clone()
    } else {
        ca_chain
    };
    Merged {
        view: LastGood {
            keys,
            seen_at,
            ca_chain,
        },
        problems: inventory.problems,
        missing,
        dropped,
        looks_empty: false,
    }
}

#[cfg(test)]
#[path = "carry_tests.rs"]
mod tests;
