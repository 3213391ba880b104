//! The token's health, and recovery from device and token errors without a restart.
//!
//! [`Core`] owns the session pool and the library context. Every operation goes through
//! [`Core::run`] or [`Core::run_repeatable`]; when one fails with a device or token
//! error ([`HsmError::device_fault`]), the core is marked as in an outage: requests are
//! refused at once (`hsm_unavailable`), one log line names the PKCS#11 function and
//! return value, [`HsmHealth`] changes (the service records it in the audit log), and a
//! background task re-initializes the library (`C_Finalize`, `C_Initialize`), finds the
//! token again by its selector, logs in every session, and looks up again every key it
//! kept a handle for, with exponential backoff until all of that succeeds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::session::Session;
use secrecy::SecretString;
use tokio::sync::watch;

use super::handles::{Handles, SigningHandle};
use super::session_pool::SessionPool;
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

/// What re-opening the token needs.
pub(crate) struct Setup {
    pub(crate) module: PathBuf,
    pub(crate) selector: TokenSelector,
    pub(crate) pin: Arc<SecretString>,
    pub(crate) sessions: usize,
    pub(crate) timeout: Duration,
    pub(crate) queue: Option<usize>,
}

/// The pool, the library context and the token's health.
pub(crate) struct Core {
    /// `None` only while recovery replaces it.
    pool: RwLock<Option<Arc<SessionPool>>>,
    /// Kept to call `C_Finalize` on it when recovering.
    ctx: Mutex<Option<Pkcs11>>,
    health: watch::Sender<HsmHealth>,
    setup: Setup,
    /// Private key handles by `CKA_ID`, for signing.
    pub(crate) handles: Handles,
}

impl Core {
    pub(crate) fn new(ctx: Pkcs11, pool: SessionPool, setup: Setup) -> Self {
        Core {
            pool: RwLock::new(Some(Arc::new(pool))),
            ctx: Mutex::new(Some(ctx)),
            health: watch::Sender::new(HsmHealth::Ready),
            setup,
            handles: Handles::default(),
        }
    }

    /// Watches the token's health.
    pub(crate) fn health(&self) -> watch::Receiver<HsmHealth> {
        self.health.subscribe()
    }

    /// The pool, unless the token is in an outage.
    fn pool(&self) -> Result<Arc<SessionPool>, HsmError> {
        if let HsmHealth::Outage { cause } = &*self.health.borrow() {
            return Err(HsmError::Outage(cause.clone()));
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

    /// Runs `f` on a worker's session (see [`SessionPool::run`]).
    pub(crate) async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let result = self.pool()?.run(f).await;
        self.observe(result)
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
    /// included within `deadline` (see [`SessionPool::run_repeatable_by`]).
    pub(crate) async fn run_repeatable_by<R, F>(
        self: &Arc<Self>,
        deadline: Instant,
        f: F,
    ) -> Result<R, HsmError>
    where
        F: Fn(&Session) -> Result<R, HsmError> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let result = self.pool()?.run_repeatable_by(deadline, f).await;
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
        {
            let began = self.health.send_if_modified(|health| match health {
                HsmHealth::Ready => {
                    *health = HsmHealth::Outage {
                        cause: cause.clone(),
                    };
                    true
                }
                HsmHealth::Outage { .. } => false,
            });
            if began {
                tracing::error!(%cause, "PKCS#11 token outage: {cause}; refusing requests and re-initializing the library in the background");
                tokio::spawn(recover(self.clone()));
            }
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
    let cause = match &*core.health.borrow() {
        HsmHealth::Outage { cause } => cause.clone(),
        HsmHealth::Ready => String::new(),
    };
    tracing::warn!(%cause, after = ?began.elapsed(), "PKCS#11 token recovered from the outage ({cause}): library re-initialized, token found, keys looked up again; signing resumes");
    core.health.send_replace(HsmHealth::Ready);
}
