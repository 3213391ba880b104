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
//!
//! A call that hangs inside the module past the deadline does not take its worker's
//! place with it: the caller gets `hsm_timeout`, the worker is abandoned (it exits when
//! the call ever returns) and a new worker with a new session takes its place, up to
//! `size` abandoned workers at once, so a module that hangs every call cannot make the
//! pool grow without bound. Abandoned calls are counted.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
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

/// A job runs on a worker's session, or is told why there is none, and says how it
/// ended for the worker.
struct Job {
    /// The span the job was queued in (a request's): the worker enters it while it runs
    /// the job, so what the worker logs meanwhile carries the request id.
    span: tracing::Span,
    run: JobFn,
}

type JobFn = Box<dyn FnOnce(Result<&Session, &HsmError>) -> JobEnd + Send>;

/// What a finished job means for the worker that ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobEnd {
    /// Serve the next job.
    Next,
    /// The session was lost: reopen before the next job.
    SessionLost,
    /// The call outlived its deadline and a new worker took this one's place: exit.
    Abandoned,
}

/// Where a job is, shared by its caller and the worker that runs it.
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;
const ABANDONED: u8 = 3;

/// How many queued jobs each worker may have; past that, callers are refused at once
/// (`overloaded`) rather than waiting for room.
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
    /// Each worker drops its end after closing its session; [`SessionPool::close`]
    /// drops the pool's own and waits for the receiver to see them all gone.
    closed: std::sync::Mutex<mpsc::Receiver<()>>,
    closers: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    /// What a replacement worker needs.
    source: SessionSource,
    queue: async_channel::Receiver<Job>,
    /// Calls abandoned past their deadline, ever; and workers still stuck in one.
    abandoned: AtomicU64,
    stuck: Arc<AtomicUsize>,
    next_index: AtomicUsize,
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
        pin: Arc<SecretString>,
        size: usize,
        timeout: Duration,
        queue: Option<usize>,
    ) -> Result<Self, HsmError> {
        let source = SessionSource { ctx, slot, pin };
        let size = size.max(1);
        let (jobs, queue) =
            async_channel::bounded::<Job>(queue.unwrap_or(size * QUEUE_PER_WORKER).max(1));
        let (closer, closed) = mpsc::channel();
        // Dropping `pool` on an error closes the queue, which ends the started workers.
        let pool = SessionPool {
            jobs,
            size,
            timeout,
            closed: std::sync::Mutex::new(closed),
            closers: std::sync::Mutex::new(Some(closer)),
            source,
            queue,
            abandoned: AtomicU64::new(0),
            stuck: Arc::new(AtomicUsize::new(0)),
            next_index: AtomicUsize::new(size),
        };
        for index in 0..size {
            let session = pool.source.open()?;
            pool.spawn_worker(index, Some(session))?;
        }
        Ok(pool)
    }

    /// Starts worker `index` on `session`, or (a replacement) on a session it opens
    /// itself, off the caller's thread.
    fn spawn_worker(&self, index: usize, session: Option<Session>) -> Result<(), HsmError> {
        let (source, queue) = (self.source.clone(), self.queue.clone());
        let (stuck, closer) = (
            self.stuck.clone(),
            self.closers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        thread::Builder::new()
            .name(format!("pkcs11-{index}"))
            .spawn(move || {
                let worker = match session {
                    Some(session) => Worker::new(index, source, session),
                    None => Worker::opening(index, source),
                };
                if worker.run(&queue) == JobEnd::Abandoned {
                    stuck.fetch_sub(1, Ordering::SeqCst);
                    tracing::warn!(
                        worker = index,
                        "an abandoned PKCS#11 call returned; its worker exits"
                    );
                }
                drop(closer);
            })
            .map(|_| ())
            .map_err(|e| HsmError::Library(format!("cannot start PKCS#11 worker: {e}")))
    }

    /// Calls abandoned past their deadline since the pool started.
    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Workers still stuck inside an abandoned call.
    pub(crate) fn stuck(&self) -> usize {
        self.stuck.load(Ordering::Relaxed)
    }

    /// The job `state` outlived its deadline: if it has not started, it never will; if
    /// it is running, abandon its worker and start another in its place, unless `size`
    /// workers are stuck already.
    fn abandon(&self, state: &AtomicU8) {
        if state
            .compare_exchange(QUEUED, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return; // nothing is stuck; the worker that takes it skips it
        }
        if state
            .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return; // it has just finished
        }
        let count = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let stuck = self.stuck.fetch_add(1, Ordering::SeqCst) + 1;
        if stuck > self.size {
            tracing::error!(
                stuck,
                abandoned = count,
                "a PKCS#11 call hangs past its deadline; as many workers are stuck as the pool has, so no replacement is started"
            );
            return;
        }
        let index = self.next_index.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            worker = index,
            stuck,
            abandoned = count,
            "a PKCS#11 call hangs past its deadline; abandoning its worker and starting another"
        );
        if let Err(e) = self.spawn_worker(index, None) {
            tracing::error!(error = %e, "cannot start a replacement PKCS#11 worker");
        }
    }

    /// Number of worker threads (and sessions).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// When a request that starts now must have its answer: `timeout` from now.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// Runs `f` on some worker's session and returns its result, within `timeout` from
    /// now (see [`SessionPool::run_by`]).
    pub(crate) async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        self.run_by(self.deadline(), f).await
    }

    /// Runs `f` on some worker's session and returns its result, or `hsm_timeout` at
    /// `deadline`. The deadline covers waiting for a worker and the call itself; one
    /// already past is answered at once, without queueing a job. A caller that goes away
    /// first (its client disconnected, its request deadline passed) still leaves the
    /// call watched until `deadline`: see [`Watch`].
    pub(crate) async fn run_by<R, F>(
        self: &Arc<Self>,
        deadline: Instant,
        f: F,
    ) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        self.run_then_by(deadline, f, |r| r).await
    }

    /// [`SessionPool::run_by`], then `then` with `f`'s result, on the same worker: what
    /// a caller does next with it needs no hand-off back to the caller's thread first.
    /// `then` runs after the call has finished, outside the deadline: a slow `then` (a
    /// record's fsync) neither times the caller out with `hsm_timeout` nor costs the
    /// worker its place; the caller's own deadline (the request's) bounds it.
    pub(crate) async fn run_then_by<R, T, F, G>(
        self: &Arc<Self>,
        deadline: Instant,
        f: F,
        then: G,
    ) -> Result<T, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        G: FnOnce(R) -> T + Send + 'static,
        T: Send + 'static,
    {
        if deadline <= Instant::now() {
            return Err(HsmError::Timeout(self.timeout));
        }
        let (reply, result) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job_state = state.clone();
        let run = Box::new(move |session: Result<&Session, &HsmError>| {
            // The caller gave up (timeout, client gone): don't spend the token on it. The
            // state, not only the reply, says so: a caller whose deadline passes just as
            // the job starts either sees it running (and replaces this worker) or has
            // marked it abandoned first (and it is skipped here).
            if reply.is_closed()
                || job_state
                    .compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
            {
                return JobEnd::Next;
            }
            let outcome = session.map_err(HsmError::clone).and_then(f);
            let lost = matches!(&outcome, Err(e) if e.session_lost());
            match job_state.compare_exchange(RUNNING, FINISHED, Ordering::SeqCst, Ordering::SeqCst)
            {
                // The caller has its `hsm_timeout` and a new worker has this one's place.
                Err(_) => JobEnd::Abandoned,
                Ok(_) => {
                    let _ = reply.send(outcome.map(then));
                    if lost {
                        JobEnd::SessionLost
                    } else {
                        JobEnd::Next
                    }
                }
            }
        });
        let job = Job {
            span: tracing::Span::current(),
            run,
        };
        // A full queue refuses at once: waiting for room would only turn an overload into
        // timeouts for everyone.
        // Counted before a worker can take it, so the worker's decrement never comes first.
        crate::telemetry::hsm_queued(true);
        self.jobs.try_send(job).map_err(|e| {
            crate::telemetry::hsm_queued(false);
            match e {
                async_channel::TrySendError::Full(_) => HsmError::Overloaded,
                async_channel::TrySendError::Closed(_) => HsmError::PoolClosed,
            }
        })?;
        let mut watch = Watch {
            pool: self,
            state: &state,
            deadline,
            armed: true,
        };
        let exchange = async {
            // The reply is dropped unsent only if the job panicked on the worker.
            result
                .await
                .unwrap_or_else(|_| Err(HsmError::Library("a PKCS#11 job panicked".to_string())))
        };
        tokio::pin!(exchange);
        let outcome = match tokio::time::timeout_at(deadline.into(), &mut exchange).await {
            Ok(outcome) => outcome,
            // The call itself finished in time; what runs after it (`then`: a record
            // and its fsync) is not the token's time, and the request's own deadline
            // still bounds it.
            Err(_) if state.load(Ordering::SeqCst) == FINISHED => exchange.await,
            Err(_) => {
                self.abandon(&state);
                Err(HsmError::Timeout(self.timeout))
            }
        };
        watch.armed = false;
        outcome
    }

    /// [`SessionPool::run_then_by`] for an operation that is safe to repeat (signing,
    /// reading): if the session it ran on was lost, it runs once more, on a fresh session
    /// (the worker that lost its session opens a new one before its next job). Both tries
    /// share `deadline`: a first try that failed late leaves the second only what
    /// remains, so a request never waits longer than one `timeout_ms`.
    /// `then` runs on the worker whose try succeeded.
    pub(crate) async fn run_repeatable_then_by<R, T, F>(
        self: &Arc<Self>,
        deadline: Instant,
        f: F,
        then: Then<R, T>,
    ) -> Result<T, HsmError>
    where
        F: Fn(&Session) -> Result<R, HsmError> + Send + Sync + 'static,
        R: Send + 'static,
        T: Send + 'static,
    {
        let f = Arc::new(f);
        let again = f.clone();
        let then_again = then.clone();
        match self
            .run_then_by(deadline, move |s| f(s), move |r| then.call(r))
            .await
        {
            Err(e) if e.session_lost() => {
                tracing::warn!(error = %e, remaining = ?deadline.saturating_duration_since(Instant::now()), "PKCS#11 session lost; trying once more on a fresh session");
                self.run_then_by(deadline, move |s| again(s), move |r| then_again.call(r))
                    .await
            }
            other => other,
        }
    }

    /// Stops taking jobs and waits until every worker has finished its current job and
    /// closed its session, so the process never exits (running the module's global
    /// destructors) or finalizes the library while a worker is still inside the module;
    /// but only so long: a token that hangs inside a call must not hang shutdown with it.
    pub(crate) fn close(&self) {
        self.jobs.close();
        drop(
            self.closers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        let closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::RecvTimeoutError::Timeout) = closed.recv_timeout(CLOSE_DEADLINE) {
            tracing::warn!(
                "PKCS#11 workers did not finish within {CLOSE_DEADLINE:?}; leaving them"
            );
        }
    }
}

/// What runs after the one try of a repeatable call that succeeds, shared by its
/// tries: each may be the one, and only one is.
pub(crate) struct Then<R, T>(Arc<std::sync::Mutex<Option<ThenFn<R, T>>>>);

type ThenFn<R, T> = Box<dyn FnOnce(R) -> T + Send>;

impl<R, T> Clone for Then<R, T> {
    fn clone(&self) -> Self {
        Then(self.0.clone())
    }
}

impl<R, T> Then<R, T> {
    /// `f`, to run once.
    pub(crate) fn new(f: impl FnOnce(R) -> T + Send + 'static) -> Self {
        Then(Arc::new(std::sync::Mutex::new(Some(Box::new(f)))))
    }

    /// Runs it. A call succeeds once (the first success ends it), so only one try
    /// gets here.
    fn call(&self, r: R) -> T {
        let f = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("only the one try that succeeds runs its continuation");
        f(r)
    }
}

/// The deadline of a call whose caller is still waiting for it. Dropped armed, when the
/// caller's future is dropped before the answer (hyper drops a request's future when its
/// client disconnects; the request deadline drops it too), it hands the deadline to a
/// task of its own: otherwise a call that then hangs would never be abandoned, its worker
/// never replaced, and `/readyz` would not count it.
struct Watch<'a> {
    pool: &'a Arc<SessionPool>,
    state: &'a Arc<AtomicU8>,
    deadline: Instant,
    armed: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (pool, state, deadline) = (self.pool.clone(), self.state.clone(), self.deadline);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                // A call that finished meanwhile is left alone (see `abandon`).
                pool.abandon(&state);
            });
        }
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        self.close();
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
    /// A replacement worker: it opens its own session, or starts without one (and
    /// reopens it before each job, as after a lost session).
    fn opening(index: usize, source: SessionSource) -> Self {
        let mut worker = Worker {
            index,
            source,
            session: None,
            broken: Some(HsmError::NoSession("not opened yet".to_string())),
            retry_at: Instant::now(),
            backoff: REOPEN_BACKOFF.0,
        };
        worker.reopen_if_due();
        worker
    }

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

    /// Serves jobs until the queue closes, or until a job it ran was abandoned (another
    /// worker has its place); the session closes when `self` drops. Returns how it ended.
    fn run(mut self, queue: &async_channel::Receiver<Job>) -> JobEnd {
        while let Ok(Job { span, run: job }) = queue.recv_blocking() {
            let _request = span.enter();
            crate::telemetry::hsm_queued(false);
            self.reopen_if_due();
            crate::telemetry::hsm_worker_busy(true);
            let end = match (&self.session, &self.broken) {
                (Some(session), _) => catch_unwind(AssertUnwindSafe(|| job(Ok(session))))
                    .unwrap_or_else(|_| {
                        tracing::error!(worker = self.index, "a PKCS#11 job panicked");
                        JobEnd::Next
                    }),
                (None, Some(why)) => job(Err(why)),
                (None, None) => unreachable!("a worker without a session knows why"),
            };
            crate::telemetry::hsm_worker_busy(false);
            if end == JobEnd::Abandoned {
                return end;
            }
            if end == JobEnd::SessionLost {
                tracing::warn!(
                    worker = self.index,
                    "PKCS#11 session lost; reopening before the next job"
                );
                self.session = None;
                super::session_copies::forget();
                self.broken = Some(HsmError::NoSession("the session was lost".to_string()));
            }
        }
        JobEnd::Next
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
