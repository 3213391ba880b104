//! `[store]`: where signetd keeps its state besides the keys (single-use jtis, token
//! revocations). See docs/state.md.
//!
//! The connection string comes from, first to last: the `SIGNETD_STORE_URL` environment
//! variable, `url_file`, `url`, and the default: the SQLite file `signetd.db` in the
//! directory `state` beside `[audit] dir` (`/var/lib/signetd/state/signetd.db` by
//! default). A PostgreSQL string may hold a password, so it is never logged:
//! [`StoreLocation`] shows the engine and the path, or the host, port and database only.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, field_error};

/// The environment variable that overrides `[store] url` and `url_file`.
pub const STORE_URL_ENV: &str = "SIGNETD_STORE_URL";

/// `[store]`: the state store's connection string.
#[derive(Debug, PartialEq, Default, Deserialize)]
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
    /// A PostgreSQL database, which must exist.
    Postgres {
        /// The server's host name or address, or the directory of its Unix socket.
        host: String,
        /// The server's port.
        port: u16,
        /// The database.
        database: String,
        /// The whole connection string, with any password: only for connecting.
        url: ConnectionString,
    },
}

impl StoreLocation {
    /// Parses a connection string: `sqlite:///PATH` or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=...` (`postgresql://` too).
    /// Errors never repeat the string (it may hold a password).
    pub fn from_url(url: &str) -> Result<StoreLocation, String> {
        parse_url(url)
    }
}

impl std::fmt::Display for StoreLocation {
    /// The engine and the path, or host, port and database: never a user or password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLocation::Sqlite { path } => write!(f, "sqlite {}", path.display()),
            StoreLocation::Postgres {
                host,
                port,
                database,
                ..
            } => write!(f, "postgresql {host}:{port}/{database}"),
        }
    }
}

/// A connection string that may hold a password: its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    /// The string itself, to hand to the database driver; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionString(..)")
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
        return parse_postgres(url);
    }
    Err(
        "unknown engine: the connection string must start with sqlite://, postgres:// or postgresql://"
            .into(),
    )
}

/// Parses a PostgreSQL URL as the driver will when connecting, to show where it points
/// and to refuse a malformed one at start. The driver's own message is not repeated: it
/// may quote parts of the string.
fn parse_postgres(url: &str) -> Result<StoreLocation, String> {
    let malformed = "not a valid PostgreSQL connection string; the form is \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full (percent-encode \
         special characters in the password)";
    let parsed: sqlx::postgres::PgConnectOptions = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|_| malformed.to_string())?;
    let host = match parsed.get_socket() {
        Some(dir) => dir.display().to_string(),
        None => parsed.get_host().to_string(),
    };
    let Some(database) = parsed.get_database().filter(|d| !d.is_empty()) else {
        return Err(
            "the PostgreSQL connection string must name the database (postgres://HOST/DATABASE)"
                .into(),
        );
    };
    Ok(StoreLocation::Postgres {
        host,
        port: parsed.get_port(),
        database: database.to_string(),
        url: ConnectionString(url.to_string()),
    })
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
        let e = parse_url("postgres://u:hunter2@db").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_url("postgres://u:hunter2@db:99999/x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse_url("mysql://u:hunter2@db/x").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_postgres_location_shows_host_port_and_database_but_no_credentials() {
        for url in [
            "postgres://signetd:hunter2@db.example:6432/state?sslmode=verify-full",
            "postgresql://signetd:hunter2@db.example:6432/state",
        ] {
            let location = parse_url(url).unwrap();
            let StoreLocation::Postgres {
                host,
                port,
                database,
                url: string,
            } = &location
            else {
                panic!("{location:?}")
            };
            assert_eq!(
                (host.as_str(), *port, database.as_str()),
                ("db.example", 6432, "state")
            );
            assert_eq!(string.expose(), url);
            for shown in [location.to_string(), format!("{location:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(!shown.contains("signetd"), "{shown}");
            }
            assert_eq!(location.to_string(), "postgresql db.example:6432/state");
        }
        let socket = parse_url("postgres://signetd@%2Frun%2Fpostgresql/state").unwrap();
        assert_eq!(socket.to_string(), "postgresql /run/postgresql:5432/state");
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
