//! The state room: what signetd remembers besides its private keys, behind ports.
//!
//! [`ReplayStore`] remembers the `jti`s consumed by single-use verification (a use is
//! decided at once and made durable by a [`Durable`] the caller awaits with the use's
//! audit record; SQLite's is a shared WAL sync, `wal_sync`);
//! [`RevocationStore`] keeps revoked tokens until they expire; [`KeyMetadata`] keeps what
//! signetd knows about each key (issuer, purpose, state and its history, attestation
//! certificate) and the attestation CA's chain, while the token keeps the key pairs. The
//! service holds each as a trait object built by `service::wiring`, so another
//! implementation (a database shared by replicas) replaces one file, not the callers.
//!
//! The daemon's implementation of all of them is [`SqlStore`], an SQL database (SQLite
//! by default, or PostgreSQL; see docs/state.md); it also holds the [`LeaseStore`] that
//! replicas sharing it take turns by, and pushes changes to them ([`ChangeFeed`]). Key
//! metadata that versions before the store kept as token objects is imported once
//! ([`SqlStore::import_token_keys`]), as are token revocations
//! ([`SqlStore::import_token_revocations`]).

mod keys;
mod lease;
mod notify;
mod sql;
#[cfg(test)]
pub(crate) mod test_db;
mod token_keys;
mod token_revocations;
mod wal_sync;

use serde::{Deserialize, Serialize};

pub use keys::{KeyImport, KeyMetadata, KeyRow, KeyWriteError, StateChange, StateMove};
pub use notify::PgChangeFeed;
pub use sql::{SqlStore, StoreStatus};
pub use token_keys::destroy_leftovers as destroy_token_key_leftovers;
pub use token_revocations::REVOKED_PREFIX;

use crate::hsm::HsmError;
use crate::util::BoxFuture;

/// Why a single-use check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// The jti was verified before.
    Replayed,
    /// The store cannot be reached: single use cannot be promised, so the token is
    /// refused (`503 state_unavailable`).
    Unavailable,
}

/// A first use the store has decided, becoming durable: it completes once the use
/// survives a power loss, and the caller awaits it before answering, alongside the
/// use's audit record (two syncs at once rather than one after the other).
pub type Durable = BoxFuture<'static, Result<(), StoreError>>;

/// A [`Durable`] that is complete already: the use was committed durably.
pub fn already_durable() -> Durable {
    Box::pin(std::future::ready(Ok(())))
}

/// Remembers which single-use tokens were consumed.
pub trait ReplayStore: Send + Sync {
    /// Records `jti` as used, or says why it may not be used. `exp` bounds how long it
    /// is remembered (plus `leeway`, since verifiers accept the token that much
    /// longer). Of concurrent calls with one `jti`, exactly one succeeds: decided when
    /// this returns, and remembered after a power loss once its [`Durable`] completes.
    fn use_once<'a>(
        &'a self,
        jti: &'a str,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> BoxFuture<'a, Result<Durable, ReplayRefusal>>;

    /// How many used jtis are remembered and still unexpired at `now`: one indexed
    /// count, for the metrics' gauge at each lifecycle tick.
    fn live(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Puts back uses the store has forgotten (it was restored from an older backup):
    /// each of `used` still remembered past `now` that the store does not remember is
    /// recorded again, durably, and its jti pushed onto `put_back`. A failure may come
    /// after some were put back (those are in `put_back` then); calling again finishes
    /// the job.
    fn put_back<'a>(
        &'a self,
        used: &'a [UsedJti],
        now: u64,
        put_back: &'a mut Vec<String>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A single use as [`ReplayStore::put_back`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedJti {
    /// The token's `jti`.
    pub jti: String,
    /// Until when its use is remembered: the token's `exp` plus the verifiers' leeway.
    pub until: u64,
}

/// A revoked token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RevokedToken {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`: the revocation is listed until then.
    pub exp: u64,
    /// When it was revoked, seconds since the epoch.
    pub revoked_at: u64,
}

/// The state store failed; the text is for the log.
#[derive(Clone, Debug, thiserror::Error)]
#[error("the state store failed: {0}")]
pub struct StoreError(pub String);

impl From<HsmError> for StoreError {
    fn from(e: HsmError) -> Self {
        StoreError(e.to_string())
    }
}

/// Keeps revoked tokens until they expire.
pub trait RevocationStore: Send + Sync {
    /// Records a revocation. Revoking a jti again keeps one record with the later
    /// `exp`; returns what is stored.
    fn revoke<'a>(
        &'a self,
        revoked: &'a RevokedToken,
    ) -> BoxFuture<'a, Result<RevokedToken, StoreError>>;

    /// Every stored revocation.
    fn list(&self) -> BoxFuture<'_, Result<Vec<RevokedToken>, StoreError>>;

    /// The revocations recorded or changed after `cursor` (all of them for `None`), and
    /// the cursor to pass next time: how a running daemon follows the store without
    /// reading the whole list at every tick.
    fn changed_since(
        &self,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<(Vec<RevokedToken>, u64), StoreError>>;

    /// Forgets revocations of tokens that expired before `before`; returns how many.
    fn prune(&self, before: u64) -> BoxFuture<'_, Result<usize, StoreError>>;
}

/// Leases: which of several replicas sharing the store does a job meant for one.
pub trait LeaseStore: Send + Sync {
    /// Takes or renews lease `name` for `holder` for `seconds` from `now`; true if
    /// `holder` holds it now. Fails if the store cannot be reached (then nobody should
    /// assume they hold it).
    fn hold<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        seconds: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives lease `name` up if `holder` holds it, so another replica need not wait for
    /// it to expire.
    fn release<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Changes to shared state made by others (another replica, the CLI), as they commit.
pub trait ChangeFeed: Send + Sync {
    /// Waits for the next change (a burst counts as one). Fails if the feed cannot be
    /// read; the caller waits before asking again, and polls meanwhile.
    fn changed(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
