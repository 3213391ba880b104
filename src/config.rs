//! The daemon's TOML configuration.
//!
//! Every table denies unknown fields, so a typo fails at start instead of silently
//! weakening a policy. [`Config::load`] parses and validates; every error names the field.
//! The PIN is not part of the parsed config: only where to find it is, and
//! [`Config::hsm_settings`] reads it straight into a `SecretString`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::algorithm::Algorithm;
use crate::hsm::{HsmSettings, TokenSelector};
use crate::token::{HARD_MAX_TTL_SECONDS, RESERVED_CLAIMS};

/// The whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The PKCS#11 module, token and PIN.
    pub pkcs11: Pkcs11Config,
    /// Where the daemon listens.
    #[serde(default)]
    pub listen: ListenConfig,
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
    /// Token issuers by name (`[issuers.NAME]`).
    #[serde(default)]
    pub issuers: BTreeMap<String, IssuerConfig>,
}

/// `[pkcs11]`: which module and token, and where the user PIN comes from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Select the token by its label.
    pub token_label: Option<String>,
    /// Select the token by its serial number.
    pub token_serial: Option<String>,
    /// Select the token by a PKCS#11 URI (RFC 7512), e.g. `pkcs11:token=signetd;serial=1a2b`.
    pub token_uri: Option<String>,
    /// File holding the user PIN (trailing whitespace ignored); must not be world-readable.
    pub pin_file: Option<PathBuf>,
    /// Name of an environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Worker threads, each owning one session (default: number of CPUs).
    #[serde(default = "default_sessions")]
    pub sessions: usize,
    /// How long a request waits for the token, in milliseconds (default 10000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `[listen]`: the Unix socket for issuers and the HTTP listener for public endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Path of the Unix socket (default `/run/signetd/signetd.sock`).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Permission bits of the socket (default `0o660`).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: u32,
    /// Address of the plain HTTP listener for public endpoints (default
    /// `127.0.0.1:8750`), or `"off"`.
    #[serde(default = "default_http", deserialize_with = "http_address")]
    pub http: Option<SocketAddr>,
    /// Most connections served at once, per listener (default 1024).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `[jwks]`: publication of public keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// `Cache-Control: max-age` of the JWKS, in seconds (default 15, at most 30).
    #[serde(default = "default_jwks_max_age")]
    pub max_age_seconds: u32,
}

/// `[attestation]`: the certificates signetd issues to keys.
#[derive(Debug, Deserialize)]
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

/// `[admin]`: callers (by peer uid or primary gid on the Unix socket) allowed to
/// generate, rotate, retire and revoke keys and revoke tokens over the API. Empty (the
/// default) means nobody: lifecycle calls then go through the CLI only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin uids.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Admin primary gids.
    #[serde(default)]
    pub allowed_gids: Vec<u32>,
}

/// `[lifecycle]`: when rotated keys start signing and retired keys leave the JWKS.
#[derive(Debug, Deserialize)]
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

/// `[verify]`: the verify endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Callers (uid, on the Unix socket) allowed to consume tokens with `single_use`;
    /// anyone may verify without it. Default: nobody.
    #[serde(default)]
    pub single_use_uids: Vec<u32>,
    /// Callers (primary gid) allowed to consume tokens with `single_use`.
    #[serde(default)]
    pub single_use_gids: Vec<u32>,
    /// Most unexpired single-use jtis remembered (default 1,000,000); when full,
    /// single-use verification is refused rather than forgetting one.
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        VerifyConfig {
            single_use_uids: Vec::new(),
            single_use_gids: Vec::new(),
            replay_capacity: default_replay_capacity(),
        }
    }
}

fn default_replay_capacity() -> usize {
    1_000_000
}

/// `[issuers.NAME]`: one token issuer's policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim of every token this issuer mints.
    pub iss: String,
    /// `ES256` (default) or `EdDSA`.
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// Longest token lifetime a caller may ask for (default 60, hard cap 3600).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// Audiences a caller may put in `aud`; at least one.
    pub audiences: Vec<String>,
    /// Custom claims every mint request must carry (e.g. `nonce`).
    #[serde(default)]
    pub required_claims: Vec<String>,
    /// Custom claims no mint request may carry.
    #[serde(default)]
    pub forbidden_claims: Vec<String>,
    /// Largest serialized size of the custom claims, in bytes (default 4096).
    #[serde(default = "default_max_claims_bytes")]
    pub max_claims_bytes: usize,
    /// Peer uids (from `SO_PEERCRED`) allowed to use this issuer.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Peer primary gids allowed to use this issuer.
    #[serde(default)]
    pub allowed_gids: Vec<u32>,
    /// Makes this a raw-signing issuer (default false): its callers may use
    /// `POST /v1/sign`, it never mints JWTs, and its keys are kept out of the JWKS.
    /// Raw signatures and JWTs never share a key: a raw signature over a JWT the caller
    /// wrote would otherwise verify as a token of any issuer in the JWKS.
    #[serde(default)]
    pub raw_sign: bool,
    /// Rotate automatically when the active key is this old, in seconds (default: never).
    #[serde(default)]
    pub rotation_period_seconds: Option<u64>,
}

fn default_sessions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(64))
}
fn default_timeout_ms() -> u64 {
    10_000
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
fn default_algorithm() -> Algorithm {
    Algorithm::Es256
}
fn default_max_ttl() -> u64 {
    60
}
fn default_max_claims_bytes() -> usize {
    4096
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
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.pkcs11.validate()?;
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
        if listen.max_connections == 0 {
            return Err(field_error("listen.max_connections", "must be at least 1"));
        }
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
        if self.verify.replay_capacity == 0 {
            return Err(field_error("verify.replay_capacity", "must be at least 1"));
        }
        for (name, issuer) in &self.issuers {
            if let Some(period) = issuer.rotation_period_seconds {
                if period <= self.lifecycle.prepublish_seconds + issuer.max_ttl_seconds {
                    return Err(field_error(
                        format!("issuers.{name}.rotation_period_seconds"),
                        "must exceed lifecycle.prepublish_seconds plus the issuer's max_ttl_seconds",
                    ));
                }
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
        })
    }
}

impl Pkcs11Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.module.as_os_str().is_empty() {
            return Err(field_error(
                "pkcs11.module",
                "must name the PKCS#11 module file",
            ));
        }
        self.selector()?;
        match (&self.pin_file, &self.pin_env) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(field_error(
                    "pkcs11",
                    "set exactly one of pin_file, pin_env",
                ));
            }
        }
        if !(1..=64).contains(&self.sessions) {
            return Err(field_error("pkcs11.sessions", "must be between 1 and 64"));
        }
        if !(100..=120_000).contains(&self.timeout_ms) {
            return Err(field_error(
                "pkcs11.timeout_ms",
                "must be between 100 and 120000",
            ));
        }
        Ok(())
    }

    /// The token selector from whichever of label, serial or URI is set.
    pub fn selector(&self) -> Result<TokenSelector, ConfigError> {
        let given = [&self.token_label, &self.token_serial, &self.token_uri];
        if given.iter().filter(|v| v.is_some()).count() != 1 {
            return Err(field_error(
                "pkcs11",
                "set exactly one of token_label, token_serial, token_uri",
            ));
        }
        if let Some(uri) = &self.token_uri {
            return TokenSelector::from_uri(uri).map_err(|e| field_error("pkcs11.token_uri", e));
        }
        Ok(TokenSelector {
            label: self.token_label.clone(),
            serial: self.token_serial.clone(),
            ..TokenSelector::default()
        })
    }

    /// Reads the PIN. Messages name where it was looked for, never what it is.
    fn read_pin(&self) -> Result<SecretString, ConfigError> {
        let pin = if let Some(path) = &self.pin_file {
            let meta = std::fs::metadata(path)
                .map_err(|e| field_error("pkcs11.pin_file", format!("{}: {e}", path.display())))?;
            if meta.permissions().mode() & 0o007 != 0 {
                return Err(field_error(
                    "pkcs11.pin_file",
                    format!(
                        "{} is accessible to other users; chmod o-rwx it",
                        path.display()
                    ),
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| field_error("pkcs11.pin_file", format!("{}: {e}", path.display())))?;
            SecretString::from(text.trim_end().to_string())
        } else {
            let name = self.pin_env.as_deref().unwrap_or_default();
            let text = std::env::var(name).map_err(|_| {
                field_error(
                    "pkcs11.pin_env",
                    format!("environment variable {name} is not set"),
                )
            })?;
            SecretString::from(text.trim_end().to_string())
        };
        if secrecy::ExposeSecret::expose_secret(&pin).is_empty() {
            return Err(field_error("pkcs11", "the user PIN is empty"));
        }
        Ok(pin)
    }
}

impl IssuerConfig {
    fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let field = |f: &str| format!("issuers.{name}.{f}");
        if !is_issuer_name(name) {
            return Err(field_error(
                format!("issuers.{name}"),
                "issuer names are 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit",
            ));
        }
        if self.iss.trim().is_empty() {
            return Err(field_error(field("iss"), "must not be empty"));
        }
        if !(1..=HARD_MAX_TTL_SECONDS).contains(&self.max_ttl_seconds) {
            return Err(field_error(
                field("max_ttl_seconds"),
                format!(
                    "{} is outside 1..={HARD_MAX_TTL_SECONDS} (the hard cap)",
                    self.max_ttl_seconds
                ),
            ));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(|a| a.is_empty()) {
            return Err(field_error(
                field("audiences"),
                "list at least one non-empty audience",
            ));
        }
        for (list, what) in [
            (&self.required_claims, "required_claims"),
            (&self.forbidden_claims, "forbidden_claims"),
        ] {
            if let Some(claim) = list.iter().find(|c| RESERVED_CLAIMS.contains(&c.as_str())) {
                return Err(field_error(
                    field(what),
                    format!("{claim:?} is a registered claim the daemon or request fields own"),
                ));
            }
        }
        if let Some(claim) = self
            .required_claims
            .iter()
            .find(|c| self.forbidden_claims.contains(c))
        {
            return Err(field_error(
                field("forbidden_claims"),
                format!("{claim:?} is also required"),
            ));
        }
        if !(64..=65_536).contains(&self.max_claims_bytes) {
            return Err(field_error(
                field("max_claims_bytes"),
                "must be between 64 and 65536",
            ));
        }
        if self.allowed_uids.is_empty() && self.allowed_gids.is_empty() {
            return Err(field_error(
                field("allowed_uids"),
                "no caller is allowed: list the uids or gids that may use this issuer",
            ));
        }
        Ok(())
    }
}

/// Issuer names appear in key labels and URLs, so they are kept plain.
pub fn is_issuer_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=32).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "SIGNETD_TEST_UNUSED_PIN"

[issuers.demo]
iss = "https://issuer.example"
audiences = ["api"]
allowed_uids = [1000]
"#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_example_config_is_valid() {
        let c = Config::parse(include_str!("../config.example.toml")).unwrap();
        assert_eq!(c.issuers.len(), 2);
        assert_eq!(c.issuer("agents").unwrap().algorithm, Algorithm::EdDsa);
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::parse(BASE).unwrap();
        let demo = c.issuer("demo").unwrap();
        assert_eq!(demo.max_ttl_seconds, 60);
        assert_eq!(demo.algorithm, Algorithm::Es256);
        assert!(!demo.raw_sign);
        assert_eq!(c.listen.http, Some("127.0.0.1:8750".parse().unwrap()));
        assert_eq!(c.listen.socket_mode, 0o660);
        assert_eq!(c.jwks.max_age_seconds, 15);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_name() {
        let e = err(&BASE.replace("allowed_uids", "allowed_uid"));
        assert!(e.contains("allowed_uid"), "{e}");
        let e = err(&format!("{BASE}\n[listen]\nsockett = \"/x\"\n"));
        assert!(e.contains("sockett"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = err(&BASE.replace(
            "allowed_uids = [1000]",
            "allowed_uids = [1000]\nmax_ttl_seconds = 7200",
        ));
        assert!(
            e.contains("issuers.demo.max_ttl_seconds") && e.contains("3600"),
            "{e}"
        );
        let e = err(&BASE.replace("audiences = [\"api\"]", "audiences = []"));
        assert!(e.contains("issuers.demo.audiences"), "{e}");
        let e = err(&BASE.replace(
            "allowed_uids = [1000]",
            "required_claims = [\"exp\"]\nallowed_uids = [1]",
        ));
        assert!(
            e.contains("issuers.demo.required_claims") && e.contains("exp"),
            "{e}"
        );
        let e = err(&BASE.replace(
            "token_label = \"t\"",
            "token_label = \"t\"\ntoken_serial = \"s\"",
        ));
        assert!(e.contains("token_label, token_serial, token_uri"), "{e}");
        let e = err(&BASE.replace(
            "token_label = \"t\"",
            "token_uri = \"pkcs11:token=t?pin-value=9\"",
        ));
        assert!(e.contains("pkcs11.token_uri") && !e.contains('9'), "{e}");
        let e = err(&BASE.replace("allowed_uids = [1000]", "allowed_uids = []"));
        assert!(e.contains("no caller is allowed"), "{e}");
        let e = err(&format!(
            "{BASE}\n[issuers.twin]\niss = \"https://issuer.example\"\naudiences = [\"a\"]\nallowed_uids = [1]\n"
        ));
        assert!(e.contains("issuers.twin.iss") && e.contains("demo"), "{e}");
        let e = err(&BASE.replace("[issuers.demo]", "[issuers.Demo]"));
        assert!(e.contains("issuers.Demo"), "{e}");
        let e = err(&format!("{BASE}\n[listen]\nhttp = \"nowhere\"\n"));
        assert!(e.contains("nowhere"), "{e}");
        let e = err(&BASE.replace("audiences", "algorithm = \"HS256\"\naudiences"));
        assert!(e.contains("HS256"), "{e}");
    }

    #[test]
    fn pin_file_must_not_be_world_readable_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("user.pin");
        std::fs::write(&pin, "s3cret-pin-value\n").unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = BASE.replace(
            "pin_env = \"SIGNETD_TEST_UNUSED_PIN\"",
            &format!("pin_file = {:?}", pin.display().to_string()),
        );
        let config = Config::parse(&text).unwrap();
        let e = config.hsm_settings().err().unwrap().to_string();
        assert!(
            e.contains("pkcs11.pin_file") && !e.contains("s3cret"),
            "{e}"
        );
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        let settings = config.hsm_settings().unwrap();
        assert_eq!(
            secrecy::ExposeSecret::expose_secret(&settings.pin),
            "s3cret-pin-value"
        );
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
