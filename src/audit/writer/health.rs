//! Whether the log can be written: healthy, in an outage (writes fail; retried every
//! second, refusals counted for the `resumed` record), or broken (a failed write could
//! not be cut back, so the file's end is unknown and nothing more may be written).
//!
//! Pure: the writer passes the time in and acts on what the transitions return.

use std::time::{Duration, Instant};

use crate::audit::record::{CallerRecord, Entry, Event};

/// How often a log in an outage retries on its own.
pub(super) const RETRY_PERIOD: Duration = Duration::from_secs(1);

/// Writes that failed: since when, how many records were refused, and the last error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outage {
    since: String,
    refused: u64,
    error: String,
    last_attempt: Instant,
}

/// The writer's health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Health {
    /// The last write succeeded.
    #[default]
    Healthy,
    /// The last write failed; the file ends where the last good write did.
    Outage(Outage),
    /// A failed write could not be cut back out: refuse everything until restarted.
    Broken,
}

/// What a failed write changed, for the writer to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// The first failure after a good write: an outage begins.
    Began,
    /// Another failure during the same outage.
    Continued,
    /// The failed write could not be cut back: the log is broken.
    Broke,
}

impl Health {
    /// Whether the log's last write succeeded: what `/readyz` reports.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }

    /// Whether a write may be tried at all.
    pub fn may_write(&self) -> bool {
        !matches!(self, Health::Broken)
    }

    /// The `resumed` record the next batch must carry, if writes have been failing.
    pub fn resumed(&self) -> Option<Entry> {
        let Health::Outage(outage) = self else {
            return None;
        };
        Some(
            Entry::new(Event::Resumed)
                .caller(CallerRecord::internal("audit"))
                .detail(format!(
                    "writes failed from {} until now ({} records refused): {}",
                    outage.since, outage.refused, outage.error
                )),
        )
    }

    /// A write at `now` (wall clock `wall`) failed with `error`, refusing `refused`
    /// records; `cut` says whether the failed bytes were cut back out of the file.
    pub fn failed(
        &mut self,
        refused: u64,
        error: &str,
        cut: bool,
        wall: &str,
        now: Instant,
    ) -> Failure {
        let failure = match self {
            Health::Broken => return Failure::Broke,
            Health::Outage(outage) => {
                outage.refused += refused;
                outage.error = error.to_string();
                outage.last_attempt = now;
                Failure::Continued
            }
            Health::Healthy => {
                *self = Health::Outage(Outage {
                    since: wall.to_string(),
                    refused,
                    error: error.to_string(),
                    last_attempt: now,
                });
                Failure::Began
            }
        };
        if cut {
            failure
        } else {
            *self = Health::Broken;
            Failure::Broke
        }
    }

    /// A write succeeded. Returns whether it ended an outage.
    pub fn written(&mut self) -> bool {
        match self {
            Health::Healthy => false,
            // Nothing is written while broken; stay so.
            Health::Broken => false,
            Health::Outage(_) => {
                *self = Health::Healthy;
                true
            }
        }
    }

    /// When to try a write without waiting for an append: a second after the last
    /// failed one, during an outage.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            Health::Outage(outage) => Some(outage.last_attempt + RETRY_PERIOD),
            Health::Healthy | Health::Broken => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(health: &Health) -> String {
        health.resumed().unwrap().detail.unwrap()
    }

    #[test]
    fn an_outage_counts_refusals_until_a_write_resumes() {
        let t0 = Instant::now();
        let mut health = Health::default();
        assert!(health.is_healthy() && health.resumed().is_none());
        assert_eq!(health.retry_at(), None);

        let first = health.failed(3, "ENOSPC", true, "2026-01-01T00:00:00Z", t0);
        assert_eq!(first, Failure::Began);
        assert!(!health.is_healthy() && health.may_write());
        assert_eq!(health.retry_at(), Some(t0 + RETRY_PERIOD));

        let t1 = t0 + Duration::from_millis(1500);
        let again = health.failed(2, "EFBIG", true, "2026-01-01T00:00:01Z", t1);
        assert_eq!(again, Failure::Continued);
        assert_eq!(health.retry_at(), Some(t1 + RETRY_PERIOD));
        // The outage began at the first failure; the error is the latest.
        assert_eq!(
            detail(&health),
            "writes failed from 2026-01-01T00:00:00Z until now (5 records refused): EFBIG"
        );
        let resumed = health.resumed().unwrap();
        assert_eq!(resumed.event, Event::Resumed);
        assert_eq!(resumed.caller, Some(CallerRecord::internal("audit")));

        assert!(health.written(), "the write ends the outage");
        assert!(health.is_healthy() && health.resumed().is_none());
        assert_eq!(health.retry_at(), None);
        assert!(!health.written(), "a second write ends nothing");
    }

    #[test]
    fn a_retry_that_fails_without_records_keeps_the_count() {
        let t0 = Instant::now();
        let mut health = Health::default();
        health.failed(1, "e", true, "W", t0);
        health.failed(0, "e", true, "W", t0 + RETRY_PERIOD);
        assert!(detail(&health).contains("(1 records refused)"));
    }

    #[test]
    fn a_failed_cut_breaks_the_log_for_good() {
        let t0 = Instant::now();
        let mut health = Health::default();
        assert_eq!(health.failed(1, "e", false, "W", t0), Failure::Broke);
        assert!(!health.is_healthy() && !health.may_write());
        assert_eq!(
            health.retry_at(),
            None,
            "no retries: the file's end is unknown"
        );
        assert!(!health.written());
        assert_eq!(health, Health::Broken);

        let mut outage = Health::default();
        outage.failed(1, "e", true, "W", t0);
        assert_eq!(outage.failed(1, "e", false, "W", t0), Failure::Broke);
        assert!(!outage.may_write());
        assert_eq!(outage.failed(1, "e", true, "W", t0), Failure::Broke);
        assert!(!outage.may_write(), "a later good cut does not unbreak it");
    }
}
