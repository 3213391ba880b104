//! A fixed pool of worker threads, each owning one long-lived, logged-in session.
//!
//! `Session` is `Send` but not `Sync`, and a PKCS#11 session runs one operation at a
//! time, so each worker thread owns exactly one and async handlers hand it jobs over a
//! bounded channel. Login state is per application and token, so the first worker's
//! `C_Login` logs in every session; later workers see `CKR_USER_ALREADY_LOGGED_IN`,
//! which counts as success. Nothing is opened or logged into per request.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use tokio::sync::oneshot;

use super::HsmError;

/// A job runs on a worker's session and says whether that session was lost.
type Job = Box<dyn FnOnce(&Session) -> bool + Send>;

/// How many queued jobs each worker may have before callers wait for room.
const QUEUE_PER_WORKER: usize = 256;

/// Worker threads with their sessions, fed through one bounded queue.
pub(crate) struct SessionPool {
    jobs: async_channel::Sender<Job>,
    workers: Vec<JoinHandle<()>>,
    timeout: Duration,
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
        let (jobs, queue) = async_channel::bounded::<Job>(size.max(1) * QUEUE_PER_WORKER);
        let mut pool = SessionPool {
            jobs,
            workers: Vec::with_capacity(size),
            timeout,
        };
        for index in 0..size.max(1) {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (source, queue) = (source.clone(), queue.clone());
            let handle = thread::Builder::new()
                .name(format!("pkcs11-{index}"))
                .spawn(move || worker(index, source, queue, ready_tx))
                .map_err(|e| HsmError::Library(format!("cannot start PKCS#11 worker: {e}")))?;
            pool.workers.push(handle);
            // Dropping `pool` on error closes the queue and joins the started workers.
            ready_rx.recv().map_err(|_| HsmError::PoolClosed)??;
        }
        Ok(pool)
    }

    /// Number of worker threads (and sessions).
    pub(crate) fn size(&self) -> usize {
        self.workers.len()
    }

    /// Runs `f` on some worker's session and returns its result.
    pub(crate) async fn run<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |session| {
            let outcome = f(session);
            let lost = matches!(&outcome, Err(e) if e.session_lost());
            // The caller may have given up (timeout, client gone); nothing to do then.
            let _ = reply.send(outcome);
            lost
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| HsmError::PoolClosed)?;
        match tokio::time::timeout(self.timeout, result).await {
            Ok(Ok(outcome)) => outcome,
            // The job's reply was dropped unsent: the job panicked on the worker.
            Ok(Err(_)) => Err(HsmError::Library("a PKCS#11 job panicked".to_string())),
            Err(_) => Err(HsmError::Timeout(self.timeout)),
        }
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        // Closing the queue ends each worker after its current job; its session closes
        // when the worker returns.
        self.jobs.close();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn worker(
    index: usize,
    source: SessionSource,
    queue: async_channel::Receiver<Job>,
    ready: mpsc::Sender<Result<(), HsmError>>,
) {
    let mut session = match source.open() {
        Ok(session) => {
            let _ = ready.send(Ok(()));
            session
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    while let Ok(job) = queue.recv_blocking() {
        // A panicking job must not take a session (and its thread) out of the pool.
        let lost = catch_unwind(AssertUnwindSafe(|| job(&session))).unwrap_or_else(|_| {
            tracing::error!(worker = index, "a PKCS#11 job panicked");
            false
        });
        if lost {
            tracing::warn!(worker = index, "PKCS#11 session lost; opening a new one");
            match source.open() {
                Ok(fresh) => session = fresh,
                Err(e) => {
                    tracing::error!(worker = index, error = %e, "cannot reopen PKCS#11 session")
                }
            }
        }
    }
}
