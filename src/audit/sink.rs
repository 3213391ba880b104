//! The audit port: what the service needs from an audit log.
//!
//! [`AuditLog`] is the implementation the daemon uses; benchmarks that measure what
//! auditing costs bring their own sink that keeps nothing. The daemon's config has no
//! way to ask for such a sink.

use super::tiles::Published;
use super::{AuditError, AuditLog, Entry, Expected};
use crate::util::BoxFuture;

/// Where audit records go. Every method that returns a sequence number returns only
/// once the record is durable.
pub trait AuditSink: Send + Sync {
    /// Announces a record that will follow shortly (call before signing), so the sink
    /// can gather it with others into one write. `None` if the sink does not gather.
    fn expect(&self) -> Option<Expected>;

    /// Appends `entry` (announced by `expected`, if it was); the future waits until it
    /// is durable and returns its sequence number. The append starts at the call (the
    /// record is queued), not when the future is first polled, and never blocks the
    /// calling thread on the disk.
    fn append(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>>;

    /// [`AuditSink::append`] from a thread that may block on the disk (a PKCS#11
    /// worker, never an async runtime thread): a lone announced record may be written
    /// and synced right here, sparing the request the hand-off to the writer thread and
    /// back. Sinks that cannot do that queue it as `append` does.
    fn append_here(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>> {
        self.append(entry, expected)
    }

    /// Writes a signed checkpoint over everything so far.
    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, AuditError>>;

    /// Appends a final record and a checkpoint; later appends fail.
    fn close(&self, entry: Entry) -> BoxFuture<'_, Result<u64, AuditError>>;

    /// The audit key changed state in the token: look it up again before the next
    /// checkpoint.
    fn forget_key(&self);

    /// Whether the last write succeeded (signing is refused while it did not).
    fn is_healthy(&self) -> bool;

    /// Why the sink cannot take records now, for `/readyz`; `None` while it can.
    fn unavailable_because(&self) -> Option<String> {
        (!self.is_healthy()).then(|| "the audit log cannot take records".to_string())
    }

    /// Whether `records` refusal records may be written now: false while they would eat
    /// into the space kept for signing records. Sinks that keep nothing admit them.
    fn admits_refusals(&self, records: u64) -> bool {
        let _ = records;
        true
    }

    /// The latest durable signed checkpoint and where its log is, for serving it and
    /// its tiles. Sinks that keep nothing have none.
    fn published(&self) -> Option<Published> {
        None
    }
}

impl AuditSink for AuditLog {
    fn expect(&self) -> Option<Expected> {
        Some(AuditLog::expect(self))
    }

    fn append(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>> {
        self.start_append(entry, expected, false)
    }

    fn append_here(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>> {
        self.start_append(entry, expected, true)
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(AuditLog::checkpoint(self))
    }

    fn close(&self, entry: Entry) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(AuditLog::close(self, entry))
    }

    fn forget_key(&self) {
        AuditLog::forget_key(self);
    }

    fn is_healthy(&self) -> bool {
        AuditLog::is_healthy(self)
    }

    fn admits_refusals(&self, records: u64) -> bool {
        AuditLog::admits_refusals(self, records)
    }

    fn published(&self) -> Option<Published> {
        AuditLog::published(self)
    }
}
