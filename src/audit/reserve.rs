//! The space kept for signing records: refusal records are written only while the
//! log's filesystem has at least `[audit] reserve_bytes` free, so however many
//! refusals arrive, they cannot take the space that minting needs.
//!
//! Free space is asked of the kernel (`statvfs`) at most once per
//! [`CHECK_EVERY_RECORDS`] refusal records or [`CHECK_EVERY`], not per record: the
//! writer's path never sees it. Between two checks at most that many records (or one
//! batch of aggregate records) go out, which is why the reserve is megabytes and not
//! the size of one record.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal records admitted between two free-space checks, at most.
pub const CHECK_EVERY_RECORDS: u64 = 256;
/// Longest time between two free-space checks while refusal records arrive.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The last free-space check.
#[derive(Debug, Default)]
struct Checked {
    at: Option<Instant>,
    /// Records admitted since.
    records: u64,
    /// Whether the free space was at least the reserve.
    room: bool,
}

impl Checked {
    /// Whether admitting `records` more needs a new look at the free space.
    fn due(&self, now: Instant, records: u64) -> bool {
        match self.at {
            None => true,
            Some(at) => {
                now.saturating_duration_since(at) >= CHECK_EVERY
                    || self.records.saturating_add(records) > CHECK_EVERY_RECORDS
            }
        }
    }
}

/// Free space to keep under the log's directory.
#[derive(Debug)]
pub struct Reserve {
    dir: PathBuf,
    bytes: u64,
    checked: Mutex<Checked>,
}

impl Reserve {
    /// Keeps `bytes` free on the filesystem of `dir` (0: no reserve).
    pub fn new(dir: PathBuf, bytes: u64) -> Self {
        Reserve {
            dir,
            bytes,
            checked: Mutex::new(Checked::default()),
        }
    }

    /// Whether `records` refusal records may be written now: false while the free space
    /// is below the reserve. When free space cannot be read, records are admitted: the
    /// write itself then fails or not, as any other.
    pub fn admits(&self, records: u64) -> bool {
        if self.bytes == 0 {
            return true;
        }
        let now = Instant::now();
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if checked.due(now, records) {
            *checked = Checked {
                at: Some(now),
                records: 0,
                room: self.free().is_none_or(|free| free >= self.bytes),
            };
        }
        if checked.room {
            checked.records = checked.records.saturating_add(records);
        }
        checked.room
    }

    /// Bytes an unprivileged writer may still use on the log's filesystem.
    fn free(&self) -> Option<u64> {
        match rustix::fs::statvfs(&self.dir) {
            Ok(s) => Some(s.f_bavail.saturating_mul(s.f_frsize)),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "cannot read the audit filesystem's free space");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_checked_per_batch_of_records_or_per_second() {
        let start = Instant::now();
        let mut checked = Checked::default();
        assert!(checked.due(start, 1), "first use");
        checked.at = Some(start);
        checked.records = CHECK_EVERY_RECORDS - 1;
        assert!(!checked.due(start, 1));
        assert!(checked.due(start, 2));
        checked.records = 0;
        assert!(!checked.due(start + CHECK_EVERY / 2, 1));
        assert!(checked.due(start + CHECK_EVERY, 1));
    }

    #[test]
    fn refusals_are_admitted_only_above_the_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let small = Reserve::new(dir.path().to_path_buf(), 1);
        assert!((0..1000).all(|_| small.admits(1)));
        let none = Reserve::new(dir.path().to_path_buf(), 0);
        assert!(none.admits(1));
        // No filesystem has this much free: every refusal record is dropped.
        let huge = Reserve::new(dir.path().to_path_buf(), u64::MAX);
        assert!((0..1000).all(|_| !huge.admits(1)));
        // A directory that cannot be read does not stop records by itself.
        let gone = Reserve::new(dir.path().join("missing"), u64::MAX);
        assert!(gone.admits(1));
    }
}
