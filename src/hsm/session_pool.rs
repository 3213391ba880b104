//! A fixed pool of worker threads, each owning one long-lived, logged-in session.
//!
//! `Session` is `Send` but not `Sync`, and a PKCS#11 session runs one operation at a
//! time, so each worker thread owns exactly one and async handlers hand it jobs over a
//! bounded channel. Login state is per application and token, so the first worker's
//! `C_Login` logs in every session; later workers see `CKR_USER_ALREADY_LOGGED_IN`,
//! which counts as success. Nothing is opened or logged into per request.
//!
//! When a session is lost (token removed, session closed by the library), its worker
//! opens and logs in a new one before its next job, backing off exponentially while that
//! fails. A PIN the token rejects is never tried again: retrying a wrong PIN on every
//! request would lock it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;

use std::thread;
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use tokio::sync::oneshot;

use super::HsmError;

/// A job runs on a worker's session, or is told why there is none, and says whether the
/// session it used was lost.
type Job = Box<dyn FnOnce(Result<&Session, &HsmError>) -> bool + Send>;

/// How many queued jobs each worker may have before callers wait for room.
const QUEUE_PER_WORKER: usize = 256;
/// How long dropping the pool waits for workers to close their sessions.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// First and longest wait between attempts to reopen a lost session.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Worker threads with their sessions, fed through one bounded queue.
pub(crate) struct SessionPool {
    jobs: async_channel::Sender<Job>,
    size: usize,
    timeout: Duration,
    /// Each worker drops its end after closing its session. (In a mutex only to make the
    /// pool `Sync`; just `drop` receives from it.)
    closed: std::sync::Mutex<mpsc::Receiver<()>>,
    closers: Option<mpsc::Sender<()>>,
}

/// What a worker needs to (re)open its session.
#[derive(Clone)]
struct SessionSource {
    ctx: Pkcs11,
    slot: Slot,
    pin: Arc<SecretString>,
}

impl SessionSource {
    fn open(&self) -> Result<Session, HsmError> {
        let session = self.ctx.open_rw_session(self.slot)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e.into()),
        }
    }
}

impl SessionPool {
    /// Starts `size` workers; returns once every one has a logged-in session, or with the
    /// first worker's error (a wrong PIN stops the start-up at the first login).
    pub(crate) fn start(
        ctx: Pkcs11,
        slot: Slot,
        pin: SecretString,
        size: usize,
        timeout: Duration,
    ) -> Result<Self, HsmError> {
        let source = SessionSource {
            ctx,
            slot,
            pin: Arc::new(pin),
        };
        let size = size.max(1);
        let (jobs, queue) = async_channel::bounded::<Job>(size * QUEUE_PER_WORKER);
        let (closer, closed) = mpsc::channel();
        // Dropping `pool` on an error closes the queue, which ends the started workers.
        let pool = SessionPool {
            jobs,
            size,
            timeout,
            closed: std::sync::Mutex::new(closed),
            closers: Some(closer),
        };
        for index in 0..size {
            let session = source.open()?;
            let (source, queue) = (source.clone(), queue.clone());
            let closer = pool.closers.clone();
            thread::Builder::new()
                .name(format!("pkcs11-{index}"))
                .spawn(move || {
                    Worker::new(index, source, session).run(&queue);
                    drop(closer);
                })
                .map_err(|e| HsmError::Library(format!("cannot start PKCS#11 worker: {e}")))?;
        }
        Ok(pool)
    }

    /// Number of worker threads (and sessions).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` on some worker's session and returns its result. One deadline covers
    /// waiting for room in the queue, waiting for a worker, and the call itself.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |session| {
            // The caller gave up (timeout, client gone): don't spend the token on it.
            if reply.is_closed() {
                return false;
            }
            let outcome = session.map_err(HsmError::clone).and_then(f);
            let lost = matches!(&outcome, Err(e) if e.session_lost());
            let _ = reply.send(outcome);
            lost
        });
        let exchange = async {
            self.jobs
                .send(job)
                .await
                .map_err(|_| HsmError::PoolClosed)?;
            // The reply is dropped unsent only if the job panicked on the worker.
            result
                .await
                .unwrap_or_else(|_| Err(HsmError::Library("a PKCS#11 job panicked".to_string())))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(HsmError::Timeout(self.timeout)))
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        // Each worker ends after its current job and closes its session. Wait for that,
        // so the process never exits (running the module's global destructors) while a
        // worker is still inside the module; but only so long: a token that hangs inside
        // a call must not hang shutdown with it.
        self.jobs.close();
        self.closers = None;
        let closed = self
            .closed
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CLOSE_DEADLINE) {
            tracing::warn!(
                "PKCS#11 workers did not finish within {CLOSE_DEADLINE:?}; leaving them"
            );
        }
    }
}

/// One worker thread's state.
struct Worker {
    index: usize,
    source: SessionSource,
    session: Option<Session>,
    /// Why there is no session, while there is none.
    broken: Option<HsmError>,
    /// When a lost session may next be reopened, and the wait after that.
    retry_at: Instant,
    backoff: Duration,
}

impl Worker {
    fn new(index: usize, source: SessionSource, session: Session) -> Self {
        Worker {
            index,
            source,
            session: Some(session),
            broken: None,
            retry_at: Instant::now(),
            backoff: REOPEN_BACKOFF.0,
        }
    }

    /// Serves jobs until the queue closes; the session closes when `self` drops.
    fn run(mut self, queue: &async_channel::Receiver<Job>) {
        while let Ok(job) = queue.recv_blocking() {
            self.reopen_if_due();
            let lost = match (&self.session, &self.broken) {
                (Some(session), _) => catch_unwind(AssertUnwindSafe(|| job(Ok(session))))
                    .unwrap_or_else(|_| {
                        tracing::error!(worker = self.index, "a PKCS#11 job panicked");
                        false
                    }),
                (None, Some(why)) => job(Err(why)),
                (None, None) => unreachable!("a worker without a session knows why"),
            };
            if lost {
                tracing::warn!(
                    worker = self.index,
                    "PKCS#11 session lost; reopening before the next job"
                );
                self.session = None;
                self.broken = Some(HsmError::NoSession("the session was lost".to_string()));
            }
        }
    }

    fn reopen_if_due(&mut self) {
        let login_rejected = matches!(
            self.broken,
            Some(HsmError::PinIncorrect | HsmError::PinLocked)
        );
        if self.session.is_some() || login_rejected || Instant::now() < self.retry_at {
            return;
        }
        match self.source.open() {
            Ok(session) => {
                tracing::info!(worker = self.index, "PKCS#11 session reopened");
                self.session = Some(session);
                self.broken = None;
                self.backoff = REOPEN_BACKOFF.0;
            }
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, retry_in = ?self.backoff, "cannot reopen PKCS#11 session");
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(REOPEN_BACKOFF.1);
                self.broken = Some(e);
            }
        }
    }
}
