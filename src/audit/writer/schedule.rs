//! When checkpoints are due: every `checkpoint_every` records, every
//! `checkpoint_seconds` while records arrive, and whenever asked (the daemon asks at
//! start and the close asks at stop). After a failed signature, unasked checkpoints
//! wait a few seconds, so a token that cannot sign is not asked in every batch.
//!
//! Pure: the writer passes the time and the count of unsigned records in.

use std::time::{Duration, Instant};

/// How long after a failed checkpoint signature the next unasked one is tried.
pub(super) const SIGN_RETRY: Duration = Duration::from_secs(5);

/// The configured checkpoint cadence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::audit) struct Cadence {
    /// Sign once this many records are unsigned.
    pub every: u64,
    /// Sign once the last checkpoint is this old and records are unsigned.
    pub period: Duration,
}

/// The checkpoint schedule.
#[derive(Clone, Debug)]
pub(super) struct Scheduler {
    cadence: Cadence,
    /// When the last durable checkpoint was signed (or the writer started).
    last: Instant,
    /// When a checkpoint in the batch being formatted was signed.
    pending: Option<Instant>,
    /// No unasked checkpoint before this: the last signature failed.
    retry_at: Instant,
}

impl Scheduler {
    /// A schedule starting at `now`.
    pub fn new(cadence: Cadence, now: Instant) -> Self {
        Scheduler {
            cadence,
            last: now,
            pending: None,
            retry_at: now,
        }
    }

    fn last(&self) -> Instant {
        self.pending.unwrap_or(self.last)
    }

    fn backing_off(&self, now: Instant) -> bool {
        now < self.retry_at
    }

    /// Whether a checkpoint goes right after a record that leaves `unsigned` records
    /// unsigned.
    pub fn after_record(&self, unsigned: u64, now: Instant) -> bool {
        unsigned >= self.cadence.every && !self.backing_off(now)
    }

    /// Whether a checkpoint ends a batch that leaves `unsigned` records unsigned;
    /// `asked` when a caller asked for one (start, stop, [`crate::audit::AuditLog::checkpoint`]).
    pub fn at_end(&self, unsigned: u64, asked: bool, now: Instant) -> bool {
        if unsigned == 0 {
            return false;
        }
        if asked {
            return true;
        }
        let due = unsigned >= self.cadence.every
            || now.saturating_duration_since(self.last()) >= self.cadence.period;
        due && !self.backing_off(now)
    }

    /// When the writer must wake to sign without new records, if `unsigned` records
    /// are waiting.
    pub fn wake_at(&self, unsigned: u64) -> Option<Instant> {
        (unsigned > 0).then(|| (self.last() + self.cadence.period).max(self.retry_at))
    }

    /// A checkpoint was signed at `now` into the batch being formatted.
    pub fn signed(&mut self, now: Instant) {
        self.pending = Some(now);
    }

    /// Signing failed at `now`: back off.
    pub fn sign_failed(&mut self, now: Instant) {
        self.retry_at = now + SIGN_RETRY;
    }

    /// The batch is durable, with the checkpoints signed into it.
    pub fn written(&mut self) {
        self.last = self.last();
        self.pending = None;
    }

    /// The batch was lost, with the checkpoints signed into it.
    pub fn discard(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(60);

    fn scheduler(t0: Instant) -> Scheduler {
        Scheduler::new(
            Cadence {
                every: 7,
                period: PERIOD,
            },
            t0,
        )
    }

    #[test]
    fn every_so_many_records() {
        let t0 = Instant::now();
        let s = scheduler(t0);
        assert!(!s.after_record(6, t0));
        assert!(s.after_record(7, t0));
        assert!(s.after_record(8, t0), "a missed one is still due");
        assert!(!s.at_end(6, false, t0));
        assert!(s.at_end(7, false, t0));
    }

    #[test]
    fn every_period_while_records_arrive() {
        let t0 = Instant::now();
        let mut s = scheduler(t0);
        assert!(!s.at_end(1, false, t0 + PERIOD - Duration::from_millis(1)));
        assert!(s.at_end(1, false, t0 + PERIOD));
        assert!(
            !s.at_end(0, false, t0 + 10 * PERIOD),
            "nothing to sign, nothing due"
        );
        assert_eq!(s.wake_at(0), None, "an idle log sleeps");
        assert_eq!(s.wake_at(1), Some(t0 + PERIOD));

        // The period counts from the last durable checkpoint.
        let t1 = t0 + PERIOD;
        s.signed(t1);
        assert!(!s.at_end(1, false, t1 + Duration::from_secs(1)));
        s.written();
        assert_eq!(s.wake_at(1), Some(t1 + PERIOD));
        assert!(s.at_end(1, false, t1 + PERIOD));
    }

    #[test]
    fn a_checkpoint_lost_with_its_batch_does_not_move_the_period() {
        let t0 = Instant::now();
        let mut s = scheduler(t0);
        s.signed(t0 + PERIOD);
        s.discard();
        assert_eq!(s.wake_at(1), Some(t0 + PERIOD));
        assert!(s.at_end(1, false, t0 + PERIOD));
    }

    #[test]
    fn asked_at_start_and_at_stop() {
        let t0 = Instant::now();
        let mut s = scheduler(t0);
        // At start, the restart's records are unsigned (the chain counts them as one).
        assert!(s.at_end(1, true, t0));
        assert!(
            !s.at_end(1, false, t0),
            "unasked, it would wait for the period"
        );
        // At stop, even while backing off from a failed signature.
        s.sign_failed(t0);
        assert!(s.at_end(1, true, t0 + Duration::from_secs(1)));
        // A checkpoint that would sign nothing new is not made, even when asked.
        assert!(!s.at_end(0, true, t0));
    }

    #[test]
    fn a_failed_signature_holds_unasked_checkpoints_back() {
        let t0 = Instant::now();
        let mut s = scheduler(t0);
        s.sign_failed(t0);
        let soon = t0 + Duration::from_secs(1);
        assert!(!s.after_record(7, soon));
        assert!(!s.at_end(7, false, soon));
        assert!(s.after_record(7, t0 + SIGN_RETRY));
        assert!(s.at_end(7, false, t0 + SIGN_RETRY));
        // The timer waits for the period, or for the back-off if that ends later.
        assert_eq!(s.wake_at(7), Some(t0 + PERIOD));
        let late = t0 + PERIOD - Duration::from_secs(1);
        s.sign_failed(late);
        assert_eq!(s.wake_at(1), Some(late + SIGN_RETRY));
        assert!(!s.at_end(1, false, t0 + PERIOD));
    }
}
