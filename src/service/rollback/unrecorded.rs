//! Token revocations the state store holds and the audit log does not: written with
//! `signetd token revoke` while no daemon ran (a running daemon records each one it
//! learns within a tick, but its first reading of the store is what it starts with, not
//! a change).
//!
//! Each gets the `token_revoke` record (caller `store`) a running daemon would have
//! written. Without it the log would not witness the revocation, and a store restored
//! from a backup older than it would silently drop it, while keys changed in the same
//! way are caught: the `start` record's key list witnesses them.

use super::Witness;
use crate::audit::Entry;
use crate::store::RevokedToken;

/// How the record of a revocation found in the store at start says it came about.
const HOW: &str = "while no daemon recorded it (signetd token revoke while stopped, or another replica), found in the state store at start";

/// The store's revocations (`listed`) still listed at `now` that the witness's log does
/// not record (or records with an earlier `exp`), with the records to write for them.
pub fn records(witness: &Witness, listed: Vec<RevokedToken>, now: u64) -> Vec<Entry> {
    let recorded = witness.recorded_revocations();
    let mut unrecorded: Vec<RevokedToken> = listed
        .into_iter()
        .filter(|r| r.exp >= now)
        .filter(|r| recorded.get(&r.jti).is_none_or(|&exp| exp < r.exp))
        .collect();
    // The order of the store's list is not the order of the revocations.
    unrecorded.sort_by(|a, b| (a.revoked_at, &a.jti).cmp(&(b.revoked_at, &b.jti)));
    unrecorded
        .into_iter()
        .map(|revoked| {
            tracing::warn!(jti = %revoked.jti, "token revoked outside this daemon before it started; recorded now");
            crate::service::record::store_revocation(&revoked, HOW)
        })
        .collect()
}
