//! The in-memory [`ReplayStore`]: every `jti` verified with `single_use` is remembered
//! until its token expires.
//!
//! It lives in memory, bounded by expiry and by a capacity it never exceeds: when full,
//! it refuses rather than forget (an evicted jti could be replayed). A restart must not
//! reopen the window either, and the memory is gone after one; so single-use checks
//! refuse any token issued before the store was created. With the short TTLs signetd
//! allows (an hour at most), such tokens are few and soon expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::{ReplayRefusal, ReplayStore};
use crate::util::BoxFuture;

#[derive(Default)]
struct Seen {
    expiry: HashMap<String, u64>,
    by_expiry: BTreeMap<u64, Vec<String>>,
}

/// Remembers single-use jtis in memory until they expire.
pub struct MemoryReplayStore {
    seen: Mutex<Seen>,
    capacity: usize,
    started_at: u64,
}

impl MemoryReplayStore {
    /// A store that holds at most `capacity` jtis and refuses tokens issued before
    /// `started_at` (seconds since the epoch).
    pub fn new(capacity: usize, started_at: u64) -> Self {
        MemoryReplayStore {
            seen: Mutex::new(Seen::default()),
            capacity,
            started_at,
        }
    }

    fn check(
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

impl ReplayStore for MemoryReplayStore {
    fn use_once<'a>(
        &'a self,
        jti: &'a str,
        iat: u64,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> BoxFuture<'a, Result<(), ReplayRefusal>> {
        Box::pin(std::future::ready(self.check(jti, iat, exp, now, leeway)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_jti_is_used_once_until_it_expires_and_capacity_is_never_exceeded() {
        let memory = MemoryReplayStore::new(2, 100);
        let store: &dyn ReplayStore = &memory;
        assert_eq!(store.use_once("a", 100, 160, 110, 5).await, Ok(()));
        assert_eq!(
            store.use_once("a", 100, 160, 120, 5).await,
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(store.use_once("b", 100, 170, 120, 5).await, Ok(()));
        assert_eq!(
            store.use_once("c", 100, 170, 120, 5).await,
            Err(ReplayRefusal::Full)
        );
        // Once "a" (exp 160) is past exp + leeway, it is forgotten and room is made.
        assert_eq!(store.use_once("c", 100, 170, 166, 5).await, Ok(()));
        assert_eq!(memory.len(), 2);
        assert_eq!(
            store.use_once("d", 99, 170, 120, 5).await,
            Err(ReplayRefusal::IssuedBeforeStart)
        );
    }

    #[tokio::test]
    async fn an_expired_jti_stays_refused_within_the_leeway() {
        let store = MemoryReplayStore::new(10, 0);
        assert_eq!(store.use_once("a", 1, 100, 50, 5).await, Ok(()));
        // Verifiers accept the token until exp + leeway, so it is remembered that long.
        assert_eq!(
            store.use_once("a", 1, 100, 104, 5).await,
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(store.use_once("a", 1, 100, 106, 5).await, Ok(()));
    }

    #[test]
    fn concurrent_uses_of_one_jti_succeed_exactly_once() {
        let store = Arc::new(MemoryReplayStore::new(100, 0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.check("same", 1, 100, 10, 5))
            })
            .collect();
        let accepted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(Result::is_ok)
            .count();
        assert_eq!(accepted, 1);
    }
}
