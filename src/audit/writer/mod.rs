//! The one thread that writes the log: group commit, checkpoints, segment roll-over,
//! and what happens when the disk says no.
//!
//! The writer is a thread of its own, so the write path never crosses the async
//! runtime. Appends queue on a channel. The writer takes everything queued, waits
//! briefly for records that requests announced ([`Gathering`]), and for each batch:
//!
//! - [`chain`] formats the records (`seq`, `time`, `prev`) into one buffer;
//! - [`schedule`] says where a checkpoint goes, and [`CheckpointSigning`] signs it;
//! - [`store`] writes the batch with one `write` and one `fdatasync` (over the zeros the
//!   segment runs ahead with; extending them, once per MiB, adds their writes);
//! - [`health`] tracks outages: a failed write is cut back out of the file, every caller
//!   in the batch gets [`AuditError::Unavailable`], the writer retries every second on
//!   its own, and the first record after the outage says how long it lasted and how
//!   many records were refused. If even the cut fails, the writer refuses everything
//!   until restarted.
//!
//! Only after the write does any caller hear back. While the fsync runs, new appends
//! queue up for the next batch, so concurrent requests share the cost.
//!
//! A lone record is different: when no other record is announced and the writer is
//! idle, the PKCS#11 worker that made the record's signature writes it
//! ([`Desk::write_alone`], through `AuditSink::append_here`; never an async runtime
//! thread, which must not block on the disk), so a lone request
//! pays the write and its fsync but no hand-off to this thread and back (two wake-ups,
//! each tens of µs on a virtual machine: `docs/performance.md`). The writer sits behind
//! a lock for that; its thread holds the lock only while it gathers and writes a batch.
//! Checkpoints and outages stay with the thread: a record whose write would sign a
//! checkpoint, or that comes during an outage, is queued as any other.

mod chain;
mod health;
mod schedule;
mod store;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::oneshot;

use super::checkpoint::{AUDIT_ISSUER, CheckpointSigning};
use super::record::{CallerRecord, Entry, Event};
use super::{AuditError, Expected, Shared};
pub(super) use chain::Chain;
use health::{Failure, Health};
pub(super) use schedule::Cadence;
use schedule::Scheduler;
pub(super) use store::{SegmentFiles, Store};

/// Most records in one batch.
const MAX_BATCH: usize = 4096;
/// How long a batch waits for records that requests announced (queued for the token, or
/// being signed), so that concurrent requests share one fsync: docs/audit.md, "Group
/// commit". A batch is written at once when no record is announced.
#[derive(Clone, Copy, Debug)]
struct Gathering {
    /// For the next announced record. A busy token's records come closer together than
    /// this; one that does not come is slow (a long or hung call), and goes in the next
    /// batch rather than hold this one.
    gap: Duration,
    /// In all, while the batch holds at least as many records as are still announced:
    /// a few concurrent requests. Waiting longer for the rest would leave the token
    /// idle while every request waits for one fsync.
    short: Duration,
    /// In all, while more records are announced than the batch holds: load, with
    /// requests behind this batch to sign meanwhile. Every fsync costs CPU (on a
    /// virtual machine, an exit to the host for the disk's doorbell), so under load
    /// fewer, larger batches leave more of it for signing: docs/performance.md, "The
    /// writer's gathering wait under load".
    loaded: Duration,
}

impl Gathering {
    const DEFAULT: Gathering = Gathering {
        gap: Duration::from_micros(200),
        short: Duration::from_micros(100),
        loaded: Duration::from_millis(1),
    };
}

/// How long an idle writer sleeps when nothing is due (it wakes for any message).
const IDLE: Duration = Duration::from_secs(3600);

/// Where the answer to an append or a checkpoint goes: the record's `seq`.
type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// A message to the writer.
pub(super) enum Message {
    /// Append a record (its [`Entry::members`]); the reply carries its `seq` once it is
    /// durable.
    /// The writer drops the [`Expected`] as it takes the message, before it decides
    /// whether to wait for more.
    Append(String, Option<Expected>, Reply),
    /// Append a final record and a checkpoint, then stop.
    Close(String, Reply),
    /// Write a checkpoint now; the reply carries its `seq`.
    Checkpoint(Reply),
    /// Look the audit key up again before the next checkpoint.
    ForgetKey,
    /// A record written by a request's thread left work for this one (a checkpoint
    /// due, or a wake-up sooner than the one it sleeps for).
    Wake,
}

/// What a writer is made of.
pub(super) struct Parts {
    /// Where batches are written.
    pub store: Box<dyn Store>,
    /// The chain to continue, with any records to write first.
    pub chain: Chain,
    /// When checkpoints are due.
    pub cadence: Cadence,
    /// Signs checkpoints.
    pub signer: Box<dyn CheckpointSigning>,
    /// Health and counters, shared with the log's handles.
    pub shared: Arc<Shared>,
}

/// The writer: the parts, and what it remembers between batches.
pub(super) struct Writer {
    store: Box<dyn Store>,
    chain: Chain,
    health: Health,
    schedule: Scheduler,
    signer: Box<dyn CheckpointSigning>,
    shared: Arc<Shared>,
    /// Why the last checkpoint could not be signed.
    checkpoint_error: Option<AuditError>,
    /// How long batches wait for announced records.
    gathering: Gathering,
    /// The batch's last checkpoint (note, tree size, verifier key), published once it
    /// is durable.
    batch_checkpoint: Option<(String, u64, String)>,
    /// While a request's thread writes a lone record: no checkpoint is signed (that
    /// would wait for the token from a thread that may be the token's own worker).
    alone: bool,
    /// A checkpoint came due while [`Writer::alone`]: the thread signs it next.
    checkpoint_deferred: bool,
    /// When the thread wakes next without a message (`None`: not before one).
    thread_wakes_at: Option<Instant>,
}

/// The writer, shared by its thread and by the requests that write a lone record
/// themselves. `None` once the log is closed.
pub(super) struct Desk {
    writer: Mutex<Option<Writer>>,
}

/// How a lone record written by its request's thread went.
pub(super) struct Alone {
    /// Its `seq` once durable, or why not.
    pub result: Result<u64, AuditError>,
    /// The thread has work this write made: send it [`Message::Wake`].
    pub wake_thread: bool,
}

/// The wall-clock time records carry.
fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Writer {
    /// A writer of `parts`, healthy, its checkpoint period starting now.
    pub fn new(parts: Parts) -> Self {
        Writer {
            store: parts.store,
            chain: parts.chain,
            health: Health::default(),
            schedule: Scheduler::new(parts.cadence, Instant::now()),
            signer: parts.signer,
            shared: parts.shared,
            checkpoint_error: None,
            gathering: Gathering::DEFAULT,
            batch_checkpoint: None,
            alone: false,
            checkpoint_deferred: false,
            thread_wakes_at: None,
        }
    }

    /// Runs on the calling thread until the log is closed or every sender is gone.
    #[cfg(test)]
    pub fn run(self, inbox: Receiver<Message>) {
        Desk::new(self).run(inbox)
    }
}

impl Desk {
    /// A desk for `writer`; [`Desk::run`] its thread.
    pub fn new(writer: Writer) -> Arc<Desk> {
        Arc::new(Desk {
            writer: Mutex::new(Some(writer)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Writer>> {
        // A panic while holding the lock leaves the chain in an unknown state: the
        // writer is dropped (the log then refuses appends) rather than used.
        self.writer.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = None;
            guard
        })
    }

    /// Writes `members` on the calling thread and waits until it is durable, if the
    /// writer is idle and may write it alone: healthy, no checkpoint due with it, its
    /// thread not holding it. If not, gives `members` back: queue it to the thread.
    pub fn write_alone(&self, members: String) -> Result<Alone, String> {
        let mut guard = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(_) => return Err(members), // busy, or poisoned: the thread decides
        };
        let Some(writer) = guard.as_mut().filter(|w| w.may_write_alone()) else {
            return Err(members);
        };
        let (reply, mut answer) = oneshot::channel();
        writer.alone = true;
        let _ = writer.commit(vec![(members, reply)], false);
        writer.alone = false;
        let sooner = match (writer.next_wake(), writer.thread_wakes_at) {
            (Some(due), Some(planned)) => due < planned,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let wake_thread = std::mem::take(&mut writer.checkpoint_deferred) || sooner;
        drop(guard);
        let result = answer.try_recv().unwrap_or(Err(AuditError::Unavailable));
        Ok(Alone {
            result,
            wake_thread,
        })
    }

    /// The writer thread: runs until the log is closed or every sender is gone.
    pub fn run(self: Arc<Self>, inbox: Receiver<Message>) {
        loop {
            let wait = {
                let mut guard = self.lock();
                let Some(writer) = guard.as_mut() else { return };
                let wake = writer.next_wake();
                writer.thread_wakes_at = wake;
                wake.map_or(IDLE, |at| at.saturating_duration_since(Instant::now()))
            };
            let first = match inbox.recv_timeout(wait) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(writer) = self.lock().as_mut() {
                        // Failures are logged and retried; nobody waits on this one.
                        let _ = writer.commit(Vec::new(), false);
                    }
                    continue;
                }
                // Every handle dropped without a close: nothing more will come.
                Err(RecvTimeoutError::Disconnected) => {
                    if let Some(writer) = self.lock().as_mut() {
                        writer.finish();
                    }
                    return;
                }
            };
            let mut guard = self.lock();
            let Some(writer) = guard.as_mut() else {
                refuse_message(first);
                return;
            };
            writer.thread_wakes_at = None;
            if let Some(done) = writer.batch(first, &inbox) {
                writer.finish();
                // Release the directory lock before the closer hears back, so a new
                // writer can open the log at once.
                drop(guard.take());
                drop(guard);
                drop(inbox);
                let (mut result, reply) = done;
                let result = result.try_recv().unwrap_or(Err(AuditError::Unavailable));
                let _ = reply.send(result);
                return;
            }
        }
    }
}

/// Answers a message that came after the writer was gone.
fn refuse_message(message: Message) {
    match message {
        Message::Append(_, _, reply) | Message::Close(_, reply) | Message::Checkpoint(reply) => {
            let _ = reply.send(Err(AuditError::Unavailable));
        }
        Message::ForgetKey | Message::Wake => {}
    }
}

/// What a batch that closed the log leaves to do: the close's own answer, and where
/// its caller waits for it.
type Closing = (oneshot::Receiver<Result<u64, AuditError>>, Reply);

impl Writer {
    /// The writer stops: the segment is sealed, unless a write that could not be cut
    /// back out left its end unknown (recovery at the next start keeps those bytes).
    fn finish(&mut self) {
        if !self.health.may_write() {
            return;
        }
        if let Err(e) = self.store.seal() {
            tracing::warn!("audit log: {e}; the next start cuts it");
        }
    }

    /// Whether a request's thread may write one record now, alone: healthy, with no
    /// checkpoint due in that batch (only the thread signs them).
    fn may_write_alone(&self) -> bool {
        let now = Instant::now();
        // The record, and a segment's first record if the write rolls over.
        let unsigned = self.chain.unsigned() + 2;
        self.health.is_healthy()
            && self.health.retry_at().is_none()
            && !self.schedule.after_record(unsigned, now)
            && !self.schedule.at_end(unsigned, false, now)
    }

    /// Takes `first` and whatever else is queued (gathering announced records
    /// briefly) and writes them as one batch. Returns the close's answer if the batch
    /// closed the log.
    fn batch(&mut self, first: Message, inbox: &Receiver<Message>) -> Option<Closing> {
        let mut appends = Vec::new();
        let mut closed = None;
        let mut checkpoints = Vec::new();
        let mut next = Some(first);
        let started = Instant::now();
        while let Some(message) = next.take() {
            match message {
                Message::Append(entry, expected, reply) => {
                    drop(expected);
                    appends.push((entry, reply));
                }
                Message::Checkpoint(reply) => checkpoints.push(reply),
                Message::ForgetKey => self.signer.forget_key(),
                Message::Wake => {}
                Message::Close(entry, reply) => {
                    let (done, result) = oneshot::channel();
                    appends.push((entry, done));
                    closed = Some((result, reply));
                    break;
                }
            }
            if appends.len() < MAX_BATCH {
                next = inbox
                    .try_recv()
                    .ok()
                    .or_else(|| self.gather(inbox, started, appends.len()));
            }
        }
        let asked = closed.is_some() || !checkpoints.is_empty();
        let written = self.commit(appends, asked);
        for reply in checkpoints {
            let _ = reply.send(self.checkpoint_result(&written));
        }
        closed
    }

    /// Waits, briefly, for a record that a request announced (it is queued for the
    /// token or being signed), so it joins the fsync of the batch `started` then, which
    /// `held` records share so far. Only while some are announced: a lone request is
    /// written at once, and so is a batch once every announced record is in.
    /// [`Gathering`] says for how long.
    fn gather(&self, inbox: &Receiver<Message>, started: Instant, held: usize) -> Option<Message> {
        let now = Instant::now();
        let announced = self.shared.expected.load(Ordering::SeqCst);
        if announced == 0 {
            return None;
        }
        // A batch begun by a checkpoint or a wake-up holds no record yet: it counts as
        // one, so it waits no longer than a batch begun by a record.
        let limit = if held.max(1) < announced {
            self.gathering.loaded
        } else {
            self.gathering.short
        };
        let left = (started + limit)
            .saturating_duration_since(now)
            .min(self.gathering.gap);
        if left.is_zero() {
            return None;
        }
        inbox.recv_timeout(left).ok()
    }

    /// When the writer must act without an append: a retry during an outage, or a
    /// checkpoint for records waiting longer than the checkpoint period.
    fn next_wake(&self) -> Option<Instant> {
        if !self.health.may_write() {
            return None;
        }
        self.health
            .retry_at()
            .or_else(|| self.schedule.wake_at(self.chain.unsigned()))
    }

    /// The answer to a checkpoint request after a batch written with `written`.
    fn checkpoint_result(&self, written: &Result<(), AuditError>) -> Result<u64, AuditError> {
        match (written, self.chain.unsigned()) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), 0) => Ok(self.chain.next_seq() - 1),
            (Ok(()), _) => Err(self
                .checkpoint_error
                .clone()
                .unwrap_or(AuditError::Unavailable)),
        }
    }

    /// Writes one batch: the segment's first record if the segment is new, notes, an
    /// outage report, the appends, and any checkpoint due (or `asked` for); then answers
    /// every caller.
    fn commit(&mut self, appends: Vec<(String, Reply)>, asked: bool) -> Result<(), AuditError> {
        if !self.health.may_write() {
            return refuse(appends);
        }
        let count = appends.len() as u64;
        let (started, time) = (Instant::now(), now());
        if let Err(e) = self.store.roll_if_full() {
            self.failed(count, &e.to_string(), true, &time, started);
            return refuse(appends);
        }
        self.chain.begin(&time, self.store.fresh_segment());
        if let Some(resumed) = self.health.resumed() {
            self.chain.push_entry(&resumed);
        }
        let mut replies = Vec::with_capacity(appends.len());
        for (members, reply) in appends {
            replies.push((self.chain.push(&members), reply));
            if self
                .schedule
                .after_record(self.chain.pending_unsigned(), Instant::now())
            {
                self.checkpoint();
            }
        }
        if self
            .schedule
            .at_end(self.chain.pending_unsigned(), asked, Instant::now())
        {
            self.checkpoint();
        }
        if self.chain.bytes().is_empty() {
            return Ok(());
        }
        let bytes = self.chain.bytes().len() as u64;
        match self.store.append(self.chain.bytes()) {
            Ok(()) => {
                let records = self.chain.written();
                crate::telemetry::audit_written(records, bytes);
                self.schedule.written();
                if self.health.written() {
                    tracing::warn!("the audit log is writable again; signing resumes");
                }
                self.shared
                    .healthy
                    .store(self.health.is_healthy(), Ordering::SeqCst);
                self.shared.records.fetch_add(records, Ordering::Relaxed);
                self.shared.writes.fetch_add(1, Ordering::Relaxed);
                for (seq, reply) in replies {
                    let _ = reply.send(Ok(seq));
                }
                // The tree file after the callers heard back: it is an index of what is
                // durable, not on their path.
                let indexed = self.store.append_hashes(self.chain.hashes());
                if let Some(latest) = self.batch_checkpoint.take().filter(|_| indexed) {
                    // Only once the tree file has the batch's hashes: every tile up to
                    // the published checkpoint can then be served.
                    *self.shared.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(latest);
                }
                Ok(())
            }
            Err(failure) => {
                self.batch_checkpoint = None;
                self.chain.discard();
                self.schedule.discard();
                self.failed(count, &failure.error, failure.cut, &time, started);
                refuse(replies)
            }
        }
    }

    /// Signs the batch so far and adds the checkpoint, if the audit key can sign.
    fn checkpoint(&mut self) {
        if self.alone {
            self.checkpoint_deferred = true;
            return;
        }
        self.checkpoint_error = None;
        loop {
            let head = self.chain.tree_head();
            match self.signer.sign(&head) {
                Ok(signed) if signed.generated.is_some() || signed.retired.is_some() => {
                    // The key's creation (and an old key's retirement) goes on record
                    // before its first signature would, but after the head that
                    // signature covers. The checkpoint must cover those records too:
                    // sign again.
                    if let Some(kid) = &signed.retired {
                        self.chain.push_note(retired_entry(kid));
                    }
                    if let Some(kid) = &signed.generated {
                        self.chain.push_note(generated_entry(kid));
                    }
                }
                Ok(signed) => {
                    self.chain.push_checkpoint(&signed);
                    self.batch_checkpoint = Some((signed.note, head.size, signed.verifier_key));
                    self.schedule.signed(Instant::now());
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot sign an audit checkpoint; records stay chained, the next checkpoint will cover them");
                    self.schedule.sign_failed(Instant::now());
                    self.checkpoint_error = Some(e);
                    return;
                }
            }
        }
    }

    /// A write at `at` (wall clock `time`) failed, refusing `refused` records.
    fn failed(&mut self, refused: u64, error: &str, cut: bool, time: &str, at: Instant) {
        match self.health.failed(refused, error, cut, time, at) {
            Failure::Began => {
                tracing::error!(segment = %self.store.path().display(), %error, "cannot write the audit log; signing is refused until it can")
            }
            Failure::Continued => {}
            Failure::Broke => tracing::error!(
                segment = %self.store.path().display(), %error,
                "the audit log could not be cut back after a failed write; refusing all signing until signetd is restarted"
            ),
        }
        self.shared
            .healthy
            .store(self.health.is_healthy(), Ordering::SeqCst);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closed, or the thread is ending for any reason: nothing more can be written.
        self.shared.healthy.store(false, Ordering::SeqCst);
    }
}

/// Answers every caller of a batch that was not written.
fn refuse<T>(replies: Vec<(T, Reply)>) -> Result<(), AuditError> {
    for (_, reply) in replies {
        let _ = reply.send(Err(AuditError::Unavailable));
    }
    Err(AuditError::Unavailable)
}

/// A change to the audit key that the writer itself made, as a record.
fn audit_key_entry(event: Event, kid: &str, detail: &str) -> Entry {
    Entry::new(event)
        .caller(CallerRecord::internal("audit"))
        .issuer(AUDIT_ISSUER)
        .kid(kid)
        .ok()
        .detail(detail)
}

/// The record of an ES256 audit key's retirement for an Ed25519 one.
fn retired_entry(kid: &str) -> Entry {
    let why = "the ES256 audit key of an earlier version (checkpoints are Ed25519 signed notes since 0.2), now retired";
    audit_key_entry(Event::KeyRetire, kid, why)
}

/// The record of the audit key's generation.
fn generated_entry(kid: &str) -> Entry {
    audit_key_entry(Event::KeyGenerate, kid, "the audit key, for checkpoints")
}
