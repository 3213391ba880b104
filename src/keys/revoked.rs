//! The published view of revoked tokens, kept apart from the key registry.
//!
//! Keys change a few times a day; token revocations may come by the thousand. So a
//! revocation through the API is one insert here, not a re-reading of the token and a
//! rebuild of the registry, and the list verifiers fetch is rendered once per change,
//! when it is first asked for. Each lifecycle tick merges the store's list in, which is
//! how revocations made by the CLI or by another replica arrive.
//!
//! Revocations only ever accumulate until they expire, so merging is a union: a reading
//! that started before an insert cannot take that insert away again.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

use super::registry::Published;
use crate::store::{RevocationStore, RevokedToken, StoreError};

/// Revoked tokens as of the last merge and insert, and their rendered list.
#[derive(Debug, Default)]
pub struct RevokedTokens {
    by_jti: RwLock<Tokens>,
    /// The last rendered list, with the version and key-revocation part it rendered.
    rendered: Mutex<Option<Rendered>>,
}

#[derive(Debug, Default)]
struct Tokens {
    by_jti: HashMap<String, RevokedToken>,
    /// Bumped at every change, so a rendering knows it is stale.
    version: u64,
    /// Where the next reading of the store starts ([`RevocationStore::changed_since`]);
    /// none before the first.
    cursor: Option<u64>,
}

#[derive(Debug)]
struct Rendered {
    version: u64,
    keys: serde_json::Value,
    published: Published,
}

impl RevokedTokens {
    /// Whether a token with this `jti` is revoked.
    pub fn contains(&self, jti: &str) -> bool {
        self.read().by_jti.contains_key(jti)
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.read().by_jti.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one revocation (one made through this daemon); a jti revoked again keeps the
    /// later `exp`.
    pub fn insert(&self, revoked: RevokedToken) {
        let mut tokens = self.write();
        upsert(&mut tokens.by_jti, revoked);
        tokens.version += 1;
    }

    /// Reads what changed in `store` since the last reading, merges it in, and forgets
    /// what expired before `expired_before`. Returns the revocations this view learned
    /// from the store (new, or listed longer than before): made outside this daemon,
    /// by `signetd token revoke` or another replica, so the daemon can record them.
    /// The first reading returns none: it is what the daemon starts with, not a
    /// change. On failure the view stays as it was.
    pub async fn refresh(
        &self,
        store: &dyn RevocationStore,
        expired_before: u64,
    ) -> Result<Vec<RevokedToken>, StoreError> {
        let cursor = self.read().cursor;
        let (changed, next) = store.changed_since(cursor).await?;
        let mut tokens = self.write();
        let before = tokens.by_jti.len();
        let changes = changed.len();
        let first = tokens.cursor.is_none();
        let mut learned = Vec::new();
        for revoked in changed {
            if upsert(&mut tokens.by_jti, revoked.clone()) && !first {
                learned.push(revoked);
            }
        }
        tokens.by_jti.retain(|_, r| r.exp >= expired_before);
        // Two refreshes may overlap: the cursor only moves forward.
        tokens.cursor = tokens.cursor.max(Some(next));
        if changes > 0 || tokens.by_jti.len() != before {
            tokens.version += 1;
        }
        Ok(learned)
    }

    /// The revocation list, `{"keys":[...],"tokens":[...]}`, with `revoked_keys` as its
    /// `keys`: rendered again only if the tokens or the keys changed since last time.
    pub fn published(&self, revoked_keys: serde_json::Value) -> Published {
        let (version, tokens) = {
            let tokens = self.read();
            let version = tokens.version;
            let rendered = self.rendered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = rendered
                .as_ref()
                .filter(|r| r.version == version && r.keys == revoked_keys)
            {
                return r.published.clone();
            }
            drop(rendered);
            let mut list: Vec<RevokedToken> = tokens.by_jti.values().cloned().collect();
            // A stable order, so the ETag changes only when the content does.
            list.sort_unstable_by(|a, b| a.jti.cmp(&b.jti));
            (version, list)
        };
        let published =
            Published::render(&serde_json::json!({"keys": revoked_keys, "tokens": tokens}));
        *self.rendered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Rendered {
            version,
            keys: revoked_keys,
            published: published.clone(),
        });
        published
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        self.by_jti.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tokens> {
        self.by_jti.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Keeps the later of two revocations of one jti; true if `revoked` was new or later.
fn upsert(by_jti: &mut HashMap<String, RevokedToken>, revoked: RevokedToken) -> bool {
    match by_jti.get_mut(&revoked.jti) {
        Some(held) if held.exp >= revoked.exp => false,
        Some(held) => {
            *held = revoked;
            true
        }
        None => {
            by_jti.insert(revoked.jti.clone(), revoked);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::util::BoxFuture;

    fn revoked(jti: &str, exp: u64) -> RevokedToken {
        RevokedToken {
            jti: jti.to_string(),
            exp,
            revoked_at: 1,
        }
    }

    /// A fake of the store port: revocations numbered by change, as the SQL store
    /// numbers them.
    #[derive(Default)]
    struct Numbered(Mutex<Vec<(u64, RevokedToken)>>);

    impl Numbered {
        fn add(&self, revoked: RevokedToken) {
            let mut rows = self.0.lock().unwrap();
            let change = rows.len() as u64 + 1;
            rows.push((change, revoked));
        }
    }

    impl RevocationStore for Numbered {
        fn revoke<'a>(
            &'a self,
            revoked: &'a RevokedToken,
        ) -> BoxFuture<'a, Result<RevokedToken, StoreError>> {
            self.add(revoked.clone());
            Box::pin(async move { Ok(revoked.clone()) })
        }

        fn list(&self) -> BoxFuture<'_, Result<Vec<RevokedToken>, StoreError>> {
            let rows = self
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|(_, r)| r.clone())
                .collect();
            Box::pin(async move { Ok(rows) })
        }

        fn changed_since(
            &self,
            cursor: Option<u64>,
        ) -> BoxFuture<'_, Result<(Vec<RevokedToken>, u64), StoreError>> {
            let rows = self.0.lock().unwrap();
            let after = cursor.unwrap_or(0);
            let changed: Vec<RevokedToken> = rows
                .iter()
                .filter(|(c, _)| *c > after)
                .map(|(_, r)| r.clone())
                .collect();
            let next = rows.last().map_or(after, |(c, _)| *c);
            Box::pin(async move { Ok((changed, next)) })
        }

        fn prune(&self, _: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
            Box::pin(async { Ok(0) })
        }
    }

    fn tokens(published: &Published) -> Vec<(String, u64)> {
        let value: serde_json::Value = serde_json::from_slice(&published.body).unwrap();
        value["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["jti"].as_str().unwrap().to_string(),
                    t["exp"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refresh_reads_only_what_changed_and_never_takes_an_insert_away() {
        let store = Numbered::default();
        store.add(revoked("old", 500));
        let view = RevokedTokens::default();
        let at_start = view.refresh(&store, 100).await.unwrap();
        assert!(at_start.is_empty(), "the first reading is no change");
        // Revoked through this daemon: in the view before the next refresh.
        view.insert(revoked("new", 500));
        // Revoked elsewhere (the CLI, another replica): arrives with the next refresh.
        store.add(revoked("elsewhere", 500));
        let cursor = view.read().cursor;
        let (changed, _) = store.changed_since(cursor).await.unwrap();
        assert_eq!(
            changed,
            [revoked("elsewhere", 500)],
            "only the change is read"
        );
        let learned = view.refresh(&store, 100).await.unwrap();
        assert_eq!(learned, [revoked("elsewhere", 500)], "what to record");
        assert!(view.contains("new") && view.contains("old") && view.contains("elsewhere"));
        assert_eq!(view.len(), 3);
    }

    #[tokio::test]
    async fn expired_revocations_are_forgotten_and_the_later_exp_wins() {
        let store = Numbered::default();
        store.add(revoked("a", 50));
        store.add(revoked("b", 500));
        let view = RevokedTokens::default();
        view.refresh(&store, 0).await.unwrap();
        view.insert(revoked("b", 400));
        view.insert(revoked("c", 100));
        view.insert(revoked("c", 300));
        view.refresh(&store, 60).await.unwrap();
        let list = tokens(&view.published(serde_json::json!([])));
        assert_eq!(list, [("b".to_string(), 500), ("c".to_string(), 300)]);
    }

    #[test]
    fn the_list_is_rendered_again_only_after_a_change() {
        let view = RevokedTokens::default();
        view.insert(revoked("a", 500));
        let keys = serde_json::json!([{"kid": "k"}]);
        let first = view.published(keys.clone());
        assert!(std::sync::Arc::ptr_eq(
            &first.body,
            &view.published(keys.clone()).body
        ));
        let other_keys = view.published(serde_json::json!([]));
        assert_ne!(first.etag, other_keys.etag);
        view.insert(revoked("b", 500));
        let changed = view.published(keys);
        assert_ne!(first.etag, changed.etag);
        assert_eq!(tokens(&changed).len(), 2);
    }
}
