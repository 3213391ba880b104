//! The daemon's TOML configuration.
//!
//! Every table denies unknown fields, so a typo fails at start instead of silently
//! weakening a policy. [`Config::load`] parses and validates; every error names the field.
//! The PIN is not part of the parsed config: only where to find it is, and
//! [`Config::hsm_settings`] reads it straight into a `SecretString`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::hsm::HsmSettings;
use crate::identity::CallerSelector;

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The PKCS#11 module, token and PIN.
    pub pkcs11: Pkcs11Config,
    /// Where the daemon listens.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The HTTPS listener for callers with client certificates (off unless present).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// How the JWKS is published.
    #[serde(default)]
    pub jwks: JwksConfig,
    /// Attestation certificates.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// Who may call the lifecycle API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Key rotation timing.
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    /// `POST /v1/verify`.
    #[serde(default)]
    pub verify: VerifyConfig,
    /// The audit log.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Rate limits, connection caps, header and time limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The state store (`[store]`): single-use jtis and token revocations.
    #[serde(default)]
    pub store: StoreConfig,
    /// This daemon's name among replicas (`[replica]`).
    #[serde(default)]
    pub replica: ReplicaConfig,
    /// Token issuers by name (`[issuers.NAME]`).
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
    /// Cross-origin reads of the public endpoints (`[cors]`; none by default).
    #[serde(default)]
    pub cors: CorsConfig,
    /// `GET /metrics` (`[metrics]`): who may read it, and its own listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// What the file says in a form that still works but is deprecated, one line each,
    /// for the daemon to log at start.
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

/// `[listen]`: the Unix socket for issuers and the HTTP listener for public endpoints.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Path of the Unix socket (default `/run/signetd/signetd.sock`).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Permission bits of the socket (default `0o660`).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// Address of the plain HTTP listener for public endpoints (default
    /// `127.0.0.1:8750`), or `"off"`. Only loopback addresses: remote callers use `[tls]`.
    #[serde(default = "default_http", deserialize_with = "http_address")]
    pub http: Option<SocketAddr>,
    /// Most connections served at once, per listener (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `[jwks]`: publication of public keys.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// `Cache-Control: max-age` of the JWKS, in seconds (default 15, at most 30).
    #[serde(default = "default_jwks_max_age")]
    pub max_age_seconds: u32,
}

/// `[attestation]`: the certificates signetd issues to keys.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// Validity of each key's attestation certificate, in days (default 1825). It should
    /// outlast the key's life, retirement included, so old tokens stay checkable.
    #[serde(default = "default_key_certificate_days")]
    pub key_certificate_days: u32,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        AttestationConfig {
            key_certificate_days: default_key_certificate_days(),
        }
    }
}

fn default_key_certificate_days() -> u32 {
    1825
}

/// `[admin]`: callers allowed to generate, rotate, retire and revoke keys and revoke
/// tokens over the API. Empty (the default) means nobody: lifecycle calls then go
/// through the CLI only.
#[derive(Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Who is an admin ([`CallerSelector`]s such as `"uid:0"`).
    #[serde(default)]
    pub callers: Vec<CallerSelector>,
    /// The form before `callers`: folded into it when the config is loaded.
    #[serde(default, rename = "allowed_uids")]
    legacy_uids: Vec<u32>,
    /// The form before `callers`: folded into it when the config is loaded.
    #[serde(default, rename = "allowed_gids")]
    legacy_gids: Vec<u32>,
}

/// `[lifecycle]`: when rotated keys start signing and retired keys leave the JWKS.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// How long a new key is published before it signs (default 30; at least
    /// `jwks.max_age_seconds`, so every verifier's cached JWKS has it first).
    #[serde(default = "default_prepublish")]
    pub prepublish_seconds: u64,
    /// How often the daemon applies due transitions and re-reads the token (default 5).
    #[serde(default = "default_tick")]
    pub tick_seconds: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            prepublish_seconds: default_prepublish(),
            tick_seconds: default_tick(),
        }
    }
}

fn default_prepublish() -> u64 {
    30
}
fn default_tick() -> u64 {
    5
}

/// `[audit]`: the tamper-evident audit log (see `docs/audit.md`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Directory of the log's segments (default `/var/lib/signetd/audit`). Created
    /// (mode 0700) if missing; refused if group or others may write it.
    #[serde(default = "default_audit_dir")]
    pub dir: PathBuf,
    /// A segment is closed and the next begun once it reaches this size (default 64 MiB).
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// A signed checkpoint after this many records (default 1000).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// A signed checkpoint at least this often while records arrive (default 60).
    #[serde(default = "default_checkpoint_seconds")]
    pub checkpoint_seconds: u64,
    /// Nice value of the writer thread (default -10; 0 leaves it alone). Every signing
    /// request waits for the writer's fsync, and on busy CPUs the writer's wake-up after
    /// each fsync is most of that wait; it uses little CPU itself. Applied only if the
    /// process may (`CAP_SYS_NICE`, or `LimitNICE=-10` under systemd).
    #[serde(default = "default_writer_nice")]
    pub writer_nice: i32,
    /// Free space (bytes) on the log's filesystem kept for signing records (default
    /// 64 MiB): below it, refusal records are dropped (counted and logged), so refusals
    /// can never take the space minting needs. 0 keeps no reserve.
    #[serde(default = "default_reserve_bytes")]
    pub reserve_bytes: u64,
    /// Refusals of callers whom no policy names are folded into one record per caller
    /// and interval of this many seconds (default 60), written when it closes.
    #[serde(default = "default_refusal_interval")]
    pub refusal_interval_seconds: u64,
    /// Most unnamed callers given a record of their own per interval (default 1000);
    /// refusals of any more are folded into one `others` record.
    #[serde(default = "default_refusal_callers")]
    pub refusal_callers: usize,
    /// Who may read the log's records and tiles over the API ([`CallerSelector`]s such
    /// as `"uid:0"`): records name callers, issuers and token hashes. Empty (the
    /// default) means nobody; the signed checkpoint is public. Reloadable.
    #[serde(default)]
    pub auditors: Vec<CallerSelector>,
}

impl AuditConfig {
    /// These settings without the reloadable ones: what a running log was opened with.
    pub fn without_auditors(&self) -> AuditConfig {
        AuditConfig {
            auditors: Vec::new(),
            ..self.clone()
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            dir: default_audit_dir(),
            segment_bytes: default_segment_bytes(),
            checkpoint_every: default_checkpoint_every(),
            checkpoint_seconds: default_checkpoint_seconds(),
            writer_nice: default_writer_nice(),
            reserve_bytes: default_reserve_bytes(),
            refusal_interval_seconds: default_refusal_interval(),
            refusal_callers: default_refusal_callers(),
            auditors: Vec::new(),
        }
    }
}

fn default_audit_dir() -> PathBuf {
    PathBuf::from("/var/lib/signetd/audit")
}
fn default_segment_bytes() -> u64 {
    64 << 20
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_checkpoint_seconds() -> u64 {
    60
}
fn default_writer_nice() -> i32 {
    -10
}
fn default_reserve_bytes() -> u64 {
    64 << 20
}
fn default_refusal_interval() -> u64 {
    60
}
fn default_refusal_callers() -> usize {
    1000
}

/// `[verify]`: the verify endpoint.
#[derive(Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Who may consume tokens with `single_use` ([`CallerSelector`]s); anyone may
    /// verify without it. Default: nobody.
    #[serde(default)]
    pub single_use_callers: Vec<CallerSelector>,
    /// The form before `single_use_callers`: folded into it when the config is loaded.
    #[serde(default, rename = "single_use_uids")]
    legacy_uids: Vec<u32>,
    /// The form before `single_use_callers`: folded into it when the config is loaded.
    #[serde(default, rename = "single_use_gids")]
    legacy_gids: Vec<u32>,
    /// `replay_capacity`, which bounded the in-memory replay store before single-use
    /// jtis moved to the state store: still parsed, only to refuse it by name.
    #[serde(default, rename = "replay_capacity")]
    removed_replay_capacity: Option<toml::Value>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/signetd/signetd.sock")
}
fn default_socket_mode() -> u32 {
    0o660
}
fn default_http() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8750)))
}
fn default_max_connections() -> usize {
    1024
}
fn default_jwks_max_age() -> u32 {
    15
}
fn http_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an address like \"127.0.0.1:8750\" or \"off\""
        ))
    })
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            socket: default_socket(),
            socket_mode: default_socket_mode(),
            http: default_http(),
            max_connections: default_max_connections(),
        }
    }
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            max_age_seconds: default_jwks_max_age(),
        }
    }
}

/// A configuration that cannot be used, with the field at fault in its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

fn field_error(field: impl std::fmt::Display, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{field}: {why}"))
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        // Whoever can write the config can make themselves admin: check who that is
        // before trusting a word of it.
        let text = std::io::read_to_string(files::open_config(path)?)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.fold_legacy_callers();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.pkcs11.validate()?;
        self.store.validate()?;
        self.replica.validate()?;
        let listen = &self.listen;
        if listen.socket.as_os_str().is_empty() {
            return Err(field_error("listen.socket", "must not be empty"));
        }
        if listen.socket_mode > 0o777 {
            return Err(field_error(
                "listen.socket_mode",
                "must be permission bits, at most 0o777",
            ));
        }
        if let Some(addr) = listen.http
            && !addr.ip().is_loopback()
        {
            return Err(field_error(
                "listen.http",
                format!(
                    "{addr} is not a loopback address: plain HTTP serves public endpoints on this host only; \
                     serve other hosts with a [tls] table, or set http = \"127.0.0.1:{}\"",
                    addr.port()
                ),
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if listen.max_connections == 0 {
            return Err(field_error("listen.max_connections", "must be at least 1"));
        }
        self.limits.validate(listen.max_connections)?;
        self.metrics.validate()?;
        if !(1..=36_500).contains(&self.attestation.key_certificate_days) {
            return Err(field_error(
                "attestation.key_certificate_days",
                "must be between 1 and 36500",
            ));
        }
        if self.lifecycle.prepublish_seconds < u64::from(self.jwks.max_age_seconds) {
            return Err(field_error(
                "lifecycle.prepublish_seconds",
                format!(
                    "must be at least jwks.max_age_seconds ({}): verifiers must see a key before it signs",
                    self.jwks.max_age_seconds
                ),
            ));
        }
        if !(1..=60).contains(&self.lifecycle.tick_seconds) {
            return Err(field_error(
                "lifecycle.tick_seconds",
                "must be between 1 and 60",
            ));
        }
        let audit = &self.audit;
        if audit.dir.as_os_str().is_empty() {
            return Err(field_error("audit.dir", "must not be empty"));
        }
        // The last segment is read whole at start, so it stays a sensible size.
        if !(4096..=1 << 30).contains(&audit.segment_bytes) {
            return Err(field_error(
                "audit.segment_bytes",
                "must be between 4096 and 1073741824 (1 GiB)",
            ));
        }
        if !(1..=1_000_000).contains(&audit.checkpoint_every) {
            return Err(field_error(
                "audit.checkpoint_every",
                "must be between 1 and 1000000",
            ));
        }
        if !(-20..=0).contains(&audit.writer_nice) {
            return Err(field_error(
                "audit.writer_nice",
                "must be between -20 and 0",
            ));
        }
        if !(1..=3600).contains(&audit.checkpoint_seconds) {
            return Err(field_error(
                "audit.checkpoint_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&audit.refusal_interval_seconds) {
            return Err(field_error(
                "audit.refusal_interval_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=100_000).contains(&audit.refusal_callers) {
            return Err(field_error(
                "audit.refusal_callers",
                "must be between 1 and 100000",
            ));
        }
        if self.verify.removed_replay_capacity.is_some() {
            return Err(field_error(
                "verify.replay_capacity",
                "no longer exists: single-use jtis are kept in the state store ([store], \
                 docs/state.md), bounded only by its disk; delete the line",
            ));
        }
        self.cors.validate()?;
        for (name, issuer) in &self.issuers {
            // A consumer that polls the SPIFFE bundle only as often as the hint says must
            // still see each new key before it signs.
            if let Some(hint) = issuer.spiffe_refresh_hint_seconds
                && hint > self.lifecycle.prepublish_seconds
            {
                return Err(field_error(
                    format!("issuers.{name}.spiffe_refresh_hint_seconds"),
                    format!(
                        "must be at most lifecycle.prepublish_seconds ({}): consumers must see a key before it signs",
                        self.lifecycle.prepublish_seconds
                    ),
                ));
            }
            if let Some(period) = issuer.rotation_period_seconds
                && period <= self.lifecycle.prepublish_seconds + issuer.max_ttl_seconds
            {
                return Err(field_error(
                    format!("issuers.{name}.rotation_period_seconds"),
                    "must exceed lifecycle.prepublish_seconds plus the issuer's max_ttl_seconds",
                ));
            }
        }
        if self.jwks.max_age_seconds > 30 {
            return Err(field_error(
                "jwks.max_age_seconds",
                "must be at most 30, so verifiers see a revocation within 30 seconds",
            ));
        }
        let mut seen_iss = std::collections::HashMap::new();
        for (name, issuer) in &self.issuers {
            issuer.validate(name)?;
            if let Some(other) = seen_iss.insert(issuer.iss.as_str(), name) {
                return Err(field_error(
                    format!("issuers.{name}.iss"),
                    format!(
                        "{:?} is also the iss of issuer {other}; each issuer needs its own",
                        issuer.iss
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Folds the uid/gid lists of earlier versions into the `callers` lists, noting each
    /// table that used them with the line that replaces them.
    fn fold_legacy_callers(&mut self) {
        let mut notes = Vec::new();
        let admin = &mut self.admin;
        fold(
            "admin",
            "callers",
            ("allowed_uids", &mut admin.legacy_uids),
            ("allowed_gids", &mut admin.legacy_gids),
            &mut admin.callers,
            &mut notes,
        );
        let verify = &mut self.verify;
        fold(
            "verify",
            "single_use_callers",
            ("single_use_uids", &mut verify.legacy_uids),
            ("single_use_gids", &mut verify.legacy_gids),
            &mut verify.single_use_callers,
            &mut notes,
        );
        for (name, issuer) in &mut self.issuers {
            fold(
                &format!("issuers.{name}"),
                "callers",
                ("allowed_uids", &mut issuer.legacy_uids),
                ("allowed_gids", &mut issuer.legacy_gids),
                &mut issuer.callers,
                &mut notes,
            );
        }
        self.deprecations = notes;
    }

    /// The issuer named `name`, if configured.
    pub fn issuer(&self, name: &str) -> Option<&IssuerConfig> {
        self.issuers.get(name)
    }

    /// Resolves the token selector and reads the PIN into a secret.
    pub fn hsm_settings(&self) -> Result<HsmSettings, ConfigError> {
        let p = &self.pkcs11;
        Ok(HsmSettings {
            module: p.module.clone(),
            token: p.selector()?,
            pin: p.read_pin()?,
            sessions: p.sessions,
            timeout: Duration::from_millis(p.timeout_ms),
            queue: p.queue,
            session_copies: p.session_copies,
        })
    }
}

/// Moves one table's legacy uid and gid lists into its selector list `key`, and notes
/// the replacement line if there were any.
fn fold(
    table: &str,
    key: &str,
    (uids_key, uids): (&str, &mut Vec<u32>),
    (gids_key, gids): (&str, &mut Vec<u32>),
    callers: &mut Vec<CallerSelector>,
    notes: &mut Vec<String>,
) {
    if uids.is_empty() && gids.is_empty() {
        return;
    }
    let legacy = uids
        .drain(..)
        .map(CallerSelector::Uid)
        .chain(gids.drain(..).map(CallerSelector::Gid));
    for selector in legacy {
        if !callers.contains(&selector) {
            callers.push(selector);
        }
    }
    let list = callers
        .iter()
        .map(|c| format!("{:?}", c.to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    notes.push(format!(
        "[{table}] {uids_key}/{gids_key} are deprecated and will be removed: write {key} = [{list}]"
    ));
}

mod cors;
pub mod files;
mod issuer;
mod limits;
mod metrics;
mod pkcs11;
mod profile;
pub mod reload;
mod replica;
mod store;
#[cfg(test)]
mod tests;
mod tls;

pub use cors::CorsConfig;
pub use issuer::{IssuerConfig, is_issuer_name};
pub use limits::{LimitsConfig, Rate};
pub use metrics::MetricsConfig;
pub use pkcs11::Pkcs11Config;
pub use profile::ProfileConfig;
pub use reload::ConfigChanges;
pub use replica::ReplicaConfig;
pub use store::{STORE_URL_ENV, StoreConfig, StoreLocation};
pub use tls::{TlsConfig, TlsVersion};
