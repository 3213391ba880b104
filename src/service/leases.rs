//! Lifecycle leases: of several replicas sharing one state store, the one holding an
//! issuer's lease applies that issuer's lifecycle transitions; the others only follow
//! the store. A replica that dies stops renewing its leases, and another takes each over
//! once it expires (see [`crate::store::LeaseStore`]).
//!
//! One lease per issuer, not one for the whole lifecycle: replicas whose configs differ
//! for a while (an issuer added to one before the others, in a rolling change) each
//! apply the transitions of the issuers they know, and none is left waiting for a
//! holder that does not know it.

use rand::RngCore;

use std::sync::atomic::Ordering;

use super::Service;
use crate::config::Config;

/// The lease `issuer`'s lifecycle transitions are applied under.
pub fn lifecycle_lease(issuer: &str) -> String {
    format!("lifecycle/{issuer}")
}

/// How many ticks a lease lasts without renewal: the holder renews it at every tick,
/// so a late tick or two do not hand it over, and a dead holder's lease is taken over
/// within this many ticks.
const LEASE_TICKS: u64 = 3;

/// This daemon as a lease holder: `[replica] name` (else the host name), the pid, and a
/// random part, so that a restarted daemon does not take over its predecessor's lease
/// before it expires without knowing it.
pub(super) fn lease_holder(config: &Config) -> String {
    let name = config.replica.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "signetd".to_string())
    });
    let mut random = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut random);
    format!(
        "{name}/{}/{}",
        std::process::id(),
        crate::util::hex(&random)
    )
}

impl Service {
    /// Takes or renews `issuer`'s lifecycle lease at `now`; true if this daemon holds
    /// it. A store that cannot be reached holds no lease: no transition is applied until
    /// it is back (and another replica that can reach it takes over).
    pub async fn hold_lifecycle_lease(&self, issuer: &str, now: u64) -> bool {
        let seconds = LEASE_TICKS * self.config().lifecycle.tick_seconds;
        let lease = lifecycle_lease(issuer);
        match self.leases.hold(&lease, &self.holder, seconds, now).await {
            Ok(held) => {
                if !held {
                    tracing::debug!(
                        %issuer,
                        holder = %self.holder,
                        "another replica holds the issuer's lifecycle lease; following the store"
                    );
                    self.warn_of_an_unnamed_second_instance(issuer);
                }
                held
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take the lifecycle lease; key transitions wait until the state store answers");
                false
            }
        }
    }

    /// Another daemon applies this store's lifecycle, and this one was not configured
    /// as a replica: said once, loudly, since two daemons started by mistake on one
    /// token and store would otherwise run side by side unnoticed.
    fn warn_of_an_unnamed_second_instance(&self, issuer: &str) {
        if self.config().replica.name.is_some()
            || self.second_instance_warned.swap(true, Ordering::Relaxed)
        {
            return;
        }
        tracing::error!(
            %issuer,
            "another signetd holds this issuer's lifecycle lease on the same state store, and this daemon has no [replica] name: if they are not meant to be replicas, stop one; if they are, give each a [replica] name (docs/operations.md, \"Several instances\")"
        );
    }

    /// Gives up the leases this daemon holds, at stop, so another replica takes over at
    /// once.
    pub async fn release_leases(&self) {
        for issuer in self.config().issuers.keys() {
            let lease = lifecycle_lease(issuer);
            if let Err(e) = self.leases.release(&lease, &self.holder).await {
                tracing::warn!(%issuer, error = %e, "cannot release the lifecycle lease; another replica takes it over when it expires");
            }
        }
    }

    /// Who this daemon is as a lease holder.
    pub fn lease_holder(&self) -> &str {
        &self.holder
    }
}
