//! The one task that writes the log: group commit, checkpoints, segment roll-over,
//! and what happens when the disk says no.
//!
//! The writer is a thread of its own, so the write path never crosses the async
//! runtime. Appends queue on a channel. The writer takes everything queued, gives each
//! record its `seq`, `time` and `prev`, adds a checkpoint when one is due, and writes the
//! batch with one `write` and one `fdatasync`; only then does any caller hear back.
//! While that fsync runs, new appends queue up for the next batch, so concurrent
//! requests share the cost.
//!
//! A failed write is cut back out of the file (so no partial record stays), every
//! caller in the batch gets [`AuditError::Unavailable`], and the log reports unhealthy
//! until a write succeeds again. The writer retries every second on its own, so the log
//! heals without traffic; the first record after an outage says how long it lasted and
//! how many records were refused. If even the cut fails, the file's end is unknown and
//! the writer refuses everything until restarted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::checkpoint::{AUDIT_ISSUER, CheckpointSigner};
use super::record::{self, CallerRecord, CheckpointClaims, Entry, Event, Extras, line_hash};
use super::segment::{DirLock, Segment};
use super::{AuditError, Expected, Shared};

/// Most records in one batch.
const MAX_BATCH: usize = 4096;
/// How often an unhealthy log retries on its own.
const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// How long after a failed checkpoint signature the next is tried.
const CHECKPOINT_RETRY: Duration = Duration::from_secs(5);
/// Longest the writer waits for announced records before writing a batch. Shorter than
/// a signature takes on most tokens; long enough that concurrent requests share fsyncs.
const GATHER: Duration = Duration::from_micros(100);

/// A message to the writer.
pub(super) enum Message {
    /// Append a record (its [`Entry::members`]); the reply carries its `seq` once it is
    /// durable.
    /// The writer drops the [`Expected`] as it takes the message, before it decides
    /// whether to wait for more.
    Append(
        String,
        Option<Expected>,
        oneshot::Sender<Result<u64, AuditError>>,
    ),
    /// Append a final record and a checkpoint, then stop.
    Close(String, oneshot::Sender<Result<u64, AuditError>>),
    /// Write a checkpoint now; the reply carries its `seq`.
    Checkpoint(oneshot::Sender<Result<u64, AuditError>>),
    /// Look the audit key up again before the next checkpoint.
    ForgetKey,
}

/// When checkpoints are due.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    pub segment_bytes: u64,
    pub checkpoint_every: u64,
    pub checkpoint_period: Duration,
}

/// Writes that failed, since when and how often.
struct Outage {
    since: String,
    refused: u64,
    error: String,
}

/// The writer's state: the end of the chain and the open segment.
pub(super) struct Writer {
    pub dir: PathBuf,
    pub schedule: Schedule,
    pub _lock: DirLock,
    pub segment: Segment,
    pub log_id: String,
    pub next_seq: u64,
    pub head: String,
    pub since_checkpoint: u64,
    pub signer: CheckpointSigner,
    pub shared: Arc<Shared>,
    /// Records to write before anything else (a recovery report).
    pub notes: Vec<Entry>,
    outage: Option<Outage>,
    broken: bool,
    /// Why the last checkpoint could not be signed.
    checkpoint_error: Option<AuditError>,
    /// The time of the batch being formatted.
    time: String,
    /// Until when the batch being gathered waits for announced records.
    gather_until: Option<Instant>,
    /// An audit key generated during the batch being written, whose record must not be
    /// lost if the write fails.
    generated: Option<String>,
    last_checkpoint: Instant,
    checkpoint_retry_at: Instant,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The chain position a batch starts from, to roll back to if it fails.
struct Snapshot {
    next_seq: u64,
    head: String,
    since_checkpoint: u64,
}

impl Writer {
    /// A writer continuing the chain at `next_seq` after `head`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        schedule: Schedule,
        lock: DirLock,
        segment: Segment,
        log_id: String,
        next_seq: u64,
        head: String,
        signer: CheckpointSigner,
        shared: Arc<Shared>,
        notes: Vec<Entry>,
    ) -> Self {
        Writer {
            dir,
            schedule,
            _lock: lock,
            segment,
            log_id,
            next_seq,
            head,
            // Whatever came before the restart is covered by the next checkpoint.
            since_checkpoint: 1,
            signer,
            shared,
            notes,
            outage: None,
            broken: false,
            checkpoint_error: None,
            generated: None,
            time: now(),
            gather_until: None,
            last_checkpoint: Instant::now(),
            checkpoint_retry_at: Instant::now(),
        }
    }

    /// Runs until the log is closed or every sender is gone. `runtime` drives the
    /// token calls that sign checkpoints.
    pub fn run(mut self, inbox: Receiver<Message>, runtime: Handle) {
        loop {
            let wait = self.next_wake().saturating_duration_since(Instant::now());
            let first = match inbox.recv_timeout(wait) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    // Failures are logged and retried; nobody waits on this one.
                    let _ = self.commit(Vec::new(), false, &runtime);
                    continue;
                }
                // Every handle dropped without a close: nothing more will come.
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut appends = Vec::new();
            let mut closed = None;
            let mut checkpoints = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Append(entry, expected, reply) => {
                        drop(expected);
                        appends.push((entry, reply));
                    }
                    Message::Checkpoint(reply) => checkpoints.push(reply),
                    Message::ForgetKey => self.signer.forget(),
                    Message::Close(entry, reply) => {
                        let (done, result) = oneshot::channel();
                        appends.push((entry, done));
                        closed = Some((result, reply));
                        break;
                    }
                }
                if appends.len() < MAX_BATCH {
                    next = inbox.try_recv().ok().or_else(|| self.gather(&inbox));
                }
            }
            self.gather_until = None;
            let force = closed.is_some() || !checkpoints.is_empty();
            let written = self.commit(appends, force, &runtime);
            for reply in checkpoints {
                let result = match (&written, self.since_checkpoint) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(()), 0) => Ok(self.next_seq - 1),
                    (Ok(()), _) => Err(self
                        .checkpoint_error
                        .clone()
                        .unwrap_or(AuditError::Unavailable)),
                };
                let _ = reply.send(result);
            }
            if let Some((mut result, reply)) = closed {
                // Release the directory lock before the closer hears back, so a new
                // writer can open the log at once.
                drop(self);
                drop(inbox);
                let result = result.try_recv().unwrap_or(Err(AuditError::Unavailable));
                let _ = reply.send(result);
                return;
            }
        }
    }

    /// Waits, briefly, for a record that a request announced (it is being signed), so
    /// it joins this batch's fsync. Only while some are announced: a lone request is
    /// written at once.
    fn gather(&mut self, inbox: &Receiver<Message>) -> Option<Message> {
        let deadline = *self
            .gather_until
            .get_or_insert_with(|| Instant::now() + GATHER);
        if self.shared.expected.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        inbox.recv_timeout(left).ok()
    }

    /// When the writer must act without an append: a retry while unhealthy, or a
    /// checkpoint for records waiting longer than the checkpoint period.
    fn next_wake(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        if self.broken {
            return far;
        }
        if self.outage.is_some() {
            return Instant::now() + RETRY_PERIOD;
        }
        if self.since_checkpoint > 0 {
            return (self.last_checkpoint + self.schedule.checkpoint_period)
                .max(self.checkpoint_retry_at);
        }
        far
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            next_seq: self.next_seq,
            head: self.head.clone(),
            since_checkpoint: self.since_checkpoint,
        }
    }

    fn restore(&mut self, snapshot: Snapshot) {
        self.next_seq = snapshot.next_seq;
        self.head = snapshot.head;
        self.since_checkpoint = snapshot.since_checkpoint;
    }

    /// Formats one record with `members` onto `batch`, advancing the chain. Returns its
    /// seq. Every record of a batch has the batch's time: when the writer wrote it.
    fn push(&mut self, batch: &mut String, members: &str) -> u64 {
        let seq = self.next_seq;
        let start = batch.len();
        record::line(batch, seq, &self.time, members, &self.head);
        self.head = line_hash(&batch.as_bytes()[start..]);
        self.next_seq += 1;
        self.since_checkpoint += 1;
        batch.push('\n');
        seq
    }

    fn push_entry(&mut self, batch: &mut String, entry: Entry) -> u64 {
        self.push(batch, &entry.members())
    }

    /// The first record of a segment: genesis for the first, a link for later ones.
    fn push_header(&mut self, batch: &mut String, number: u64) {
        let (log_id, genesis) = (self.log_id.clone(), self.next_seq == 0);
        let event = if genesis {
            Event::Genesis
        } else {
            Event::SegmentStart
        };
        let extras = Extras {
            log_id: Some(&log_id),
            segment: Some(number),
            checkpoint: None,
        };
        self.push(batch, &(Entry::new(event).members() + &extras.members()));
    }

    /// Adds a checkpoint over everything formatted so far, if the audit key can sign.
    fn push_checkpoint(&mut self, batch: &mut String, forced: bool, runtime: &Handle) {
        if !forced && Instant::now() < self.checkpoint_retry_at {
            return;
        }
        self.checkpoint_error = None;
        let claims = CheckpointClaims {
            log_id: self.log_id.clone(),
            seq: self.next_seq - 1,
            head: self.head.clone(),
            time: now(),
        };
        match runtime.block_on(self.signer.sign(&claims)) {
            Ok((jws, generated)) => {
                if let Some(kid) = generated {
                    self.generated = Some(kid.clone());
                    // The key's creation goes on record before its first signature
                    // would, but after the head that signature covers: still chained.
                    self.push_entry(batch, generated_entry(&kid));
                    // The checkpoint must cover that record too: sign again.
                    return self.push_checkpoint(batch, true, runtime);
                }
                let extras = Extras {
                    log_id: None,
                    segment: None,
                    checkpoint: Some(&jws),
                };
                let members = Entry::new(Event::Checkpoint).members() + &extras.members();
                self.push(batch, &members);
                self.since_checkpoint = 0;
                self.last_checkpoint = Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign an audit checkpoint; records stay chained, the next checkpoint will cover them");
                self.checkpoint_retry_at = Instant::now() + CHECKPOINT_RETRY;
                self.checkpoint_error = Some(e);
            }
        }
    }

    fn checkpoint_due(&self) -> bool {
        self.since_checkpoint >= self.schedule.checkpoint_every
            || (self.since_checkpoint > 0
                && self.last_checkpoint.elapsed() >= self.schedule.checkpoint_period)
    }

    /// Writes one batch: the segment header if the segment is new, notes, a resumption
    /// report, the appends, and any due checkpoint; then answers every caller.
    fn commit(
        &mut self,
        appends: Vec<(String, oneshot::Sender<Result<u64, AuditError>>)>,
        checkpoint: bool,
        runtime: &Handle,
    ) -> Result<(), AuditError> {
        if self.broken {
            for (_, reply) in appends {
                let _ = reply.send(Err(AuditError::Unavailable));
            }
            return Err(AuditError::Unavailable);
        }
        let count = appends.len() as u64;
        if let Err(e) = self.roll_if_full() {
            self.failed(count, e.to_string());
            for (_, reply) in appends {
                let _ = reply.send(Err(AuditError::Unavailable));
            }
            return Err(AuditError::Unavailable);
        }
        let snapshot = self.snapshot();
        let snapshot_seq = snapshot.next_seq;
        self.time = now();
        let mut batch = String::new();
        let (fresh, number) = (self.segment.len == 0, self.segment.number);
        if fresh {
            self.push_header(&mut batch, number);
        }
        let notes = std::mem::take(&mut self.notes);
        for note in notes.iter().cloned() {
            self.push_entry(&mut batch, note);
        }
        if let Some(outage) = &self.outage {
            let entry = Entry::new(Event::Resumed)
                .caller(CallerRecord::internal("audit"))
                .detail(format!(
                    "writes failed from {} until now ({} records refused): {}",
                    outage.since, outage.refused, outage.error
                ));
            self.push_entry(&mut batch, entry);
        }
        let mut replies = Vec::with_capacity(appends.len());
        for (entry, reply) in appends {
            let seq = self.push(&mut batch, &entry);
            replies.push((seq, reply));
            if self.since_checkpoint >= self.schedule.checkpoint_every {
                self.push_checkpoint(&mut batch, false, runtime);
            }
        }
        if checkpoint && self.since_checkpoint > 0 {
            self.push_checkpoint(&mut batch, true, runtime);
        } else if self.checkpoint_due() {
            self.push_checkpoint(&mut batch, false, runtime);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let error = match self.segment.append(batch.as_bytes()) {
            Ok(()) => None,
            Err((e, cut)) => {
                if !cut {
                    self.broken = true;
                    tracing::error!(
                        "the audit log could not be cut back after a failed write; refusing all signing until signetd is restarted"
                    );
                }
                Some(e.to_string())
            }
        };
        match error {
            None => {
                self.generated = None;
                if self.outage.take().is_some() {
                    tracing::warn!("the audit log is writable again; signing resumes");
                }
                self.shared.healthy.store(!self.broken, Ordering::SeqCst);
                self.shared
                    .records
                    .fetch_add(self.next_seq - snapshot_seq, Ordering::Relaxed);
                self.shared.writes.fetch_add(1, Ordering::Relaxed);
                for (seq, reply) in replies {
                    let _ = reply.send(Ok(seq));
                }
                Ok(())
            }
            Some(e) => {
                self.restore(snapshot);
                self.notes = notes;
                if let Some(kid) = self.generated.take() {
                    self.notes.push(generated_entry(&kid));
                }
                self.failed(count, e);
                for (_, reply) in replies {
                    let _ = reply.send(Err(AuditError::Unavailable));
                }
                Err(AuditError::Unavailable)
            }
        }
    }

    fn failed(&mut self, refused: u64, error: String) {
        if self.outage.is_none() {
            tracing::error!(dir = %self.dir.display(), %error, "cannot write the audit log; signing is refused until it can");
        }
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: now(),
            refused: 0,
            error: error.clone(),
        });
        outage.refused += refused;
        outage.error = error;
        self.shared.healthy.store(false, Ordering::SeqCst);
    }

    /// Starts the next segment once the current one is full.
    fn roll_if_full(&mut self) -> Result<(), AuditError> {
        if self.segment.len < self.schedule.segment_bytes {
            return Ok(());
        }
        let next = Segment::create(&self.dir, self.segment.number + 1)?;
        tracing::info!(segment = %next.path.display(), "audit log: new segment");
        self.segment = next;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closed, or the thread is ending for any reason: nothing more can be written.
        self.shared.healthy.store(false, Ordering::SeqCst);
    }
}

/// The record of the audit key's generation.
fn generated_entry(kid: &str) -> Entry {
    Entry::new(Event::KeyGenerate)
        .caller(CallerRecord::internal("audit"))
        .issuer(AUDIT_ISSUER)
        .kid(kid)
        .ok()
        .detail("the audit key, for checkpoints")
}
