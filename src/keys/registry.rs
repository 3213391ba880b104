//! The in-memory view of the keys a running daemon uses: which key each issuer signs
//! with, and the published JWKS, rendered once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::carry::MissingKey;
use super::jwk::JwkSet;
use super::state::{KeyPurpose, KeyState};
use super::store::{Inventory, StoredKey};
use super::verifying::VerifyingKey;
use crate::config::IssuerConfig;

/// A response body rendered once, with its strong `ETag`.
#[derive(Clone, Debug)]
pub struct Published {
    /// The JSON body.
    pub body: Arc<[u8]>,
    /// The quoted ETag (a SHA-256 prefix of the body).
    pub etag: String,
}

impl Published {
    /// Renders `value` as JSON, with its ETag.
    pub fn render<T: serde::Serialize>(value: &T) -> Self {
        let body = serde_json::to_vec(value).expect("published documents always serialize");
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", crate::util::b64(&digest[..18]));
        Published {
            body: body.into(),
            etag,
        }
    }
}

/// Keys by kid, the active key of each issuer, and the JWKS.
#[derive(Debug)]
pub struct KeyRegistry {
    ca_chain: Vec<Vec<u8>>,
    /// The `keys` part of the revocation list.
    revoked_keys: serde_json::Value,
    by_kid: HashMap<String, Arc<StoredKey>>,
    /// Each key of `by_kid` whose public key parses, parsed once here rather than at
    /// every verification.
    verifying: HashMap<String, VerifyingKey>,
    active: HashMap<String, Arc<StoredKey>>,
    jwks: Published,
    /// Keys published from the last good view that the token no longer shows.
    missing: Vec<MissingKey>,
}

impl KeyRegistry {
    /// Builds the registry from the token's inventory. Keys of issuers that are not in
    /// the config are kept (retrievable by kid) but neither used nor published; keys of
    /// raw-signing issuers are used but kept out of the JWKS, so no JWT verifier ever
    /// trusts a key that signs caller-chosen bytes.
    ///
    /// `ca_chain` is the attestation CA's certificate and the chain above it; every JWK
    /// carries it after its own certificate in `x5c`.
    pub fn build(
        inventory: Inventory,
        issuers: &BTreeMap<String, IssuerConfig>,
        ca_chain: Vec<Vec<u8>>,
    ) -> Self {
        let mut by_kid = HashMap::new();
        let mut active: HashMap<String, Arc<StoredKey>> = HashMap::new();
        let mut jwks = JwkSet::default();
        let mut conflicted = Vec::new();
        for key in inventory.keys {
            let key = Arc::new(key);
            let configured = issuers.get(&key.issuer);
            let jwt_key = key.purpose == KeyPurpose::Jwt && configured.is_some_and(|i| !i.raw_sign);
            if let Some(issuer) = configured.filter(|_| jwt_key && key.state.is_published()) {
                // The name the issuer's tokens carry: a verifier matching alg exactly
                // finds the key.
                let mut jwk = key.jwk(&ca_chain);
                jwk.alg = issuer.jws_alg(key.algorithm).to_string();
                jwks.keys.push(jwk);
            }
            if let Some(issuer) = configured.filter(|_| key.state == KeyState::Active) {
                if issuer.algorithm != key.algorithm {
                    tracing::warn!(
                        kid = %key.kid, issuer = %key.issuer,
                        "active key is {} but the issuer is configured for {}; it signs as {} until rotated",
                        key.algorithm, issuer.algorithm, key.algorithm
                    );
                }
                if let Some(other) = active.insert(key.issuer.clone(), key.clone()) {
                    conflicted.push((key.issuer.clone(), other.kid.clone(), key.kid.clone()));
                }
            }
            by_kid.insert(key.kid.clone(), key);
        }
        // Two active keys mean the token was changed behind signetd's back: sign with
        // neither rather than guess, and say so.
        for (issuer, one, other) in conflicted {
            active.remove(&issuer);
            tracing::error!(%issuer, %one, %other, "issuer has two active keys; it will not sign until one is retired");
        }
        let verifying = by_kid
            .iter()
            .filter_map(|(kid, key)| {
                let parsed = VerifyingKey::new(key.algorithm, &key.public_key).ok()?;
                Some((kid.clone(), parsed))
            })
            .collect();
        let mut revoked_keys: Vec<&Arc<StoredKey>> = by_kid
            .values()
            .filter(|k| k.state == KeyState::Revoked)
            .collect();
        revoked_keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        let revoked_keys = revoked_keys
            .into_iter()
            .map(|k| serde_json::json!({"kid": k.kid, "issuer": k.issuer, "revoked_at": k.changed_at}))
            .collect();
        KeyRegistry {
            ca_chain,
            revoked_keys,
            by_kid,
            verifying,
            active,
            jwks: Published::render(&jwks),
            missing: Vec::new(),
        }
    }

    /// Marks `missing` keys (carried from the last good view, see [`super::carry`]):
    /// they stay published and retrievable by kid, but no issuer signs with one.
    pub fn with_missing(mut self, missing: Vec<MissingKey>) -> Self {
        self.active
            .retain(|_, key| !missing.iter().any(|m| m.kid == key.kid));
        self.missing = missing;
        self
    }

    /// Bridges a rotation seen half done: an issuer whose key was active in `previous`
    /// and is now retired, with no active key yet (the CLI retired it while its
    /// successor was pending, and this reading came before the lifecycle activated
    /// the successor; the lifecycle itself makes both moves in one transaction),
    /// keeps signing with the old key until the next reading. Its archival already
    /// allows for that: a retired key may sign until the next reload (see the lifecycle's
    /// grace). Only a key that was active in `previous` is kept, so a bridge lasts one
    /// reading at most.
    pub fn bridging(mut self, previous: &KeyRegistry) -> Self {
        for (issuer, old) in &previous.active {
            if self.active.contains_key(issuer) || old.state != KeyState::Active {
                continue;
            }
            if let Some(now) = self
                .by_kid
                .get(&old.kid)
                .filter(|k| k.state == KeyState::Retired && !self.is_missing(&k.kid))
            {
                tracing::info!(%issuer, kid = %now.kid, "key retired and no successor active yet: it signs until the next reading");
                self.active.insert(issuer.clone(), now.clone());
            }
        }
        self
    }

    /// Keys the token no longer shows, still published until their tokens expire.
    pub fn missing(&self) -> &[MissingKey] {
        &self.missing
    }

    /// Whether `kid` is one of [`KeyRegistry::missing`].
    pub fn is_missing(&self, kid: &str) -> bool {
        self.missing.iter().any(|m| m.kid == kid)
    }

    /// The key `issuer` signs with now.
    pub fn active(&self, issuer: &str) -> Option<&Arc<StoredKey>> {
        self.active.get(issuer)
    }

    /// A key by id, whatever its state.
    pub fn get(&self, kid: &str) -> Option<&Arc<StoredKey>> {
        self.by_kid.get(kid)
    }

    /// The key `kid`, parsed for verifying signatures: `None` when there is no such key,
    /// or its public key does not parse.
    pub fn verifying_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.verifying.get(kid).copied()
    }

    /// Every key, ordered by issuer and creation time.
    pub fn all(&self) -> Vec<&Arc<StoredKey>> {
        let mut keys: Vec<_> = self.by_kid.values().collect();
        keys.sort_by(|a, b| {
            (&a.issuer, a.created_at, &a.kid).cmp(&(&b.issuer, b.created_at, &b.kid))
        });
        keys
    }

    /// The attestation CA's certificate and the chain above it (DER).
    pub fn ca_chain(&self) -> &[Vec<u8>] {
        &self.ca_chain
    }

    /// The revoked keys, as the revocation list's `keys` shows them (tokens are in
    /// [`super::RevokedTokens`]).
    pub fn revoked_keys(&self) -> &serde_json::Value {
        &self.revoked_keys
    }

    /// The rendered JWKS.
    pub fn jwks(&self) -> &Published {
        &self.jwks
    }

    /// Sets the `signetd_keys` gauge from this registry: how many keys each of
    /// `issuers` (the configured ones, so labels stay bounded) has in each state. Zeros
    /// are set too, so a state its last key left reads 0 rather than the old count.
    pub fn count_keys<'a>(&self, issuers: impl IntoIterator<Item = &'a String>) {
        const STATES: [KeyState; 5] = [
            KeyState::Pending,
            KeyState::Active,
            KeyState::Retired,
            KeyState::Archived,
            KeyState::Revoked,
        ];
        for issuer in issuers {
            let mut counts = [0usize; STATES.len()];
            for key in self.by_kid.values().filter(|k| &k.issuer == issuer) {
                if let Some(i) = STATES.iter().position(|&s| s == key.state) {
                    counts[i] += 1;
                }
            }
            for (state, count) in STATES.iter().zip(counts) {
                crate::telemetry::keys(issuer, &state.to_string(), count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Algorithm;

    fn stored(kid: &str, algorithm: Algorithm, public_key: Vec<u8>) -> StoredKey {
        StoredKey::for_tests(kid, "demo", algorithm, KeyState::Active, public_key)
    }

    #[test]
    fn keys_are_parsed_for_verifying_once_and_a_key_that_does_not_parse_verifies_nothing() {
        use ed25519_dalek::Signer as _;
        let secret = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let inventory = Inventory {
            keys: vec![
                stored(
                    "good",
                    Algorithm::EdDsa,
                    secret.verifying_key().as_bytes().to_vec(),
                ),
                stored("bad", Algorithm::Es256, vec![4; 65]),
            ],
            ..Inventory::default()
        };
        let registry = KeyRegistry::build(inventory, &BTreeMap::new(), Vec::new());
        let good = registry.verifying_key("good").unwrap();
        assert_eq!(good.algorithm(), Algorithm::EdDsa);
        good.verify(b"m", &secret.sign(b"m").to_bytes()).unwrap();
        assert!(registry.get("bad").is_some());
        assert!(registry.verifying_key("bad").is_none());
        assert!(registry.verifying_key("absent").is_none());
    }
}
