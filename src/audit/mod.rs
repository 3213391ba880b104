//! The audit room: an append-only, hash-chained log of everything the daemon signs and
//! refuses, with checkpoints signed in the token.
//!
//! [`record`] is the line format; [`segment`] the files, the directory lock and crash
//! recovery; `writer` the group-committing writer thread, glue over pure parts (the
//! chain formatter, the health state machine, the checkpoint schedule) and two ports
//! (the segment store, and [`checkpoint::CheckpointSigning`]); [`checkpoint`] the audit
//! key and its signatures; [`verify`] checks a log offline (`signetd audit verify`).
//! [`aggregate`] folds refusals of callers no policy names into one record per caller
//! and interval; [`reserve`] keeps free space for signing records, which refusal
//! records may not use.
//! The format and the guarantees are in `docs/audit.md`.
//!
//! The service reaches the log through the [`AuditSink`] port, which [`AuditLog`]
//! implements. [`AuditLog::append`] returns only once the record is on disk: callers that return a
//! token or a signature do so after it, and return nothing if it fails.

pub mod aggregate;
pub mod checkpoint;
pub mod note;
pub mod record;
mod reopen;
pub mod reserve;
pub mod segment;
mod sink;
pub mod tiles;
pub mod tree;
pub mod verify;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rand::RngCore;
use tokio::sync::oneshot;

pub use checkpoint::AUDIT_ISSUER;
pub use record::{CallerRecord, Entry, Event, Outcome};
pub use reopen::ReopeningLog;
pub use sink::AuditSink;

use crate::config::{AuditConfig, Config};
use crate::hsm::Hsm;
use crate::store::KeyMetadata;

/// Why the log cannot take a record.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be written now (disk full, permissions, the writer stopped).
    #[error("the audit log cannot be written")]
    Unavailable,
    /// Opening the log failed.
    #[error("audit log: {0}")]
    Io(String),
    /// The existing log's end is not a record.
    #[error("audit log is damaged: {0}")]
    Damaged(String),
    /// No audit key can sign checkpoints.
    #[error("audit key: {0}")]
    NoKey(String),
}

/// Counters of what the writer has written since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records made durable.
    pub records: u64,
    /// Writes (each one `write` and one `fdatasync`).
    pub writes: u64,
}

/// The writer's health and counters, shared with every handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    healthy: AtomicBool,
    records: AtomicU64,
    writes: AtomicU64,
    /// Requests that will append a record soon (they are signing): the writer waits a
    /// moment for them, so they share the next fsync instead of each paying one.
    expected: AtomicUsize,
    /// The latest durable checkpoint: its signed note, the tree size it states and the
    /// verifier key it opens with.
    latest: std::sync::Mutex<Option<(String, u64, String)>>,
}

/// A promise to append a record soon, from [`AuditLog::expect`]; the writer counts the
/// open ones. Kept until the record is queued (or the request fails).
pub struct Expected {
    shared: Arc<Shared>,
}

impl Drop for Expected {
    fn drop(&mut self) {
        self.shared.expected.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Where appends go.
enum Sink {
    /// The writer thread, and the writer itself for a lone record
    /// ([`writer::Desk::write_alone`]). Unbounded, but each sender waits for its reply,
    /// so the queue holds at most one record per request in flight (capped by the
    /// connection limits).
    Writer(std::sync::mpsc::Sender<writer::Message>, Arc<writer::Desk>),
    /// The log could not be opened: every append fails.
    Unavailable,
}

/// What opening a log needs from the config.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// `[audit]`.
    pub audit: AuditConfig,
    /// How long audit-key certificates are valid (`[attestation] key_certificate_days`).
    pub key_certificate_days: u32,
    /// The replica named in every record (`[replica] name`).
    pub replica: Option<String>,
}

impl LogOptions {
    /// The options `config` sets.
    pub fn from_config(config: &Config) -> Self {
        LogOptions {
            audit: config.audit.clone(),
            key_certificate_days: config.attestation.key_certificate_days,
            replica: config.replica.name.clone(),
        }
    }
}

/// A handle on the log; cheap to share behind an `Arc`.
pub struct AuditLog {
    sink: Sink,
    shared: Arc<Shared>,
    /// The log's directory; none for a log that could not open.
    dir: Option<std::path::PathBuf>,
    /// Free space refusal records may not use; none for a log that could not open.
    reserve: Option<reserve::Reserve>,
}

impl AuditLog {
    /// Opens (or creates) the log in `config.audit.dir` and starts its writer thread,
    /// which signs checkpoints through the current tokio runtime. A torn record left by
    /// a crash is cut off, kept beside the segments, and reported in the log's next
    /// record.
    ///
    /// The audit key is found (or generated) through `keys`, the state store's key
    /// records, and the token.
    pub async fn open(
        config: &Config,
        hsm: Arc<Hsm>,
        keys: Arc<dyn KeyMetadata>,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(&LogOptions::from_config(config), hsm, keys).await
    }

    /// [`AuditLog::open`] from the parts of the config the log uses.
    pub async fn open_with(
        options: &LogOptions,
        hsm: Arc<Hsm>,
        keys: Arc<dyn KeyMetadata>,
    ) -> Result<AuditLog, AuditError> {
        let LogOptions {
            audit,
            key_certificate_days,
            replica,
        } = options;
        let key_certificate_days = *key_certificate_days;
        let dir = audit.dir.clone();
        segment::prepare_dir(&dir)?;
        let lock = segment::lock(&dir)?;
        let reserve = reserve::Reserve::new(dir.clone(), audit.reserve_bytes);
        let (tail, torn) = segment::open_tail(&dir)?;
        let mut notes = Vec::new();
        if let Some(torn) = torn {
            tracing::warn!(segment = %torn.segment.display(), bytes = torn.len, kept = %torn.kept.display(), "audit log ended in a torn record (a crash mid-write); cut it off and continuing");
            notes.push(
                Entry::new(Event::Recovered)
                    .caller(CallerRecord::internal("audit"))
                    .detail(format!(
                        "the log ended in a torn record: cut {} bytes (sha256 {}) from {}, kept in {}",
                        torn.len,
                        torn.sha256,
                        torn.segment.file_name().unwrap_or_default().to_string_lossy(),
                        torn.kept.file_name().unwrap_or_default().to_string_lossy(),
                    )),
            );
        }
        if let Some(tail) = tail.as_ref().filter(|t| t.unsigned > 0) {
            let last = tail.last.seq;
            notes.push(
                Entry::new(Event::Recovered)
                    .caller(CallerRecord::internal("audit"))
                    .detail(format!(
                        "opened after an unclean stop: {} record(s) up to seq {last} followed the last checkpoint; the next checkpoint covers them, but no signature witnessed them before this restart",
                        tail.unsigned
                    )),
            );
        }
        let (segment, log_id, next_seq, head, last_note) = match tail {
            Some(tail) => {
                // The log id becomes the checkpoints' origin and the note key's name:
                // only what the writer makes (32 hex digits) may go into a text the
                // token signs.
                if tail.log_id.len() != 32 || !tail.log_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(AuditError::Damaged(format!(
                        "the log id {:?} is not one signetd makes (32 hex digits)",
                        tail.log_id
                    )));
                }
                (
                    tail.segment,
                    tail.log_id,
                    tail.last.seq + 1,
                    tail.head,
                    tail.last_note,
                )
            }
            None => {
                let mut id = [0u8; 16];
                rand::rngs::OsRng.fill_bytes(&mut id);
                let segment = segment::Segment::create(&dir, 1)?;
                (
                    segment,
                    crate::util::hex(&id),
                    0,
                    record::GENESIS_PREV.to_string(),
                    None,
                )
            }
        };
        let known = last_note
            .as_deref()
            .map(|n| note::TreeHead::parse(note::text_of(n)))
            .transpose()
            .map_err(AuditError::Damaged)?;
        let (hashes, tree) = tree::file::HashFile::open(&dir, next_seq, known.as_ref())?;
        tracing::info!(dir = %dir.display(), %log_id, next_seq, "audit log open");
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            ..Shared::default()
        });
        let runtime = tokio::runtime::Handle::current();
        let writer = writer::Writer::new(writer::Parts {
            store: Box::new(writer::SegmentFiles::new(
                dir.clone(),
                lock,
                segment,
                hashes,
                audit.segment_bytes,
            )),
            chain: writer::Chain::new(log_id, tree, head, notes).of_replica(replica.clone()),
            cadence: writer::Cadence {
                every: audit.checkpoint_every,
                period: Duration::from_secs(audit.checkpoint_seconds),
            },
            signer: Box::new(checkpoint::CheckpointSigner::new(
                hsm,
                keys,
                key_certificate_days,
                runtime,
            )),
            shared: shared.clone(),
        });
        let (inbox, receiver) = std::sync::mpsc::channel();
        let nice = audit.writer_nice;
        let desk = writer::Desk::new(writer);
        let thread_desk = desk.clone();
        std::thread::Builder::new()
            .name("signetd-audit".to_string())
            .spawn(move || {
                prioritize(nice);
                thread_desk.run(receiver)
            })
            .map_err(|e| AuditError::Io(format!("cannot start the writer thread: {e}")))?;
        Ok(AuditLog {
            sink: Sink::Writer(inbox, desk),
            shared,
            dir: Some(audit.dir.clone()),
            reserve: Some(reserve),
        })
    }

    /// The latest durable checkpoint and what it covers, for serving; `None` before the
    /// first.
    pub fn published(&self) -> Option<tiles::Published> {
        let dir = self.dir.clone()?;
        let latest = self.shared.latest.lock().unwrap_or_else(|e| e.into_inner());
        let (note, size, verifier_key) = latest.clone()?;
        Some(tiles::Published {
            note,
            size,
            verifier_key,
            dir,
        })
    }

    /// A log that could not be opened: every append fails and the log reports
    /// unhealthy, so the daemon serves public endpoints and refuses to sign.
    pub fn unavailable() -> AuditLog {
        AuditLog {
            sink: Sink::Unavailable,
            shared: Arc::new(Shared::default()),
            dir: None,
            reserve: None,
        }
    }

    /// Appends `entry` and waits until it is durable. Returns its sequence number.
    pub async fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        let members = entry.members();
        self.request(|reply| writer::Message::Append(members, None, reply))
            .await
    }

    /// Starts appending `entry` and returns what waits until it is durable: the record
    /// is queued to the writer thread before this returns. With `here`, a record
    /// announced by `expected` while no other is announced is instead written on the
    /// calling thread if the writer is idle (the future is then ready): only for a
    /// thread that may block on the disk, never an async runtime thread.
    pub fn start_append(
        &self,
        entry: Entry,
        expected: Option<Expected>,
        here: bool,
    ) -> crate::util::BoxFuture<'static, Result<u64, AuditError>> {
        let mut members = entry.members();
        // Only this request's record is announced: nothing would join its batch.
        if let Sink::Writer(inbox, desk) = &self.sink
            && here
            && expected.is_some()
            && self.shared.expected.load(Ordering::SeqCst) == 1
        {
            match desk.write_alone(members) {
                Ok(alone) => {
                    drop(expected);
                    if alone.wake_thread {
                        let _ = inbox.send(writer::Message::Wake);
                    }
                    return Box::pin(std::future::ready(alone.result));
                }
                Err(back) => members = back,
            }
        }
        self.queue(|reply| writer::Message::Append(members, expected, reply))
    }

    /// Announces a record that will follow shortly (call before signing), so the writer
    /// can gather it into the same fsync as others arriving now.
    pub fn expect(&self) -> Expected {
        self.shared.expected.fetch_add(1, Ordering::SeqCst);
        Expected {
            shared: self.shared.clone(),
        }
    }

    /// Writes a checkpoint over everything so far (generating the audit key first if
    /// the token has none) and returns its `seq`.
    pub async fn checkpoint(&self) -> Result<u64, AuditError> {
        self.request(writer::Message::Checkpoint).await
    }

    /// Makes the writer look the audit key up again before its next checkpoint: the
    /// key changed state in the token.
    pub fn forget_key(&self) {
        if let Sink::Writer(inbox, _) = &self.sink {
            let _ = inbox.send(writer::Message::ForgetKey);
        }
    }

    /// Appends a final record (`stop`) and a checkpoint, and stops the writer. Later
    /// appends fail with [`AuditError::Unavailable`].
    pub async fn close(&self, entry: Entry) -> Result<u64, AuditError> {
        let members = entry.members();
        self.request(|reply| writer::Message::Close(members, reply))
            .await
    }

    /// Sends the writer the message `make` builds around a reply channel, and waits
    /// for the reply.
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<u64, AuditError>>) -> writer::Message,
    ) -> Result<u64, AuditError> {
        self.queue(make).await
    }

    /// Sends the writer the message `make` builds around a reply channel now, and
    /// returns what waits for the reply.
    fn queue(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<u64, AuditError>>) -> writer::Message,
    ) -> crate::util::BoxFuture<'static, Result<u64, AuditError>> {
        let inbox = match &self.sink {
            Sink::Writer(inbox, _) => inbox,
            Sink::Unavailable => return Box::pin(std::future::ready(Err(AuditError::Unavailable))),
        };
        let (reply, replied) = oneshot::channel();
        if inbox.send(make(reply)).is_err() {
            return Box::pin(std::future::ready(Err(AuditError::Unavailable)));
        }
        Box::pin(async move { replied.await.map_err(|_| AuditError::Unavailable)? })
    }

    /// Whether `records` refusal records may be written now: not while the free space
    /// under the log is below `[audit] reserve_bytes` ([`reserve::Reserve::admits`]).
    pub fn admits_refusals(&self, records: u64) -> bool {
        self.reserve.as_ref().is_none_or(|r| r.admits(records))
    }

    /// Whether the last write succeeded.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    /// What the writer has written so far.
    pub fn stats(&self) -> AuditStats {
        AuditStats {
            records: self.shared.records.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }
}

/// Raises the calling thread's priority to `nice`, if the process may. The writer uses
/// little CPU, but every signing request waits for its fsync: on busy CPUs, the wait for
/// the writer to be scheduled after each fsync otherwise dominates.
fn prioritize(nice: i32) {
    if nice == 0 {
        return;
    }
    match rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        Ok(()) => tracing::debug!(nice, "audit writer priority raised"),
        Err(e) => tracing::info!(
            nice,
            error = %e,
            "cannot raise the audit writer's priority (needs CAP_SYS_NICE, or LimitNICE=-10 under systemd); signing waits longer when CPUs are busy"
        ),
    }
}
