//! `[tls]`: the HTTPS listener for remote callers, authenticated by client certificates.
//!
//! Off unless the table is present. The files are read when the listener starts and again
//! whenever they change or the daemon gets SIGHUP (see `docs/tls.md`); this table only
//! says where they are.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, field_error};

/// The oldest TLS version the listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only (the default).
    #[serde(rename = "1.3")]
    Tls13,
}

/// `[tls]`: where the HTTPS listener listens and which files it reads.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the HTTPS listener, such as `"0.0.0.0:8443"`.
    pub listen: SocketAddr,
    /// PEM file with the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM file with the server's private key (PKCS#8, SEC1 or PKCS#1). Refused if group
    /// or others may read it.
    pub key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca: PathBuf,
    /// A certificate revocation list (PEM or DER, several PEM blocks allowed): client
    /// certificates it lists are refused at the handshake. Default: none.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// `"1.3"` (the default) or `"1.2"`.
    #[serde(default = "default_min_version")]
    pub min_version: TlsVersion,
    /// A client must finish the TLS handshake within this time (default 10).
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// How often the files are checked for changes, in seconds (default 5; 0: only on
    /// SIGHUP).
    #[serde(default = "default_reload_check")]
    pub reload_check_seconds: u64,
}

fn default_min_version() -> TlsVersion {
    TlsVersion::Tls13
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_reload_check() -> u64 {
    5
}

impl TlsConfig {
    /// A `[tls]` table naming these files, with every other key at its default.
    pub fn new(listen: SocketAddr, cert: PathBuf, key: PathBuf, client_ca: PathBuf) -> Self {
        TlsConfig {
            listen,
            cert,
            key,
            client_ca,
            crl: None,
            min_version: default_min_version(),
            handshake_timeout_seconds: default_handshake_timeout(),
            reload_check_seconds: default_reload_check(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("tls.cert", Some(&self.cert)),
            ("tls.key", Some(&self.key)),
            ("tls.client_ca", Some(&self.client_ca)),
            ("tls.crl", self.crl.as_ref()),
        ] {
            if path.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(field_error(key, "must not be empty"));
            }
        }
        if !(1..=120).contains(&self.handshake_timeout_seconds) {
            return Err(field_error(
                "tls.handshake_timeout_seconds",
                "must be between 1 and 120",
            ));
        }
        if self.reload_check_seconds > 3600 {
            return Err(field_error(
                "tls.reload_check_seconds",
                "must be at most 3600 (0 checks only on SIGHUP)",
            ));
        }
        Ok(())
    }
}
