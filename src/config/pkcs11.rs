//! `[pkcs11]`: the module, the token, and where the PIN comes from.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ConfigError, field_error};
use crate::hsm::TokenSelector;

/// `[pkcs11]`: which module and token, and where the user PIN comes from.
#[derive(Debug, PartialEq, Deserialize)]
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
    /// Requests that may wait for a free worker, all sessions together (default 256 per
    /// session); past it, requests are refused at once with `overloaded`.
    pub queue: Option<usize>,
    /// Sign with session copies of the keys (`C_CopyObject`, `CKA_TOKEN=false`), made
    /// once per key and never leaving the token (default true; docs/performance.md).
    #[serde(default = "default_session_copies")]
    pub session_copies: bool,
}

fn default_sessions() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(64))
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_session_copies() -> bool {
    true
}
impl Pkcs11Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self.queue.is_some_and(|q| !(1..=65_536).contains(&q)) {
            return Err(field_error("pkcs11.queue", "must be between 1 and 65536"));
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
    pub(super) fn read_pin(&self) -> Result<SecretString, ConfigError> {
        use std::io::Read;
        use zeroize::Zeroize;
        let mut text = if let Some(path) = &self.pin_file {
            let fail = |e: std::io::Error| {
                field_error("pkcs11.pin_file", format!("{}: {e}", path.display()))
            };
            // Check the file we read, not whatever the path names a moment earlier; and
            // fail closed on any group or other access, since callers often share
            // signetd's group (the socket's), and on any owner but signetd's user or root.
            let mut file = super::files::open_private_file(path, "pkcs11.pin_file")?;
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(fail)?;
            text
        } else {
            let name = self.pin_env.as_deref().unwrap_or_default();
            std::env::var(name).map_err(|_| {
                field_error(
                    "pkcs11.pin_env",
                    format!("environment variable {name} is not set"),
                )
            })?
        };
        let pin = SecretString::from(text.trim_end());
        text.zeroize();
        if secrecy::ExposeSecret::expose_secret(&pin).is_empty() {
            return Err(field_error("pkcs11", "the user PIN is empty"));
        }
        Ok(pin)
    }
}
