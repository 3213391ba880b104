//! Builds the service's ports from the config: the one place that chooses
//! implementations.
//!
//! | port | implementation |
//! |---|---|
//! | [`Signer`] | the PKCS#11 token ([`Hsm`]) |
//! | [`ReplayStore`] | the state store in `[store]` ([`SqlStore`]: SQLite by default) |
//! | [`RevocationStore`] | the same [`SqlStore`]; revocations left as data objects in the token by earlier versions are imported into it at start |
//! | [`KeyMetadata`] | the same [`SqlStore`]; key records and certificates left as token objects by earlier versions are imported into it at start, before the audit log looks for its key |
//! | [`LeaseStore`] | the same [`SqlStore`]: the lifecycle lease replicas take turns by |
//! | [`ChangeFeed`] | PostgreSQL's `LISTEN/NOTIFY` on the same database; none for SQLite (polled at every tick) |
//! | [`AuditSink`] | the audit log in `[audit] dir` ([`AuditLog`]); if it cannot be opened, a [`ReopeningLog`] that refuses every record (the daemon serves public endpoints and signs nothing) and retries with backoff until the log opens |

use std::sync::Arc;

use crate::audit::{AuditLog, AuditSink, CallerRecord, Entry, Event, LogOptions, ReopeningLog};
use crate::config::Config;
use crate::error::Error;
use crate::hsm::Hsm;
use crate::signer::Signer;
use crate::store::{
    ChangeFeed, KeyImport, KeyMetadata, LeaseStore, ReplayStore, RevocationStore, SqlStore,
    StoreError,
};

/// What the service reaches outside itself through.
pub struct Ports {
    /// Makes signatures by key id.
    pub signer: Arc<dyn Signer>,
    /// Single-use `jti`s.
    pub replay: Arc<dyn ReplayStore>,
    /// Revoked tokens.
    pub revocations: Arc<dyn RevocationStore>,
    /// Key records and certificates (the token holds only the key pairs).
    pub keys: Arc<dyn KeyMetadata>,
    /// Leases among replicas sharing the store.
    pub leases: Arc<dyn LeaseStore>,
    /// Changes made by others, pushed by a store that can (PostgreSQL).
    pub changes: Option<Arc<dyn ChangeFeed>>,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
}

/// What a start moved from the token into the state store: state that versions before
/// the store kept as token objects.
#[derive(Debug, Default)]
pub struct Imported {
    /// Token revocations imported.
    pub revocations: usize,
    /// Key records and certificates imported.
    pub keys: KeyImport,
}

impl Imported {
    /// Whether anything moved from the token into the store.
    pub fn moved(&self) -> bool {
        self.revocations > 0 || self.keys.did_anything()
    }

    /// One line for the log and the CLI: what moved, and what was left in the token;
    /// `None` if there is neither.
    pub fn summary(&self) -> Option<String> {
        if !self.moved() && self.keys.left.is_empty() {
            return None;
        }
        Some(format!(
            "{}; imported {} token revocation(s)",
            self.keys, self.revocations
        ))
    }
}

/// Opens (and migrates) the state store `config` names, then moves into it what earlier
/// versions kept in the token `hsm` (revocations, key records, certificates): before
/// anything reads keys, so the audit writer and the registry find them in the store.
/// A failed import is logged and retried at the next start; the objects stay in the
/// token meanwhile.
pub async fn open_store(config: &Config, hsm: &Hsm) -> Result<(Arc<SqlStore>, Imported), Error> {
    let location = config
        .store
        .location(&config.audit.dir)
        .map_err(|e| StoreError(e.to_string()))?;
    let store = Arc::new(SqlStore::open(&location).await.inspect_err(|e| {
        tracing::error!(error = %e, "cannot open the state store");
    })?);
    let mut imported = Imported::default();
    match store.import_token_revocations(hsm).await {
        Ok(n) => imported.revocations = n,
        Err(e) => {
            tracing::error!(error = %e, "cannot import token revocations from the token's data objects; retried at the next start")
        }
    }
    match store.import_token_keys(hsm).await {
        Ok(keys) => imported.keys = keys,
        Err(e) => {
            tracing::error!(error = %e, "cannot import key records and certificates from the token's objects; retried at the next start")
        }
    }
    Ok((store, imported))
}

impl Ports {
    /// The ports `config` describes over the token `hsm`: the state store (opened,
    /// migrated, and holding whatever earlier versions left in the token, see
    /// [`open_store`]) and the audit log from `[audit]`. Fails if the state store cannot
    /// be opened or migrated.
    pub async fn from_config(config: &Config, hsm: &Arc<Hsm>) -> Result<Ports, Error> {
        let (store, imported) = open_store(config, hsm).await?;
        let keys: Arc<dyn KeyMetadata> = store.clone();
        // Without a log nothing may be signed, but verifiers still need the JWKS: start
        // not-ready rather than not at all, and keep trying to open it.
        let audit: Arc<dyn AuditSink> = match AuditLog::open(config, hsm.clone(), keys.clone())
            .await
        {
            Ok(log) => Arc::new(log),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the audit log; serving public endpoints only, signing is refused until it opens (retried with backoff)");
                ReopeningLog::start(LogOptions::from_config(config), hsm.clone(), keys, e)
            }
        };
        record_import(&*audit, &imported).await;
        let changes = match store.change_feed().await {
            Ok(feed) => feed.map(|f| Arc::new(f) as Arc<dyn ChangeFeed>),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for changes in the state store; following it at every lifecycle tick only");
                None
            }
        };
        Ok(Ports {
            changes,
            ..Ports::with_audit(hsm, store, audit)
        })
    }

    /// The ports over `hsm`, the state store `store` and the audit sink `audit`, with no
    /// change feed (the lifecycle tick polls).
    pub fn with_audit(hsm: &Arc<Hsm>, store: Arc<SqlStore>, audit: Arc<dyn AuditSink>) -> Ports {
        Ports {
            signer: hsm.clone(),
            replay: store.clone(),
            revocations: store.clone(),
            keys: store.clone(),
            leases: store,
            changes: None,
            audit,
        }
    }
}

/// A `state_import` record of what moved from the token into the store, if anything did
/// (what was only left behind is logged at every start, not recorded each time).
pub async fn record_import(audit: &dyn AuditSink, imported: &Imported) {
    let Some(summary) = imported.summary().filter(|_| imported.moved()) else {
        return;
    };
    let entry = Entry::new(Event::StateImport)
        .caller(CallerRecord::internal("daemon"))
        .ok()
        .detail(summary);
    super::record::note_to(audit, entry).await;
}
