//! The lifecycle lease: of several replicas sharing one state store, the one holding it
//! applies the lifecycle's transitions; the others only follow the store. A replica
//! that dies stops renewing it, and another takes it over once it expires (see
//! [`crate::store::LeaseStore`]).

use rand::RngCore;

use super::Service;
use crate::config::Config;

/// The lease the lifecycle's transitions are applied under.
pub const LIFECYCLE_LEASE: &str = "lifecycle";

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
    /// Takes or renews the lifecycle lease at `now`; true if this daemon holds it. A
    /// store that cannot be reached holds no lease: no transition is applied until it is
    /// back (and another replica that can reach it takes over).
    pub async fn hold_lifecycle_lease(&self, now: u64) -> bool {
        let seconds = LEASE_TICKS * self.config.lifecycle.tick_seconds;
        match self
            .leases
            .hold(LIFECYCLE_LEASE, &self.holder, seconds, now)
            .await
        {
            Ok(held) => {
                if !held {
                    tracing::debug!(
                        holder = %self.holder,
                        "another replica holds the lifecycle lease; following the store"
                    );
                }
                held
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take the lifecycle lease; key transitions wait until the state store answers");
                false
            }
        }
    }

    /// Gives up the leases this daemon holds, at stop, so another replica takes over at
    /// once.
    pub async fn release_leases(&self) {
        if let Err(e) = self.leases.release(LIFECYCLE_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot release the lifecycle lease; another replica takes it over when it expires");
        }
    }

    /// Who this daemon is as a lease holder.
    pub fn lease_holder(&self) -> &str {
        &self.holder
    }
}
