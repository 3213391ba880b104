//! An audit log that could not be opened at start, tried again with backoff until it
//! opens: then signing works without a restart.
//!
//! Until it opens, every append fails and the sink reports why (for `/readyz`), so the
//! daemon serves the public endpoints and signs nothing, as before; a directory that a
//! mount, a permission fix or a full disk kept closed no longer needs a restart once it
//! is fixed. The first record written says how long the log could not be opened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::tiles::Published;
use super::{AuditError, AuditLog, AuditSink, CallerRecord, Entry, Event, Expected, LogOptions};
use crate::hsm::Hsm;
use crate::store::KeyMetadata;
use crate::util::BoxFuture;

/// The first retry comes this long after the failed open; each next one twice as
/// long after the last, up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(30);

/// The audit log, once it has opened.
pub struct ReopeningLog {
    log: OnceLock<AuditLog>,
    /// The last error of an attempt to open it.
    error: Mutex<String>,
    /// Set by `close`: no later attempt opens the log.
    closed: AtomicBool,
}

impl ReopeningLog {
    /// A sink for the log in `audit.dir`, whose first open failed with `error`; retries
    /// on the current tokio runtime until the log opens, the sink is closed, or dropped.
    pub fn start(
        options: LogOptions,
        hsm: Arc<Hsm>,
        keys: Arc<dyn KeyMetadata>,
        error: AuditError,
    ) -> Arc<ReopeningLog> {
        let sink = Arc::new(ReopeningLog {
            log: OnceLock::new(),
            error: Mutex::new(error.to_string()),
            closed: AtomicBool::new(false),
        });
        let since = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let weak = Arc::downgrade(&sink);
        tokio::spawn(retry(weak, options, hsm, keys, since));
        sink
    }

    fn last_error(&self) -> String {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Tries to open the log with backoff until it opens or `sink` is gone or closed.
async fn retry(
    sink: Weak<ReopeningLog>,
    options: LogOptions,
    hsm: Arc<Hsm>,
    keys: Arc<dyn KeyMetadata>,
    since: String,
) {
    let mut delay = FIRST_DELAY;
    let mut attempts = 1u64;
    loop {
        tokio::time::sleep(delay).await;
        let Some(sink) = sink.upgrade() else { return };
        if sink.closed.load(Ordering::SeqCst) {
            return;
        }
        attempts += 1;
        match AuditLog::open_with(&options, hsm.clone(), keys.clone()).await {
            Ok(log) => {
                let detail = format!(
                    "the audit log could not be opened from {since} until now ({attempts} attempts; last error: {}); signing was refused meanwhile",
                    sink.last_error()
                );
                let note = Entry::new(Event::Recovered)
                    .caller(CallerRecord::internal("audit"))
                    .detail(detail);
                if let Err(e) = log.append(note).await {
                    tracing::error!(error = %e, "the audit log opened but its first record failed");
                }
                if let Err(e) = log.checkpoint().await {
                    tracing::error!(error = %e, "cannot sign an audit checkpoint; retrying with every checkpoint");
                }
                tracing::warn!(
                    dir = %options.audit.dir.display(),
                    attempts,
                    "the audit log opened; signing resumes"
                );
                let _ = sink.log.set(log);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, attempts, retry_in = ?(delay * 2).min(MAX_DELAY), "the audit log still cannot be opened; signing is refused");
                *sink.error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

impl AuditSink for ReopeningLog {
    fn expect(&self) -> Option<Expected> {
        self.log.get().map(AuditLog::expect)
    }

    fn append(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>> {
        match self.log.get() {
            Some(log) => AuditSink::append(log, entry, expected),
            None => Box::pin(std::future::ready(Err(AuditError::Unavailable))),
        }
    }

    fn append_here(
        &self,
        entry: Entry,
        expected: Option<Expected>,
    ) -> BoxFuture<'static, Result<u64, AuditError>> {
        match self.log.get() {
            Some(log) => log.append_here(entry, expected),
            None => Box::pin(std::future::ready(Err(AuditError::Unavailable))),
        }
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        match self.log.get() {
            Some(log) => Box::pin(log.checkpoint()),
            None => Box::pin(async { Err(AuditError::Unavailable) }),
        }
    }

    fn close(&self, entry: Entry) -> BoxFuture<'_, Result<u64, AuditError>> {
        self.closed.store(true, Ordering::SeqCst);
        match self.log.get() {
            Some(log) => Box::pin(log.close(entry)),
            None => Box::pin(async { Err(AuditError::Unavailable) }),
        }
    }

    fn forget_key(&self) {
        if let Some(log) = self.log.get() {
            log.forget_key();
        }
    }

    fn is_healthy(&self) -> bool {
        self.log.get().is_some_and(AuditLog::is_healthy)
    }

    fn unavailable_because(&self) -> Option<String> {
        match self.log.get() {
            Some(log) => AuditSink::unavailable_because(log),
            None => Some(format!(
                "the audit log could not be opened ({}); retrying, at most {} s apart",
                self.last_error(),
                MAX_DELAY.as_secs()
            )),
        }
    }

    fn admits_refusals(&self, records: u64) -> bool {
        self.log
            .get()
            .is_none_or(|log| log.admits_refusals(records))
    }

    fn published(&self) -> Option<Published> {
        self.log.get().and_then(AuditLog::published)
    }
}
