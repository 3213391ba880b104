//! A database of its own for each unit test of the state store, on either engine: an
//! SQLite file in a temporary directory, or a fresh PostgreSQL database (and role owning
//! it) made through the superuser URL in `SIGNETD_TEST_POSTGRES_URL` and dropped with
//! the [`TestDb`]. `scripts/test.sh` starts a throwaway cluster and sets that URL, and
//! `SIGNETD_REQUIRE_POSTGRES=1`, under which a PostgreSQL test without the URL fails
//! rather than skips. (tests/daemon/common.rs has the same for the daemon's tests.)

use sqlx::{Connection, Executor, PgConnection};

use crate::config::StoreLocation;

/// The superuser URL of the test cluster.
pub(crate) const POSTGRES_URL_ENV: &str = "SIGNETD_TEST_POSTGRES_URL";
/// Set to `1` to fail, not skip, PostgreSQL tests when the URL is missing.
pub(crate) const REQUIRE_POSTGRES_ENV: &str = "SIGNETD_REQUIRE_POSTGRES";

/// The state store's engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A test's own database; removed on drop.
pub(crate) struct TestDb {
    location: StoreLocation,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// A fresh database on `engine`, or `None` (with a note on stderr) when PostgreSQL
    /// is not configured and not required.
    pub(crate) async fn new(engine: Engine) -> Option<TestDb> {
        match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Some(TestDb {
                    location: StoreLocation::Sqlite {
                        path: dir.path().join("state/signetd.db"),
                    },
                    _dir: Some(dir),
                    postgres: None,
                })
            }
            Engine::Postgres => {
                let admin_url = postgres_admin_url()?;
                let (name, url) = create_database(&admin_url).await;
                Some(TestDb {
                    location: StoreLocation::from_url(&url).unwrap(),
                    _dir: None,
                    postgres: Some(PgDatabase { admin_url, name }),
                })
            }
        }
    }

    /// Where the database is.
    pub(crate) fn location(&self) -> &StoreLocation {
        &self.location
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(db) = self.postgres.take() {
            drop_database(db.admin_url, db.name);
        }
    }
}

/// The test cluster's superuser URL; `None` to skip, a panic if it is required.
fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var(REQUIRE_POSTGRES_ENV).as_deref() == Ok("1") => panic!(
            "{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_URL_ENV} is not set: run the tests with \
             scripts/test.sh, which starts a PostgreSQL cluster and sets it"
        ),
        _ => {
            // Straight to stderr, past libtest's capture, so the skip is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping a PostgreSQL test: {POSTGRES_URL_ENV} is not set (scripts/test.sh sets it)"
            );
            None
        }
    }
}

/// Creates a role and a database it owns, both with a random name; returns the name and
/// the role's URL for the database.
async fn create_database(admin_url: &str) -> (String, String) {
    let name = format!("signetd_test_{:016x}", rand::random::<u64>());
    let password = format!("{:032x}", rand::random::<u128>());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_ENV}: {e}"));
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN PASSWORD '{password}'"
        )))
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} OWNER {name}"
        )))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let StoreLocation::Postgres { host, port, .. } = StoreLocation::from_url(admin_url).unwrap()
    else {
        panic!("{POSTGRES_URL_ENV} is not a PostgreSQL URL");
    };
    let url = if host.starts_with('/') {
        format!("postgres://{name}:{password}@/{name}?host={host}&port={port}")
    } else {
        format!("postgres://{name}:{password}@{host}:{port}/{name}")
    };
    (name, url)
}

/// Drops the database and its role, from a thread of its own: `Drop` cannot await, and
/// may run inside a runtime.
fn drop_database(admin_url: String, name: String) {
    let dropped = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                    .await?;
                admin.close().await
            })
    })
    .join();
    if let Ok(Err(e)) = dropped {
        eprintln!("note: cannot drop the test database: {e}");
    }
}
