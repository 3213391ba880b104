//! Builds the service's ports from the config: the one place that chooses
//! implementations.
//!
//! | port | implementation |
//! |---|---|
//! | [`Signer`] | the PKCS#11 token ([`Hsm`]) |
//! | [`ReplayStore`] | process memory ([`MemoryReplayStore`]), `[verify] replay_capacity` |
//! | [`RevocationStore`] | data objects in the token ([`TokenRevocations`]) |
//! | [`AuditSink`] | the audit log in `[audit] dir` ([`AuditLog`]); if it cannot be opened, a [`ReopeningLog`] that refuses every record (the daemon serves public endpoints and signs nothing) and retries with backoff until the log opens |

use std::sync::Arc;

use crate::audit::{AuditLog, AuditSink, ReopeningLog};
use crate::config::Config;
use crate::hsm::Hsm;
use crate::signer::Signer;
use crate::store::{MemoryReplayStore, ReplayStore, RevocationStore, TokenRevocations};
use crate::util::unix_now;

/// What the service reaches outside itself through.
pub struct Ports {
    /// Makes signatures by key id.
    pub signer: Arc<dyn Signer>,
    /// Single-use `jti`s.
    pub replay: Arc<dyn ReplayStore>,
    /// Revoked tokens.
    pub revocations: Arc<dyn RevocationStore>,
    /// The audit log.
    pub audit: Arc<dyn AuditSink>,
}

impl Ports {
    /// The ports `config` describes over the token `hsm`, with the audit log opened
    /// from `[audit]`.
    pub async fn from_config(config: &Config, hsm: &Arc<Hsm>) -> Ports {
        // Without a log nothing may be signed, but verifiers still need the JWKS: start
        // not-ready rather than not at all, and keep trying to open it.
        let audit: Arc<dyn AuditSink> = match AuditLog::open(config, hsm.clone()).await {
            Ok(log) => Arc::new(log),
            Err(e) => {
                tracing::error!(error = %e, "cannot open the audit log; serving public endpoints only, signing is refused until it opens (retried with backoff)");
                ReopeningLog::start(
                    config.audit.clone(),
                    config.attestation.key_certificate_days,
                    hsm.clone(),
                    e,
                )
            }
        };
        Ports::with_audit(config, hsm, audit)
    }

    /// The ports `config` describes over `hsm`, with the audit sink `audit`.
    pub fn with_audit(config: &Config, hsm: &Arc<Hsm>, audit: Arc<dyn AuditSink>) -> Ports {
        Ports {
            signer: hsm.clone(),
            replay: Arc::new(MemoryReplayStore::new(
                config.verify.replay_capacity,
                unix_now(),
            )),
            revocations: Arc::new(TokenRevocations::new(hsm.clone())),
            audit,
        }
    }
}
