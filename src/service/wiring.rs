//! Builds the service's ports from the config: the one place that chooses
//! implementations.
//!
//! | port | implementation |
//! |---|---|
//! | [`Signer`] | the PKCS#11 token ([`Hsm`]) |
//! | [`ReplayStore`] | the state store in `[store]` ([`SqlStore`]: SQLite by default) |
//! | [`RevocationStore`] | the same [`SqlStore`]; revocations left as data objects in the token by earlier versions are imported into it at start |
//! | [`AuditSink`] | the audit log in `[audit] dir` ([`AuditLog`]); if it cannot be opened, a [`ReopeningLog`] that refuses every record (the daemon serves public endpoints and signs nothing) and retries with backoff until the log opens |

use std::sync::Arc;

use crate::audit::{AuditLog, AuditSink, LogOptions, ReopeningLog};
use crate::config::Config;
use crate::error::Error;
use crate::hsm::Hsm;
use crate::signer::Signer;
use crate::store::{ChangeFeed, LeaseStore, ReplayStore, RevocationStore, SqlStore, StoreError};

/// What the service reaches outside itself through.
pub struct Ports {
    /// Makes signatures by key id.
    pub signer: Arc<dyn Signer>,
    /// Single-use `jti`s.
    pub replay: Arc<dyn ReplayStore>,
    /// Revoked tokens.
    pub revocations: Arc<dyn RevocationStore>,
    /// Leases among replicas sharing the store.
    pub leases: Arc<dyn LeaseStore>,
    /// Changes made by others, pushed by a store that can (PostgreSQL).
    pub changes: Option<Arc<dyn ChangeFeed>>,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
}

impl Ports {
    /// The ports `config` describes over the token `hsm`, with the audit log opened
    /// from `[audit]`. Fails if the state store cannot be opened or migrated.
    pub async fn from_config(config: &Config, hsm: &Arc<Hsm>) -> Result<Ports, Error> {
        // Without a log nothing may be signed, but verifiers still need the JWKS: start
        // not-ready rather than not at all, and keep trying to open it.
        let audit: Arc<dyn AuditSink> = match AuditLog::open(config, hsm.clone()).await {
            Ok(log) => Arc::new(log),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the audit log; serving public endpoints only, signing is refused until it opens (retried with backoff)");
                ReopeningLog::start(LogOptions::from_config(config), hsm.clone(), e)
            }
        };
        Ports::with_audit(config, hsm, audit).await
    }

    /// The ports `config` describes over `hsm`, with the audit sink `audit`: the state
    /// store is opened (and migrated) from `[store]`, and revocations still kept as data
    /// objects in the token are moved into it.
    pub async fn with_audit(
        config: &Config,
        hsm: &Arc<Hsm>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Ports, Error> {
        let location = config
            .store
            .location(&config.audit.dir)
            .map_err(|e| StoreError(e.to_string()))?;
        let store = Arc::new(SqlStore::open(&location).await.inspect_err(|e| {
            tracing::error!(error = %e, "cannot open the state store");
        })?);
        // Not fatal: the objects stay in the token and the next start imports them.
        if let Err(e) = store.import_token_revocations(hsm).await {
            tracing::error!(error = %e, "cannot import token revocations from the token's data objects; retried at the next start");
        }
        let changes = match store.change_feed().await {
            Ok(feed) => feed.map(|f| Arc::new(f) as Arc<dyn ChangeFeed>),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes in the state store; following it at every lifecycle tick only");
                None
            }
        };
        Ok(Ports {
            signer: hsm.clone(),
            replay: store.clone(),
            revocations: store.clone(),
            leases: store,
            changes,
            audit,
        })
    }
}
