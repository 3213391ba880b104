//! The single-use (replay) store of `POST /v1/verify`: every `jti` verified with
//! `single_use` is remembered until its token expires.
//!
//! It lives in memory, bounded by expiry and by a capacity it never exceeds: when full,
//! it refuses rather than forget (an evicted jti could be replayed). A restart must not
//! reopen the window either, and the memory is gone after one; so single-use checks
//! refuse any token issued before the store was created. With the short TTLs signetd
//! allows (an hour at most), such tokens are few and soon expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Why a single-use check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// The jti was verified before.
    Replayed,
    /// The token was issued before the store existed (before the daemon started).
    IssuedBeforeStart,
    /// The store holds its capacity of unexpired jtis.
    Full,
}

#[derive(Default)]
struct Seen {
    expiry: HashMap<String, u64>,
    by_expiry: BTreeMap<u64, Vec<String>>,
}

/// Remembers single-use jtis until they expire.
pub struct ReplayStore {
    seen: Mutex<Seen>,
    capacity: usize,
    started_at: u64,
}

impl ReplayStore {
    /// A store that holds at most `capacity` jtis and refuses tokens issued before
    /// `started_at` (seconds since the epoch).
    pub fn new(capacity: usize, started_at: u64) -> Self {
        ReplayStore {
            seen: Mutex::new(Seen::default()),
            capacity,
            started_at,
        }
    }

    /// Records `jti` as used, or says why it may not be used. `exp` bounds how long it
    /// is remembered (plus `leeway`, since verifiers accept it that much longer).
    pub fn use_once(
        &self,
        jti: &str,
        iat: u64,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> Result<(), ReplayRefusal> {
        if iat < self.started_at {
            return Err(ReplayRefusal::IssuedBeforeStart);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what has expired.
        let live = seen.by_expiry.split_off(&now.saturating_sub(leeway));
        for jti in std::mem::replace(&mut seen.by_expiry, live)
            .into_values()
            .flatten()
        {
            seen.expiry.remove(&jti);
        }
        if seen.expiry.contains_key(jti) {
            return Err(ReplayRefusal::Replayed);
        }
        if seen.expiry.len() >= self.capacity {
            return Err(ReplayRefusal::Full);
        }
        seen.expiry.insert(jti.to_string(), exp);
        seen.by_expiry.entry(exp).or_default().push(jti.to_string());
        Ok(())
    }

    /// How many jtis are remembered.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expiry
            .len()
    }

    /// Whether no jti is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_used_once_until_it_expires_and_capacity_is_never_exceeded() {
        let store = ReplayStore::new(2, 100);
        assert_eq!(store.use_once("a", 100, 160, 110, 5), Ok(()));
        assert_eq!(
            store.use_once("a", 100, 160, 120, 5),
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(store.use_once("b", 100, 170, 120, 5), Ok(()));
        assert_eq!(
            store.use_once("c", 100, 170, 120, 5),
            Err(ReplayRefusal::Full)
        );
        // Once "a" (exp 160) is past exp + leeway, it is forgotten and room is made.
        assert_eq!(store.use_once("c", 100, 170, 166, 5), Ok(()));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.use_once("d", 99, 170, 120, 5),
            Err(ReplayRefusal::IssuedBeforeStart)
        );
    }
}
