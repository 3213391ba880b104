//! The token's health, and recovery from device and token errors without a restart.
//!
//! [`Core`] owns the session pool and the library context. Every operation goes through
//! [`Core::run`], [`Core::run_by`] or [`Core::run_repeatable_then_by`]; when one fails with a
//! device or token error ([`HsmError::device_fault`]), the core is marked as in an
//! outage: requests are refused at once (`hsm_unavailable`), one log line names the
//! PKCS#11 function and return value, [`HsmHealth`] changes (the daemon records every
//! change, in order, in the audit log: [`HealthChanges`]), and a
//! background task re-initializes the library (`C_Finalize`, `C_Initialize`), finds the
//! token again by its selector, logs in every session, and looks up again every key it
//! kept a handle for, with exponential backoff until all of that succeeds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use secrecy::SecretString;
use tokio::sync::mpsc;

use super::handles::{Handles, SigningHandle};
use super::session_pool::{SessionPool, Then};
use super::{HsmError, KeyPairInfo, TokenSelector, context, objects};

/// First and longest wait between recovery attempts.
const RECOVERY_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(500), Duration::from_secs(30));

/// Whether the token can be used now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HsmHealth {
    /// Operations reach the token.
    Ready,
    /// A device or token error stopped operations; recovery is under way.
    Outage {
        /// What failed: "C_Sign returned CKR_DEVICE_ERROR".
        cause: String,
    },
}

/// The changes of the token's health since [`Hsm::health_changes`](super::Hsm::health_changes)
/// was called: each one, in order. Nothing is dropped or merged, so an outage that
/// begins and ends before the receiver looks still shows as both changes. There are at
/// most two per recovery attempt (each waits at least 0.5 s), so the unbounded queue
/// stays small even while its reader is held up.
pub type HealthChanges = mpsc::UnboundedReceiver<HsmHealth>;

/// The token's health now (what requests check) and whoever records its changes, under
/// one lock, so every subscriber gets the changes in the order they were made.
struct Health(Mutex<HealthState>);

struct HealthState {
    now: HsmHealth,
    subscribers: Vec<mpsc::UnboundedSender<HsmHealth>>,
}

impl Health {
    fn new() -> Self {
        Health(Mutex::new(HealthState {
            now: HsmHealth::Ready,
            subscribers: Vec::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> HsmHealth {
        self.lock().now.clone()
    }

    fn subscribe(&self) -> HealthChanges {
        let (sender, changes) = mpsc::unbounded_channel();
        self.lock().subscribers.push(sender);
        changes
    }

    /// Sets the health to `next` unless it is that already (an outage keeps its first
    /// cause), and tells every subscriber. Returns whether it changed.
    fn set(&self, next: HsmHealth) -> bool {
        let mut state = self.lock();
        let same = matches!(
            (&state.now, &next),
            (HsmHealth::Ready, HsmHealth::Ready)
                | (HsmHealth::Outage { .. }, HsmHealth::Outage { .. })
        );
        if same {
            return false;
        }
        state.now = next.clone();
        crate::telemetry::hsm_health(next == HsmHealth::Ready);
        state.subscribers.retain(|s| s.send(next.clone()).is_ok());
        true
    }
}

/// What re-opening the token needs.
pub(crate) struct Setup {
    pub(crate) module: PathBuf,
    pub(crate) selector: TokenSelector,
    pub(crate) pin: Arc<SecretString>,
    pub(crate) sessions: usize,
    pub(crate) timeout: Duration,
    pub(crate) queue: Option<usize>,
    pub(crate) session_copies: bool,
}

/// The pool, the library context and the token's health.
pub(crate) struct Core {
    /// `None` only while recovery replaces it.
    pool: RwLock<Option<Arc<SessionPool>>>,
    /// Kept to call `C_Finalize` on it when recovering.
    ctx: Mutex<Option<Pkcs11>>,
    health: Health,
    setup: Setup,
    /// Private key handles by `CKA_ID`, for signing.
    pub(crate) handles: Handles,
}

impl Core {
    pub(crate) fn new(ctx: Pkcs11, pool: SessionPool, setup: Setup) -> Self {
        Core {
            pool: RwLock::new(Some(Arc::new(pool))),
            ctx: Mutex::new(Some(ctx)),
            health: Health::new(),
            setup,
            handles: Handles::default(),
        }
    }

    /// The token's health now.
    pub(crate) fn health(&self) -> HsmHealth {
        self.health.now()
    }

    /// Every change of the token's health from now on, in order.
    pub(crate) fn health_changes(&self) -> HealthChanges {
        self.health.subscribe()
    }

    /// The pool, unless the token is in an outage.
    fn pool(&self) -> Result<Arc<SessionPool>, HsmError> {
        if let HsmHealth::Outage { cause } = self.health.now() {
            return Err(HsmError::Outage(cause));
        }
        let pool = self.pool.read().unwrap_or_else(|p| p.into_inner());
        pool.clone()
            .ok_or_else(|| HsmError::Outage("re-initializing".to_string()))
    }

    /// Calls abandoned past their deadline by the current pool, and workers still stuck
    /// in one.
    pub(crate) fn hung_calls(&self) -> (u64, usize) {
        let pool = self.pool.read().unwrap_or_else(|p| p.into_inner());
        pool.as_ref().map_or((0, 0), |p| (p.abandoned(), p.stuck()))
    }

    /// Runs `f` on a worker's session within `timeout_ms` from now (see
    /// [`Core::run_by`]).
    pub(crate) async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        self.run_by(self.deadline(), f).await
    }

    /// Whether signing uses session copies of the keys (`[pkcs11] session_copies`).
    pub(crate) fn session_copies(&self) -> bool {
        self.setup.session_copies
    }

    /// The configured `timeout_ms`: what `hsm_timeout` reports.
    pub(crate) fn timeout(&self) -> Duration {
        self.setup.timeout
    }

    /// When a request that starts now must have its answer: `timeout_ms` from now. A
    /// request that makes several calls (a retry, a key lookup) passes it to each.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.setup.timeout
    }

    /// Runs `f` on a worker's session, answering `hsm_timeout` at `deadline` (see
    /// [`SessionPool::run_by`]).
    pub(crate) async fn run_by<R, F>(
        self: &Arc<Self>,
        deadline: Instant,
        f: F,
    ) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let result = self.pool()?.run_by(deadline, f).await;
        self.observe(result)
    }

    /// Runs `f`, safe to repeat, on a worker's session, the retry on a lost session
    /// included within `deadline`, then `then` on the worker whose try succeeded (see
    /// [`SessionPool::run_repeatable_then_by`]).
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
        let result = self.pool()?.run_repeatable_then_by(deadline, f, then).await;
        self.observe(result)
    }

    /// Starts an outage (once) if `result` is a device or token error.
    fn observe<R>(self: &Arc<Self>, result: Result<R, HsmError>) -> Result<R, HsmError> {
        if let Err(e) = &result
            && e.device_fault()
        {
            self.begin_outage(e.call_summary());
        }
        result
    }

    /// Starts an outage, unless one is under way: requests are refused and the library
    /// re-initialized in the background until the token and its keys are found again.
    pub(crate) fn begin_outage(self: &Arc<Self>, cause: String) {
        let began = self.health.set(HsmHealth::Outage {
            cause: cause.clone(),
        });
        if began {
            tracing::error!(%cause, "PKCS#11 token outage: {cause}; refusing requests and re-initializing the library in the background");
            tokio::spawn(recover(self.clone()));
        }
    }

    /// Keeps the private key's handle of a pair just read from the token, for signing.
    pub(crate) fn remember(&self, info: &KeyPairInfo, objects: objects::KeyObjects) {
        let handle = SigningHandle {
            handle: objects.private,
            algorithm: info.algorithm,
            public_key: info.public_key.clone(),
        };
        self.handles.insert(&info.id, handle);
    }

    /// Closes the old pool, finalizes and re-initializes the library, finds the token
    /// and logs in a new pool. Blocking.
    fn reopen(&self) -> Result<Arc<SessionPool>, HsmError> {
        let old = self.pool.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old {
            old.close();
        }
        let old_ctx = self.ctx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ctx) = old_ctx
            && let Err(e) = ctx.finalize()
        {
            tracing::warn!(error = %e, "C_Finalize failed while recovering; initializing anyway");
        }
        let ctx = context::load(&self.setup.module)?;
        *self.ctx.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx.clone());
        let (slot, token) = context::select_token(&ctx, &self.setup.selector)?;
        let pool = SessionPool::start(
            ctx,
            slot,
            self.setup.pin.clone(),
            self.setup.sessions,
            self.setup.timeout,
            self.setup.queue,
        )?;
        tracing::info!(token = %token.label, serial = %token.serial, "PKCS#11 token found again");
        Ok(Arc::new(pool))
    }

    /// One recovery attempt: reopen, then look up every key kept for signing.
    async fn reinitialize(self: &Arc<Self>) -> Result<(), HsmError> {
        let core = self.clone();
        let pool = tokio::task::spawn_blocking(move || core.reopen())
            .await
            .map_err(|e| HsmError::Library(format!("recovery task failed: {e}")))??;
        for id in self.handles.ids() {
            let lookup = id.clone();
            match pool
                .run(move |s| objects::key_pair_by_id(s, &lookup))
                .await?
            {
                Some((info, objects)) => self.remember(&info, objects),
                None => self.handles.remove(&id),
            }
        }
        *self.pool.write().unwrap_or_else(|p| p.into_inner()) = Some(pool);
        Ok(())
    }
}

/// Re-initializes until it succeeds, then ends the outage.
async fn recover(core: Arc<Core>) {
    let began = Instant::now();
    let mut wait = RECOVERY_BACKOFF.0;
    loop {
        tokio::time::sleep(wait).await;
        match core.reinitialize().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "PKCS#11 recovery attempt failed");
                wait = (wait * 2).min(RECOVERY_BACKOFF.1);
            }
        }
    }
    let cause = match core.health.now() {
        HsmHealth::Outage { cause } => cause,
        HsmHealth::Ready => String::new(),
    };
    tracing::warn!(%cause, after = ?began.elapsed(), "PKCS#11 token recovered from the outage ({cause}): library re-initialized, token found, keys looked up again; signing resumes");
    core.health.set(HsmHealth::Ready);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outage(cause: &str) -> HsmHealth {
        HsmHealth::Outage {
            cause: cause.to_string(),
        }
    }

    #[test]
    fn an_outage_that_ends_before_anyone_looks_is_still_two_changes() {
        let health = Health::new();
        let mut changes = health.subscribe();
        assert!(health.set(outage("C_Sign returned CKR_DEVICE_ERROR")));
        assert!(!health.set(outage("a later error")), "one outage at a time");
        assert!(health.set(HsmHealth::Ready));
        assert!(!health.set(HsmHealth::Ready));
        assert!(health.set(outage("C_FindObjects returned CKR_TOKEN_NOT_PRESENT")));
        assert_eq!(
            health.now(),
            outage("C_FindObjects returned CKR_TOKEN_NOT_PRESENT")
        );
        assert!(health.set(HsmHealth::Ready));
        // Read only now, after both outages have come and gone: every change, in order,
        // each outage with its first cause.
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            seen.push(change);
        }
        assert_eq!(
            seen,
            [
                outage("C_Sign returned CKR_DEVICE_ERROR"),
                HsmHealth::Ready,
                outage("C_FindObjects returned CKR_TOKEN_NOT_PRESENT"),
                HsmHealth::Ready,
            ]
        );
        assert_eq!(health.now(), HsmHealth::Ready);
    }

    #[test]
    fn a_subscriber_sees_changes_from_when_it_subscribed_and_a_gone_one_is_dropped() {
        let health = Health::new();
        let gone = health.subscribe();
        health.set(outage("first"));
        let mut late = health.subscribe();
        drop(gone);
        health.set(HsmHealth::Ready);
        assert_eq!(late.try_recv().ok(), Some(HsmHealth::Ready));
        assert!(late.try_recv().is_err());
        assert_eq!(
            health.lock().subscribers.len(),
            1,
            "the dropped receiver's sender is gone"
        );
    }
}
