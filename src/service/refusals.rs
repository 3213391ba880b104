//! Refused requests in the audit log, kept from becoming a lever on it.
//!
//! - Refusals of principals some list names ([`Policy::names`]) are recorded one by
//!   one, as before: an issuer's mistakes are worth a record each.
//! - Refusals of everyone else (anonymous TCP peers, uids and certificates no list
//!   names) are counted in memory ([`RefusalAggregator`]) and written when their
//!   interval closes, one `refused_aggregate` record per caller, with at most
//!   `[audit] refusal_callers + 1` records per interval. They never cost a write each.
//! - No refusal record, of either kind, is written while the free space under the log
//!   is below `[audit] reserve_bytes`: those are dropped, counted and logged, and the
//!   space stays for signing records, which are never dropped.
//!
//! [`Policy::names`]: crate::policy::Policy::names

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Service;
use crate::audit::aggregate::{RefusalAggregator, caller_key};
use crate::audit::{Entry, Event};
use crate::config::AuditConfig;
use crate::identity::Principal;
use crate::util::unix_now;

/// How often a closed interval is looked for; intervals are whole seconds.
const TICK: Duration = Duration::from_secs(1);
/// At most one warning about dropped refusal records this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The service's refusal bookkeeping.
#[derive(Debug)]
pub(super) struct Refusals {
    aggregator: Mutex<RefusalAggregator>,
    /// Refusal records dropped because free space was below the reserve.
    dropped: AtomicU64,
    /// When dropping was last logged.
    warned: Mutex<Option<Instant>>,
}

impl Refusals {
    pub(super) fn new(audit: &AuditConfig) -> Self {
        Refusals {
            aggregator: Mutex::new(RefusalAggregator::new(
                audit.refusal_interval_seconds,
                audit.refusal_callers,
            )),
            dropped: AtomicU64::new(0),
            warned: Mutex::new(None),
        }
    }

    fn aggregator(&self) -> std::sync::MutexGuard<'_, RefusalAggregator> {
        self.aggregator.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Service {
    /// Records a refused request: `request` is its method and path, `code` and
    /// `message` what the client got. A named caller's refusal is written now; anyone
    /// else's is counted, and written with the others of its interval.
    pub async fn note_refusal(
        &self,
        caller: &Principal,
        request: String,
        code: &str,
        message: &str,
    ) {
        if self.policy().names(caller) {
            crate::telemetry::audit_refusal(false);
            if self.admit_refusals(1) {
                let mut entry = Entry::new(Event::Refused)
                    .caller(caller)
                    .refused(code, message);
                entry.request = Some(request);
                self.note(entry).await;
            }
            return;
        }
        let closed =
            self.refusals
                .aggregator()
                .note(caller_key(caller), &request, code, unix_now());
        self.append_refusals(closed).await;
    }

    /// Writes the `refused_aggregate` records of the interval that closed before `now`,
    /// or (`all`, at stop) of the one still open.
    pub async fn flush_refusals(&self, now: u64, all: bool) {
        let entries = {
            let mut aggregator = self.refusals.aggregator();
            if all {
                aggregator.take_all(now)
            } else {
                aggregator.take_closed(now)
            }
        };
        self.append_refusals(entries).await;
    }

    /// Closes intervals as they end until `stop`, then writes the last one. The daemon
    /// runs this beside the server and awaits it before the log's `stop` record.
    pub async fn write_refusals_until(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.flush_refusals(unix_now(), false).await,
            }
        }
        self.flush_refusals(unix_now(), true).await;
    }

    /// Refusal records dropped since start because the free space under the log was
    /// below `[audit] reserve_bytes`.
    pub fn refusal_records_dropped(&self) -> u64 {
        self.refusals.dropped.load(Ordering::Relaxed)
    }

    /// Appends `entries` together, as one group commit rather than a write each.
    async fn append_refusals(&self, entries: Vec<Entry>) {
        if entries.is_empty() || !self.admit_refusals(entries.len() as u64) {
            return;
        }
        let mut appends = tokio::task::JoinSet::new();
        for entry in entries {
            let audit = self.audit.clone();
            appends.spawn(async move { audit.append(entry, None).await });
        }
        while let Some(appended) = appends.join_next().await {
            match appended {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "refusal record not written"),
                Err(e) => tracing::warn!(error = %e, "refusal record not written"),
            }
        }
    }

    /// Whether `records` refusal records may be written; if not, counts them as
    /// dropped and says so, at most once a minute.
    fn admit_refusals(&self, records: u64) -> bool {
        if self.audit.admits_refusals(records) {
            return true;
        }
        let refusals = &self.refusals;
        let dropped = refusals.dropped.fetch_add(records, Ordering::Relaxed) + records;
        let mut warned = refusals.warned.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if warned.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY) {
            *warned = Some(now);
            tracing::warn!(
                dropped,
                reserve_bytes = self.config().audit.reserve_bytes,
                "free space under the audit log is below [audit] reserve_bytes: refusal records are dropped (signing records are still written)"
            );
        }
        false
    }
}
