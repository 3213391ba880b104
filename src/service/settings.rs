//! The settings a running service may take anew: the config with the policy and the
//! rate limits built from it, swapped whole by a reload (SIGHUP).
//!
//! A request takes one [`Settings`] at its start and uses it to the end, so it never
//! sees the issuer of one config and the policy of another. What a reload may change,
//! and what is refused until a restart, is decided by [`Config::changes_to`].

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::audit::{CallerRecord, Entry, Event};
use crate::config::{Config, ConfigChanges, IssuerConfig};
use crate::error::Error;
use crate::policy::Policy;
use crate::service::Service;
use crate::service::limits::RateLimits;

/// The config and what is built from it, as one value.
pub struct Settings {
    /// The config.
    pub config: Arc<Config>,
    /// Who may do what, from `config`.
    pub policy: Arc<Policy>,
    /// Requests per principal and per issuer, from `config`.
    pub rate_limits: Arc<RateLimits>,
}

impl Settings {
    /// The settings of a first config.
    pub fn new(config: Config) -> Settings {
        Settings {
            policy: Arc::new(Policy::new(&config)),
            rate_limits: Arc::new(RateLimits::new(&config)),
            config: Arc::new(config),
        }
    }

    /// The settings of `config` replacing `self`: rate limiters whose rates did not
    /// change are kept with what callers have used.
    fn succeeded_by(&self, config: Config) -> Settings {
        Settings {
            policy: Arc::new(Policy::new(&config)),
            rate_limits: Arc::new(RateLimits::reloaded(&config, Some(&self.rate_limits))),
            config: Arc::new(config),
        }
    }

    /// An issuer by name, or [`Error::UnknownIssuer`].
    pub fn issuer(&self, name: &str) -> Result<&IssuerConfig, Error> {
        self.config
            .issuer(name)
            .ok_or_else(|| Error::UnknownIssuer(name.to_string()))
    }
}

/// Why a reload was refused: the running settings stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadRefused {
    /// The file does not load or validate.
    #[error("the new config is invalid: {0}")]
    Invalid(String),
    /// It changes settings bound to what was opened at start.
    #[error("the new config changes {0}, which take effect only at a restart")]
    RestartRequired(String),
    /// The audit log cannot take the record every reload leaves.
    #[error("the audit log is unavailable; a reload waits until it is back")]
    AuditUnavailable,
}

impl ReloadRefused {
    /// The stable code in logs and the audit record.
    pub fn code(&self) -> &'static str {
        match self {
            ReloadRefused::Invalid(_) => "config_invalid",
            ReloadRefused::RestartRequired(_) => "restart_required",
            ReloadRefused::AuditUnavailable => "audit_unavailable",
        }
    }
}

impl Service {
    /// The settings as of now; cheap (an `Arc` clone under a read lock). Take them once
    /// per request.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the config at `path` and, if it is valid and changes only what a reload
    /// may change, runs on it from the next request on: issuers, policy, rate limits,
    /// the request deadline, publication and lifecycle settings. Connections and keys
    /// are untouched. Every attempt leaves a `config_reload` audit record (`ok` with what
    /// changed, or `refused` with why); a refused one leaves the running config as it is.
    pub async fn reload_config(&self, path: &Path) -> Result<ConfigChanges, ReloadRefused> {
        let loaded = std::fs::read(path)
            .map(|bytes| crate::util::hex(&Sha256::digest(&bytes)))
            .map_err(|e| e.to_string())
            .and_then(|sha256| {
                Config::load(path)
                    .map(|config| (config, sha256))
                    .map_err(|e| e.to_string())
            });
        let result = match loaded {
            Err(why) => Err(ReloadRefused::Invalid(why)),
            Ok((config, sha256)) => self.apply(config, &sha256).await,
        };
        match &result {
            Ok(changes) => {
                tracing::info!(config = %path.display(), changes = %changes.summary(), "config reloaded")
            }
            Err(refused) => {
                tracing::error!(config = %path.display(), code = refused.code(), "config reload refused, the running config stays: {refused}");
                if !matches!(refused, ReloadRefused::AuditUnavailable) {
                    let entry = reload_entry().refused(refused.code(), refused);
                    if let Err(e) = self.audit().append(entry, None).await {
                        tracing::error!(error = %e, "the config_reload audit record was not written");
                    }
                }
            }
        }
        result
    }

    /// Swaps in `config` if a reload may, then rebuilds what is published from it.
    async fn apply(&self, config: Config, sha256: &str) -> Result<ConfigChanges, ReloadRefused> {
        // Key changes and reloads take turns: a tick plans from one config throughout.
        let turn = self.lifecycle_turn().await;
        let current = self.settings();
        let changes = current.config.changes_to(&config);
        if !changes.restart_required.is_empty() {
            return Err(ReloadRefused::RestartRequired(
                changes.restart_required.join(", "),
            ));
        }
        if !self.audit().is_healthy() {
            return Err(ReloadRefused::AuditUnavailable);
        }
        for deprecation in &config.deprecations {
            tracing::warn!("{deprecation}");
        }
        let next = Arc::new(current.succeeded_by(config));
        // The record first: no request runs under a config the log does not show yet,
        // and a reload the log cannot take does not happen.
        let entry = reload_entry()
            .ok()
            .detail(format!("{}; config sha256 {sha256}", changes.summary()));
        if let Err(e) = self.audit().append(entry, None).await {
            tracing::error!(error = %e, "the config_reload audit record was not written; the running config stays");
            return Err(ReloadRefused::AuditUnavailable);
        }
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = next;
        drop(turn);
        // The registry names keys' algorithms and issuers as the config does.
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "keys not reloaded after the config reload; the next tick retries");
        }
        Ok(changes)
    }
}

/// What made the daemon read its TLS files again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsReloadTrigger {
    /// SIGHUP.
    Sighup,
    /// The check every `tls.reload_check_seconds` found a file changed.
    FilesChanged,
}

impl std::fmt::Display for TlsReloadTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsReloadTrigger::Sighup => "SIGHUP",
            TlsReloadTrigger::FilesChanged => "files changed",
        })
    }
}

impl Service {
    /// Leaves the `tls_reload` audit record of one reload of the TLS files: `ok` with the
    /// SHA-256 of the leaf certificate now served, or `refused` (`tls_files_invalid`)
    /// with why the files did not load. The files hold no secret the record could
    /// carry: it names the certificate by hash and the key only by its config key and
    /// path. The reload stands either way: a certificate renewal is not held back by an
    /// audit log that cannot take the record, which is logged instead.
    pub async fn record_tls_reload(
        &self,
        trigger: TlsReloadTrigger,
        outcome: &Result<[u8; 32], String>,
    ) {
        let entry = Entry::new(Event::TlsReload).caller(CallerRecord::internal("daemon"));
        let entry = match outcome {
            Ok(leaf) => entry.ok().detail(format!(
                "{trigger}; certificate sha256 {}",
                crate::util::hex(leaf)
            )),
            Err(why) => entry.refused(TLS_FILES_INVALID, format!("{trigger}: {why}")),
        };
        if let Err(e) = self.audit().append(entry, None).await {
            tracing::error!(error = %e, "the tls_reload audit record was not written");
        }
    }
}

/// The code of a refused TLS reload.
const TLS_FILES_INVALID: &str = "tls_files_invalid";

fn reload_entry() -> Entry {
    Entry::new(Event::ConfigReload).caller(CallerRecord::internal("daemon"))
}
