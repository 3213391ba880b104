//! `[store]`: where signetd keeps its state besides the keys (single-use jtis, token
//! revocations). See docs/state.md.
//!
//! The connection string comes from, first to last: the `SIGNETD_STORE_URL` environment
//! variable, `url_file`, `url`, and the default: the SQLite file `signetd.db` in the
//! directory `state` beside `[audit] dir` (`/var/lib/signetd/state/signetd.db` by
//! default). A string may hold a password (a future PostgreSQL engine's), so it is never
//! logged: [`StoreLocation`] shows the engine and the path or host only.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, field_error};

/// The environment variable that overrides `[store] url` and `url_file`.
pub const STORE_URL_ENV: &str = "SIGNETD_STORE_URL";

/// `[store]`: the state store's connection string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The connection string, such as `sqlite:///var/lib/signetd/state/signetd.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the connection string (for strings with passwords); checked like
    /// the PIN file (owned by signetd's user or root, mode 0600).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

/// Where the state store is, parsed from the connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite database file; created (mode 0600, in a directory created mode 0700)
    /// if missing.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
}

impl std::fmt::Display for StoreLocation {
    /// The engine and the path: never a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite { path } => write!(f, "sqlite {}", path.display()),
        }
    }
}

impl StoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.url.is_some() && self.url_file.is_some() {
            return Err(field_error(
                "store.url_file",
                "give either store.url or store.url_file, not both",
            ));
        }
        if let Some(url) = &self.url {
            parse_url(url).map_err(|e| field_error("store.url", e))?;
        }
        Ok(())
    }

    /// Resolves the store's location: the environment, `url_file`, `url`, then the
    /// default beside `audit_dir`.
    pub fn location(&self, audit_dir: &Path) -> Result<StoreLocation, ConfigError> {
        if let Some(url) = std::env::var_os(STORE_URL_ENV) {
            let url = url
                .into_string()
                .map_err(|_| ConfigError(format!("{STORE_URL_ENV} is not UTF-8")))?;
            return parse_url(url.trim()).map_err(|e| ConfigError(format!("{STORE_URL_ENV}: {e}")));
        }
        if let Some(path) = &self.url_file {
            let file = super::files::open_private_file(path, "store.url_file")?;
            let url = std::io::read_to_string(file)
                .map_err(|e| ConfigError(format!("store.url_file: {}: {e}", path.display())))?;
            return parse_url(url.trim()).map_err(|e| field_error("store.url_file", e));
        }
        if let Some(url) = &self.url {
            return parse_url(url).map_err(|e| field_error("store.url", e));
        }
        let state_dir = audit_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("state");
        Ok(StoreLocation::Sqlite {
            path: state_dir.join("signetd.db"),
        })
    }
}

/// Parses a connection string. Errors never repeat the string (it may hold a password).
fn parse_url(url: &str) -> Result<StoreLocation, String> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err("an sqlite: URL needs a file path, such as sqlite:///var/lib/signetd/state/signetd.db".into());
        }
        if !path.starts_with('/') {
            return Err("the SQLite path must be absolute (sqlite:///PATH)".into());
        }
        return Ok(StoreLocation::Sqlite {
            path: PathBuf::from(path),
        });
    }
    let scheme = url.split(':').next().unwrap_or_default();
    if scheme == "postgres" || scheme == "postgresql" {
        return Err("the PostgreSQL engine is not available yet; use sqlite:///PATH".into());
    }
    Err("unknown engine: the connection string must start with sqlite://".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_errors_never_repeat_the_string() {
        assert_eq!(
            parse_url("sqlite:///var/x.db?mode=rwc"),
            Ok(StoreLocation::Sqlite {
                path: "/var/x.db".into()
            })
        );
        assert!(parse_url("sqlite://relative.db").is_err());
        let e = parse_url("postgres://u:hunter2@db/x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_url("mysql://u:hunter2@db/x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_default_is_beside_the_audit_dir() {
        let location = StoreConfig::default()
            .location(Path::new("/var/lib/signetd/audit"))
            .unwrap();
        // The environment may override it in a test run; only check the default's shape.
        if std::env::var_os(STORE_URL_ENV).is_none() {
            assert_eq!(
                location,
                StoreLocation::Sqlite {
                    path: "/var/lib/signetd/state/signetd.db".into()
                }
            );
        }
    }
}
