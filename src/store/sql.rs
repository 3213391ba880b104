//! The state store in an SQL database: [`SqlStore`] is both the [`ReplayStore`] and the
//! [`RevocationStore`]. Two engines serve it: SQLite (an embedded file, the default) and
//! PostgreSQL (a server shared by replicas). The schema (`migrations/`) and every
//! statement here are written in the SQL both share (`$N` binds, `ON CONFLICT`,
//! `BIGINT`, `TEXT`), and run through one pool of sqlx's `Any` driver, so a statement is
//! written once and runs on either. See docs/state.md.
//!
//! Single-use verification is one statement, an insert that does nothing if the jti is
//! there: the database, not this process, decides which of concurrent uses is first, and
//! the answer survives restarts. On SQLite that statement runs on a connection of its
//! own with `synchronous = NORMAL`, and the use is made durable by one `fdatasync` of
//! the WAL ([`WalSync`]) that the caller awaits together with the fsync of the use's
//! audit record: two syncs at once instead of one after the other. Everything else
//! commits with `synchronous = FULL`.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Row};

use super::wal_sync::WalSync;
use super::{
    Durable, ReplayRefusal, ReplayStore, RevocationStore, RevokedToken, StoreError, UsedJti,
};
use crate::config::StoreLocation;
use crate::config::files::{FileKind, file_problem, state_owner_problem, user_name};
use crate::hsm::{DATA_APPLICATION, Hsm};
use crate::util::BoxFuture;

/// The schema's migrations, embedded from `migrations/`.
static MIGRATOR: Migrator = sqlx::migrate!();

/// Expired single-use rows are pruned after this many first uses, at most
/// `PRUNE_BATCH` at a time, so no single use pays for a large delete.
const PRUNE_EVERY: u64 = 256;
/// Most expired single-use rows deleted at once.
const PRUNE_BATCH: i64 = 1000;
/// Most single uses put back by one statement: two parameters each, well below either
/// engine's limit on parameters (SQLite's 32766, PostgreSQL's 65535).
const PUT_BACK_BATCH: usize = 1000;

/// How long a statement waits for SQLite's write lock (another connection, or the CLI)
/// before failing as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a connection, including (re)connecting to a PostgreSQL
/// server that refuses connections, before the store counts as unavailable: a
/// single-use verification is refused `503 state_unavailable` this soon.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest any one store operation may take, whatever the engine does (a server that
/// stopped answering without closing the connection): past it the operation fails as
/// unavailable. Above [`BUSY_TIMEOUT`], so SQLite's own wait ends first.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);

/// Most connections a store holds.
const MAX_CONNECTIONS: u32 = 4;

/// Connections of an SQLite store's single-use pool: one, since SQLite takes one writer
/// at a time anyway, and concurrent uses then queue in the pool (in order) rather than
/// in SQLite's busy handler (which sleeps and retries).
const SINGLE_USE_CONNECTIONS: u32 = 1;

/// What `signetd store check` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreStatus {
    /// The newest migration applied to the database (0: none).
    pub schema_version: i64,
    /// The newest migration this build knows.
    pub expected_version: i64,
    /// Rows of single-use jtis.
    pub used_jtis: i64,
    /// Rows of token revocations.
    pub revocations: i64,
    /// Keys recorded (their key pairs are in the token).
    pub keys: i64,
}

/// The state store in an SQL database.
pub struct SqlStore {
    pool: AnyPool,
    /// Where single uses are written: on SQLite a pool of its own, whose commits are
    /// synced by `wal` (see the module documentation); on PostgreSQL `pool` itself.
    single_use: AnyPool,
    /// An SQLite store's WAL, synced after each single use.
    wal: Option<Arc<WalSync>>,
    location: StoreLocation,
    first_uses: AtomicU64,
}

/// Longest a dropped SQLite store waits for its connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for SqlStore {
    /// An SQLite store's connections are closed one after another. Dropped as they are,
    /// each connection's worker thread closes its own at the same moment, and two
    /// `sqlite3_close` of one WAL file in one process can deadlock inside SQLite (one
    /// closing the file, the other its WAL, each holding the lock the other waits for):
    /// seen as a `signetd keys rotate` that never exited. Only on a multi-threaded
    /// runtime, where a worker may block (the daemon and the CLI run on one), and bounded.
    fn drop(&mut self) {
        if !matches!(self.location, StoreLocation::Sqlite { .. }) || self.pool.is_closed() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let pools = [self.single_use.clone(), self.pool.clone()];
        tokio::task::block_in_place(|| {
            runtime.block_on(async {
                let closing = async {
                    for pool in pools {
                        pool.close().await;
                    }
                };
                if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
                    tracing::warn!(
                        "the state store's connections did not close within {CLOSE_TIMEOUT:?}"
                    );
                }
            });
        });
    }
}

pub(super) fn failed(what: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |e| StoreError(format!("{what}: {e}"))
}

fn failed_at<'a>(
    what: &'a str,
    location: &'a StoreLocation,
) -> impl Fn(sqlx::Error) -> StoreError + 'a {
    move |e| match e {
        // sqlx retries a refused connection until the acquire timeout and then reports
        // only the timeout: say what it usually means.
        sqlx::Error::PoolTimedOut => StoreError(format!(
            "{what} ({location}): no connection within {} s: is the database server running, \
             reachable and accepting connections?",
            ACQUIRE_TIMEOUT.as_secs()
        )),
        e => StoreError(format!("{what} ({location}): {e}")),
    }
}

/// A pool of at most `connections`, whose SQLite connections get `synchronous` (the
/// pragma), foreign keys, and a busy timeout, so a writer waits for another rather
/// than fail at once.
fn pool_options(connections: u32, synchronous: &'static str) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if conn.backend_name() == SQLITE {
                    for pragma in [synchronous, "PRAGMA foreign_keys = ON", SQLITE_BUSY_TIMEOUT] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
}

/// The name sqlx's `Any` driver gives SQLite connections.
const SQLITE: &str = "SQLite";

/// [`BUSY_TIMEOUT`] as SQLite's pragma (milliseconds).
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

/// Records `revoked` in `conn`'s transaction; revoking a jti again keeps the later `exp`.
/// Shared by revocations through the API and the import of token objects.
async fn upsert_revocation(
    conn: &mut AnyConnection,
    revoked: &RevokedToken,
) -> Result<(), sqlx::Error> {
    // The next change number; the counter's row stays locked until the transaction
    // ends, so readers see change numbers in order (migrations/0003).
    let change: i64 = sqlx::query(
        "UPDATE state_counters SET value = value + 1 WHERE name = 'token_revocations' \
         RETURNING value",
    )
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    sqlx::query(
        "INSERT INTO token_revocations (jti, exp, revoked_at, change) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (jti) DO UPDATE SET exp = excluded.exp, revoked_at = excluded.revoked_at, \
         change = excluded.change \
         WHERE excluded.exp > token_revocations.exp",
    )
    .bind(&revoked.jti)
    .bind(int(revoked.exp))
    .bind(int(revoked.revoked_at))
    .bind(change)
    .execute(&mut *conn)
    .await?;
    super::notify::notify_changed(conn).await
}

/// Waits for the exclusive lock on `DB.migrate-lock` beside the SQLite file `db`;
/// held until the returned file is dropped. Taken to switch the file to WAL and to
/// migrate it (`what`, for the error), the two steps that need SQLite's exclusive lock.
async fn setup_lock(db: &Path, what: &str) -> Result<std::fs::File, StoreError> {
    let path = db.with_extension("migrate-lock");
    let failed = |e: std::io::Error| {
        StoreError(format!(
            "cannot lock {} to {what} the state store: {e}",
            path.display()
        ))
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        // Empty, and in a directory only signetd's user can enter: readable, so that
        // a lock file another user made (root running a CLI command first) can
        // still be locked through a read-only descriptor (flock needs no write).
        .mode(0o644)
        .open(&path)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => std::fs::File::open(&path),
            _ => Err(e),
        })
        .map_err(failed)?;
    for _ in 0..600 {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        }
    }
    Err(StoreError(format!(
        "{} stayed locked for 30 s: another process is setting up the state store",
        path.display()
    )))
}

/// Seconds as the database's signed 64-bit integers (saturating: no time signetd
/// handles comes near).
/// Runs a store operation, failing it as unavailable if it takes longer than
/// [`OPERATION_TIMEOUT`].
pub(super) async fn bounded<T>(
    what: &str,
    operation: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(OPERATION_TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError(format!(
                "{what}: no answer within {} s",
                OPERATION_TIMEOUT.as_secs()
            )))
        })
}

pub(super) fn int(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

pub(super) fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

impl SqlStore {
    /// Opens the store at `location` without touching its schema (see [`Self::migrate`]).
    /// An SQLite file is created if missing, mode 0600, in a directory created mode 0700;
    /// the directory and the file must be owned by signetd's user or root and not be
    /// writable by others (the file not even readable). A PostgreSQL database must
    /// exist; its server must be reachable now.
    pub async fn connect(location: &StoreLocation) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let cannot_open = || failed_at("cannot open the state store", location);
        let options = match location {
            StoreLocation::Sqlite { path } => {
                prepare_sqlite_file(path)?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(false)
                    .busy_timeout(BUSY_TIMEOUT);
                // WAL is a property of the file: set it once here, on a connection of
                // its own, since the pool's connections are opened from a URL, which
                // cannot carry it. Switching a new file needs SQLite's exclusive lock,
                // and two connections asking for it at once get "database is locked"
                // without the busy timeout (SQLite's deadlock avoidance), so openers
                // take turns.
                let _switching = setup_lock(path, "open").await?;
                options
                    .clone()
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await
                    .map_err(cannot_open())?
                    .close()
                    .await
                    .map_err(cannot_open())?;
                AnyConnectOptions::from_url(&options.to_url_lossy()).map_err(cannot_open())?
            }
            StoreLocation::Postgres { url, .. } => {
                AnyConnectOptions::from_str(url.expose()).map_err(cannot_open())?
            }
        };
        // Nothing acknowledged may be forgotten by a power loss: FULL, except for single
        // uses, whose commits `wal` syncs while their audit records are (the module
        // documentation): NORMAL, on a pool of its own.
        let pool = pool_options(MAX_CONNECTIONS, "PRAGMA synchronous = FULL")
            .connect_with(options.clone())
            .await
            .map_err(cannot_open())?;
        let (single_use, wal) = match location {
            StoreLocation::Sqlite { path } => (
                pool_options(SINGLE_USE_CONNECTIONS, "PRAGMA synchronous = NORMAL")
                    .connect_lazy_with(options),
                Some(WalSync::new(path)?),
            ),
            StoreLocation::Postgres { .. } => (pool.clone(), None),
        };
        Ok(SqlStore {
            pool,
            single_use,
            wal,
            location: location.clone(),
            first_uses: AtomicU64::new(0),
        })
    }

    /// The connection pool, for statements of other parts of the state room. Write them
    /// in the SQL both engines share (see the module documentation).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Writes a consistent copy of an SQLite store to `dest` (a new file, mode 0600)
    /// while the daemon may be writing to it (`VACUUM INTO`: one read transaction, so
    /// the copy is the store as of one moment). A PostgreSQL store is backed up with the
    /// server's own tools (`pg_dump`), which know its roles and point-in-time recovery.
    pub async fn backup_to(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        if !matches!(self.location, StoreLocation::Sqlite { .. }) {
            return Err(StoreError(format!(
                "{} is a PostgreSQL database: back it up with pg_dump (docs/operations.md)",
                self.location
            )));
        }
        let shown = dest.display();
        let text = dest
            .to_str()
            .ok_or_else(|| StoreError(format!("{shown}: the path must be UTF-8")))?;
        // Created empty first, owner-only, and never over an existing file: the copy
        // holds what the store does (revocations, key records).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|e| StoreError(format!("cannot create {shown}: {e}")))?;
        let written = sqlx::query("VACUUM INTO $1")
            .bind(text)
            .execute(self.pool())
            .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(dest);
            return Err(StoreError(format!("backing up the store to {shown}: {e}")));
        }
        Ok(())
    }

    /// Opens the store and brings its schema up to date: what the daemon does at start.
    pub async fn open(location: &StoreLocation) -> Result<SqlStore, StoreError> {
        let store = Self::connect(location).await?;
        let applied = store.migrate().await?;
        let version = store.status().await?.schema_version;
        tracing::info!(store = %location, applied = applied.len(), version, "state store open");
        Ok(store)
    }

    /// Where the store is (engine and path; never a password).
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// A feed of changes made by others, for a PostgreSQL store; `None` for SQLite.
    pub async fn change_feed(&self) -> Result<Option<super::PgChangeFeed>, StoreError> {
        let StoreLocation::Postgres { url, .. } = &self.location else {
            return Ok(None);
        };
        super::PgChangeFeed::connect(url.expose())
            .await
            .map(Some)
            .map_err(|e| StoreError(format!("listening for changes ({}): {e}", self.location)))
    }

    /// Applies the migrations the database lacks; returns their versions.
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        // sqlx serializes migrations on PostgreSQL with an advisory lock, but not on
        // SQLite: a daemon and a CLI command migrating a new file at the same moment
        // would both create the first tables. A lock file beside the database orders
        // them; the second finds everything applied.
        let _migrating = match &self.location {
            StoreLocation::Sqlite { path } => Some(setup_lock(path, "migrate").await?),
            StoreLocation::Postgres { .. } => None,
        };
        let before = self.status().await?.schema_version;
        MIGRATOR.run(&self.pool).await.map_err(|e| {
            StoreError(format!(
                "migrating the state store ({}): {e}",
                self.location
            ))
        })?;
        Ok(MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| *v > before)
            .collect())
    }

    /// The schema version against this build's, and the rows held.
    pub async fn status(&self) -> Result<StoreStatus, StoreError> {
        let expected_version = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        // No migrations table yet: nothing was ever applied.
        let schema_version = match sqlx::query(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(self.pool())
        .await
        {
            Ok(row) => row
                .try_get::<i64, _>(0)
                .map_err(failed("reading the schema version"))?,
            Err(sqlx::Error::Database(_)) => 0,
            Err(e) => return Err(failed("reading the schema version")(e)),
        };
        // A table the schema does not have yet holds no rows.
        let count = |sql: &'static str, since_version: i64| async move {
            if schema_version < since_version {
                return Ok(0);
            }
            sqlx::query(sql)
                .fetch_one(self.pool())
                .await
                .and_then(|row| row.try_get::<i64, _>(0))
                .map_err(failed("counting rows"))
        };
        Ok(StoreStatus {
            schema_version,
            expected_version,
            used_jtis: count("SELECT COUNT(*) FROM used_jtis", 1).await?,
            revocations: count("SELECT COUNT(*) FROM token_revocations", 1).await?,
            keys: count("SELECT COUNT(*) FROM keys", 2).await?,
        })
    }

    async fn use_once_sql(
        &self,
        jti: &str,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> Result<bool, StoreError> {
        // A row past its expiry may be taken over: its token can no longer verify, so
        // the jti is free again. Rows affected: 1 for a first use, 0 for a replay.
        let done = sqlx::query(
            "INSERT INTO used_jtis (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE used_jtis.expires_at < $3",
        )
        .bind(jti)
        .bind(int(exp.saturating_add(leeway)))
        .bind(int(now))
        .execute(&self.single_use)
        .await
        .map_err(failed("recording a single-use jti"))?;
        let first = done.rows_affected() == 1;
        if first && self.first_uses.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1
        {
            match self.prune_used(now).await {
                Ok(n) => tracing::debug!(pruned = n, "pruned expired single-use jtis"),
                Err(e) => tracing::warn!(error = %e, "cannot prune expired single-use jtis"),
            }
        }
        Ok(first)
    }

    /// One statement of [`ReplayStore::put_back`]: the jtis of `used` it recorded.
    async fn put_back_sql(&self, used: &[UsedJti], now: u64) -> Result<Vec<String>, StoreError> {
        let failed = failed("putting back single uses");
        // One statement for the batch, not one per row: a row alone costs a round trip
        // to PostgreSQL (80 µs here), and a start may put back a token lifetime's uses.
        // The text holds nothing but placeholders ($1 is `now`).
        let rows: Vec<String> = (0..used.len())
            .map(|i| format!("(${}, ${})", 2 * i + 2, 2 * i + 3))
            .collect();
        // As `use_once_sql`: a row past its expiry is taken over. Only the rows
        // inserted or taken over are returned.
        let sql = format!(
            "INSERT INTO used_jtis (jti, expires_at) VALUES {} \
             ON CONFLICT (jti) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE used_jtis.expires_at < $1 RETURNING jti",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(int(now));
        for use_ in used {
            query = query.bind(use_.jti.clone()).bind(int(use_.until));
        }
        // On `pool`: its commits are synced at once (FULL), as nothing awaits a
        // `Durable` here.
        query
            .fetch_all(&self.pool)
            .await
            .map_err(&failed)?
            .into_iter()
            .map(|row| row.try_get::<String, _>(0).map_err(&failed))
            .collect()
    }

    async fn live_sql(&self, now: u64) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM used_jtis WHERE expires_at >= $1")
            .bind(int(now))
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(failed("counting single-use jtis"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Deletes at most 1000 single-use rows expired before `now`; returns how many.
    pub async fn prune_used(&self, now: u64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "DELETE FROM used_jtis WHERE jti IN \
             (SELECT jti FROM used_jtis WHERE expires_at < $1 LIMIT $2)",
        )
        .bind(int(now))
        .bind(PRUNE_BATCH)
        .execute(&self.single_use)
        .await
        .map_err(failed("pruning single-use jtis"))?
        .rows_affected())
    }

    async fn revoke_sql(&self, revoked: &RevokedToken) -> Result<RevokedToken, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("revoking a token"))?;
        upsert_revocation(&mut tx, revoked)
            .await
            .map_err(failed("revoking a token"))?;
        let row = sqlx::query("SELECT exp, revoked_at FROM token_revocations WHERE jti = $1")
            .bind(&revoked.jti)
            .fetch_one(&mut *tx)
            .await
            .map_err(failed("revoking a token"))?;
        tx.commit().await.map_err(failed("revoking a token"))?;
        Ok(RevokedToken {
            jti: revoked.jti.clone(),
            exp: uint(row.try_get(0).map_err(failed("revoking a token"))?),
            revoked_at: uint(row.try_get(1).map_err(failed("revoking a token"))?),
        })
    }

    async fn list_sql(&self) -> Result<Vec<RevokedToken>, StoreError> {
        sqlx::query("SELECT jti, exp, revoked_at FROM token_revocations ORDER BY jti")
            .fetch_all(self.pool())
            .await
            .map_err(failed("listing token revocations"))?
            .into_iter()
            .map(|row| {
                Ok(RevokedToken {
                    jti: row.try_get(0)?,
                    exp: uint(row.try_get(1)?),
                    revoked_at: uint(row.try_get(2)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(failed("listing token revocations"))
    }

    async fn changed_since_sql(
        &self,
        cursor: Option<u64>,
    ) -> Result<(Vec<RevokedToken>, u64), StoreError> {
        let failed = failed("reading changed token revocations");
        let rows = sqlx::query(
            "SELECT jti, exp, revoked_at, change FROM token_revocations \
             WHERE change > $1 ORDER BY change",
        )
        // Rows from before change numbers exist carry 0: a first reading takes them too.
        .bind(cursor.map_or(-1, int))
        .fetch_all(self.pool())
        .await
        .map_err(&failed)?;
        let mut next = cursor.unwrap_or(0);
        let mut changed = Vec::with_capacity(rows.len());
        for row in rows {
            next = next.max(uint(row.try_get(3).map_err(&failed)?));
            changed.push(RevokedToken {
                jti: row.try_get(0).map_err(&failed)?,
                exp: uint(row.try_get(1).map_err(&failed)?),
                revoked_at: uint(row.try_get(2).map_err(&failed)?),
            });
        }
        Ok((changed, next))
    }

    async fn prune_sql(&self, before: u64) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM token_revocations WHERE exp < $1")
            .bind(int(before))
            .execute(self.pool())
            .await
            .map_err(failed("pruning token revocations"))?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    /// Moves token revocations kept as data objects in the token (`signetd-revoked/JTI`,
    /// as versions before the state store wrote them) into the store: every object is
    /// recorded (a later `exp` wins, as with any revocation), the rows are committed, and
    /// only then are the objects destroyed. Run at every start, so objects left by an
    /// interrupted import are taken up again; returns how many were imported.
    pub async fn import_token_revocations(&self, hsm: &Hsm) -> Result<usize, StoreError> {
        let objects = super::token_revocations::list(hsm).await?;
        if objects.is_empty() {
            return Ok(0);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(failed("importing token revocations"))?;
        for (revoked, _) in &objects {
            upsert_revocation(&mut tx, revoked)
                .await
                .map_err(failed("importing token revocations"))?;
        }
        tx.commit()
            .await
            .map_err(failed("importing token revocations"))?;
        for (_, object) in &objects {
            hsm.destroy_data(DATA_APPLICATION, &object.label, &object.value)
                .await?;
        }
        tracing::info!(
            imported = objects.len(),
            store = %self.location,
            "imported token revocations from the token's data objects into the state store and removed the objects"
        );
        Ok(objects.len())
    }
}

/// Creates the SQLite file's directory (0700) and the file (0600) if missing, and checks
/// both as config/files.rs checks what signetd trusts: whoever can write the store can
/// un-revoke tokens and reopen single-use ones.
fn prepare_sqlite_file(path: &Path) -> Result<(), StoreError> {
    let euid = rustix::process::geteuid().as_raw();
    let problem = |p: Option<String>| p.map_or(Ok(()), |p| Err(StoreError(p)));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let meta =
            std::fs::metadata(dir).map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        problem(owner_problem(dir, meta.uid(), euid))?;
        problem(file_problem(
            dir,
            FileKind::Config,
            meta.uid(),
            meta.mode(),
            euid,
        ))?;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
    problem(owner_problem(path, meta.uid(), euid))?;
    problem(file_problem(
        path,
        FileKind::Private,
        meta.uid(),
        meta.mode(),
        euid,
    ))
}

/// The store's own owner rule, checked before `file_problem`'s: another user's store is
/// to be opened as that user, not chowned (see `state_owner_problem`).
fn owner_problem(path: &Path, owner: u32, euid: u32) -> Option<String> {
    state_owner_problem(path, owner, euid, user_name(owner).as_deref())
}

impl ReplayStore for SqlStore {
    fn use_once<'a>(
        &'a self,
        jti: &'a str,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> BoxFuture<'a, Result<Durable, ReplayRefusal>> {
        Box::pin(async move {
            let used = bounded(
                "recording a single-use jti",
                self.use_once_sql(jti, exp, now, leeway),
            );
            match used.await {
                Ok(true) => Ok(match &self.wal {
                    Some(wal) => {
                        let sync = Arc::clone(wal).sync();
                        Box::pin(bounded("syncing a single use", sync)) as Durable
                    }
                    // PostgreSQL committed it durably.
                    None => super::already_durable(),
                }),
                Ok(false) => Err(ReplayRefusal::Replayed),
                Err(e) => {
                    // Fail closed: without the store, single use cannot be promised.
                    tracing::error!(error = %e, "single-use check failed: the state store is unavailable");
                    Err(ReplayRefusal::Unavailable)
                }
            }
        })
    }

    fn live(&self, now: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(bounded("counting single-use jtis", self.live_sql(now)))
    }

    fn put_back<'a>(
        &'a self,
        used: &'a [UsedJti],
        now: u64,
        put_back: &'a mut Vec<String>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // One row per jti, with its latest time: PostgreSQL refuses a statement that
            // updates one row twice, and a jti used twice (the first use expired) is
            // remembered until the later.
            let mut latest = std::collections::BTreeMap::new();
            for use_ in used.iter().filter(|u| u.until >= now) {
                let until = latest.entry(use_.jti.as_str()).or_insert(use_.until);
                *until = (*until).max(use_.until);
            }
            let used: Vec<UsedJti> = latest
                .into_iter()
                .map(|(jti, until)| UsedJti {
                    jti: jti.to_string(),
                    until,
                })
                .collect();
            // Each batch is committed on its own, so what a failure leaves put back is
            // what earlier batches returned.
            for batch in used.chunks(PUT_BACK_BATCH) {
                put_back.extend(
                    bounded("putting back single uses", self.put_back_sql(batch, now)).await?,
                );
            }
            Ok(())
        })
    }
}

impl RevocationStore for SqlStore {
    fn revoke<'a>(
        &'a self,
        revoked: &'a RevokedToken,
    ) -> BoxFuture<'a, Result<RevokedToken, StoreError>> {
        Box::pin(bounded("revoking a token", self.revoke_sql(revoked)))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<RevokedToken>, StoreError>> {
        Box::pin(bounded("listing token revocations", self.list_sql()))
    }

    fn changed_since(
        &self,
        cursor: Option<u64>,
    ) -> BoxFuture<'_, Result<(Vec<RevokedToken>, u64), StoreError>> {
        Box::pin(bounded(
            "reading changed token revocations",
            self.changed_since_sql(cursor),
        ))
    }

    fn prune(&self, before: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(bounded("pruning token revocations", self.prune_sql(before)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::test_db::{Engine, TestDb};

    /// `use_once`, awaiting its sync too: what a caller answers.
    async fn used(
        store: &(impl ReplayStore + ?Sized),
        jti: &str,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> Result<(), ReplayRefusal> {
        let durable = store.use_once(jti, exp, now, leeway).await?;
        durable.await.map_err(|_| ReplayRefusal::Unavailable)
    }

    /// Each test named here runs twice, once per engine, on a database of its own.
    macro_rules! on_both_engines {
        ($($test:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let db = super::TestDb::new(super::Engine::Sqlite).await.unwrap();
                        super::$test(&db).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let Some(db) = super::TestDb::new(super::Engine::Postgres).await else {
                            return;
                        };
                        super::$test(&db).await;
                    }
                )*
            }
        };
    }

    /// A daemon and CLI commands opening a new SQLite file at the same moment all
    /// migrate it; none fails on tables another created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_migrations_of_a_new_sqlite_file_all_succeed() {
        let db = TestDb::new(Engine::Sqlite).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let location = db.location().clone();
                tokio::spawn(async move { SqlStore::open(&location).await.map(|_| ()) })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let store = SqlStore::connect(db.location()).await.unwrap();
        let status = store.status().await.unwrap();
        assert_eq!(status.schema_version, status.expected_version);
    }

    on_both_engines!(
        a_jti_is_used_once_until_exp_plus_leeway_and_survives_reopening,
        concurrent_uses_of_one_jti_by_two_stores_succeed_exactly_once,
        revoking_again_keeps_the_later_exp_and_prune_forgets_expired,
        status_reports_the_schema_version_before_and_after_migrating,
        an_unreachable_store_refuses_single_use_rather_than_allow_it,
        put_back_records_only_forgotten_unexpired_uses,
    );

    async fn a_jti_is_used_once_until_exp_plus_leeway_and_survives_reopening(db: &TestDb) {
        let store = SqlStore::open(db.location()).await.unwrap();
        let replay: &dyn ReplayStore = &store;
        assert_eq!(used(replay, "a", 100, 50, 5).await, Ok(()));
        assert_eq!(
            used(replay, "a", 100, 104, 5).await,
            Err(ReplayRefusal::Replayed)
        );
        drop(store);
        let store = SqlStore::open(db.location()).await.unwrap();
        assert_eq!(
            used(&store, "a", 100, 104, 5).await,
            Err(ReplayRefusal::Replayed)
        );
        // Past exp + leeway the row may be taken over (the token no longer verifies).
        assert_eq!(used(&store, "a", 200, 106, 5).await, Ok(()));
        assert_eq!(used(&store, "b", 10, 50, 5).await, Ok(()));
        assert_eq!(store.prune_used(50).await.unwrap(), 1);
        assert_eq!(store.status().await.unwrap().used_jtis, 1);
        if let StoreLocation::Sqlite { path } = db.location() {
            let mode = std::fs::metadata(path).unwrap().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    /// Two stores on one database, as two replicas would hold: of 32 concurrent first
    /// uses of one jti, the database lets exactly one through.
    async fn concurrent_uses_of_one_jti_by_two_stores_succeed_exactly_once(db: &TestDb) {
        let stores = [
            Arc::new(SqlStore::open(db.location()).await.unwrap()),
            Arc::new(SqlStore::open(db.location()).await.unwrap()),
        ];
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = stores[i % 2].clone();
                tokio::spawn(async move { used(&*store, "same", 100, 10, 5).await })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => accepted += 1,
                Err(refusal) => assert_eq!(refusal, ReplayRefusal::Replayed),
            }
        }
        assert_eq!(accepted, 1);
    }

    async fn revoking_again_keeps_the_later_exp_and_prune_forgets_expired(db: &TestDb) {
        let store = SqlStore::open(db.location()).await.unwrap();
        let r = |jti: &str, exp, at| RevokedToken {
            jti: jti.into(),
            exp,
            revoked_at: at,
        };
        assert_eq!(store.revoke(&r("a", 100, 1)).await.unwrap(), r("a", 100, 1));
        assert_eq!(store.revoke(&r("a", 50, 2)).await.unwrap(), r("a", 100, 1));
        assert_eq!(store.revoke(&r("a", 150, 3)).await.unwrap(), r("a", 150, 3));
        store.revoke(&r("b", 20, 4)).await.unwrap();
        assert_eq!(
            store.list().await.unwrap(),
            vec![r("a", 150, 3), r("b", 20, 4)]
        );
        assert_eq!(store.prune(21).await.unwrap(), 1);
        assert_eq!(store.list().await.unwrap(), vec![r("a", 150, 3)]);
    }

    async fn status_reports_the_schema_version_before_and_after_migrating(db: &TestDb) {
        let store = SqlStore::connect(db.location()).await.unwrap();
        let before = store.status().await.unwrap();
        assert_eq!(before.schema_version, 0);
        assert!(before.expected_version >= 1);
        let every: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(store.migrate().await.unwrap(), every);
        assert_eq!(store.migrate().await.unwrap(), Vec::<i64>::new());
        let after = store.status().await.unwrap();
        assert_eq!(after.schema_version, after.expected_version);
        assert_eq!((after.used_jtis, after.revocations), (0, 0));
    }

    async fn an_unreachable_store_refuses_single_use_rather_than_allow_it(db: &TestDb) {
        let store = SqlStore::open(db.location()).await.unwrap();
        store.pool.close().await;
        store.single_use.close().await;
        assert_eq!(
            used(&store, "a", 100, 50, 5).await,
            Err(ReplayRefusal::Unavailable)
        );
        assert!(store.list().await.is_err());
    }

    async fn put_back_records_only_forgotten_unexpired_uses(db: &TestDb) {
        let store = SqlStore::open(db.location()).await.unwrap();
        // Remembered: "kept" until 105; "stale" until 40, expired at 50.
        assert_eq!(used(&store, "kept", 100, 40, 5).await, Ok(()));
        assert_eq!(used(&store, "stale", 35, 30, 5).await, Ok(()));
        let use_ = |jti: &str, until| UsedJti {
            jti: jti.to_string(),
            until,
        };
        let mut lost: Vec<UsedJti> = (0..2500).map(|i| use_(&format!("lost-{i}"), 90)).collect();
        lost.extend([
            use_("kept", 105),
            use_("stale", 80),
            use_("gone", 49),
            // Twice, as a log may record a jti used again after its first use expired.
            use_("twice", 60),
            use_("twice", 70),
        ]);
        let mut put_back = Vec::new();
        store.put_back(&lost, 50, &mut put_back).await.unwrap();
        put_back.sort();
        let mut expected: Vec<String> = (0..2500).map(|i| format!("lost-{i}")).collect();
        expected.extend(["stale".to_string(), "twice".to_string()]);
        expected.sort();
        assert_eq!(put_back, expected);
        for jti in ["kept", "stale", "twice", "lost-0", "lost-2499"] {
            assert_eq!(
                used(&store, jti, 100, 60, 5).await,
                Err(ReplayRefusal::Replayed),
                "{jti}"
            );
        }
        // Remembered until the later time, and "gone" (expired already) not at all.
        assert_eq!(
            used(&store, "twice", 100, 65, 5).await,
            Err(ReplayRefusal::Replayed)
        );
        assert_eq!(used(&store, "twice", 100, 71, 5).await, Ok(()));
        assert_eq!(used(&store, "gone", 100, 50, 5).await, Ok(()));
        // Everything is remembered now: a second call puts nothing back.
        let mut again = Vec::new();
        store.put_back(&lost, 50, &mut again).await.unwrap();
        assert_eq!(again, Vec::<String>::new());
    }

    /// A TCP proxy in front of the test cluster, standing for the PostgreSQL server as
    /// the store sees it: `Up` forwards, `Down` closes every connection and refuses new
    /// ones (a stopped server), `Silent` accepts connections and never answers (a server
    /// or network that hangs).
    struct Proxy {
        port: u16,
        target: std::net::SocketAddr,
        serving: Option<tokio::task::JoinHandle<()>>,
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum ProxyMode {
        Up,
        Down,
        Silent,
    }

    impl Proxy {
        async fn start(target: std::net::SocketAddr) -> Proxy {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut proxy = Proxy {
                port,
                target,
                serving: None,
            };
            proxy.serve(listener, ProxyMode::Up);
            proxy
        }

        fn serve(&mut self, listener: tokio::net::TcpListener, mode: ProxyMode) {
            let target = self.target;
            self.serving = Some(tokio::spawn(async move {
                // Dropped with the task when the mode changes: every connection closes.
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.spawn(async move {
                        if mode == ProxyMode::Silent {
                            std::future::pending::<()>().await;
                        }
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }));
        }

        async fn set(&mut self, mode: ProxyMode) {
            if let Some(serving) = self.serving.take() {
                serving.abort();
                let _ = serving.await;
            }
            if mode != ProxyMode::Down {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                    .await
                    .unwrap();
                self.serve(listener, mode);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stopped_or_silent_postgres_server_refuses_single_use_and_recovers() {
        let Some(db) = TestDb::new(Engine::Postgres).await else {
            return;
        };
        let StoreLocation::Postgres {
            host, port, url, ..
        } = db.location()
        else {
            unreachable!()
        };
        let target = tokio::net::lookup_host((host.as_str(), *port))
            .await
            .unwrap()
            .next()
            .unwrap();
        let mut proxy = Proxy::start(target).await;
        let through_proxy = url
            .expose()
            .replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
        let store = SqlStore::open(&StoreLocation::from_url(&through_proxy).unwrap())
            .await
            .unwrap();
        assert_eq!(used(&store, "before", 100, 50, 5).await, Ok(()));

        for outage in [ProxyMode::Down, ProxyMode::Silent] {
            proxy.set(outage).await;
            // Bounded by the acquire and operation timeouts, not by the outage.
            assert_eq!(
                used(&store, "during", 100, 50, 5).await,
                Err(ReplayRefusal::Unavailable)
            );
            assert!(store.list().await.is_err());
            proxy.set(ProxyMode::Up).await;
            // The same store reconnects: the first use after the outage succeeds.
            let mut recovered = Err(ReplayRefusal::Unavailable);
            for _ in 0..100 {
                recovered = used(&store, "during", 100, 50, 5).await;
                if recovered != Err(ReplayRefusal::Unavailable) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(recovered, Ok(()), "after {outage:?}");
            assert_eq!(
                used(&store, "during", 100, 50, 5).await,
                Err(ReplayRefusal::Replayed)
            );
            // Free the jti for the next outage.
            sqlx::query("DELETE FROM used_jtis WHERE jti = $1")
                .bind("during")
                .execute(store.pool())
                .await
                .unwrap();
        }
        assert_eq!(
            used(&store, "before", 100, 50, 5).await,
            Err(ReplayRefusal::Replayed)
        );
    }

    /// A `PRAGMA` query's answer on a connection of `pool`, as text.
    async fn pragma(pool: &AnyPool, query: &'static str) -> String {
        let row = sqlx::query(query).fetch_one(pool).await.unwrap();
        row.try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn sqlite_connections_use_wal_full_sync_and_a_busy_timeout() {
        let db = TestDb::new(Engine::Sqlite).await.unwrap();
        let store = SqlStore::open(db.location()).await.unwrap();
        for pool in [&store.pool, &store.single_use] {
            assert_eq!(pragma(pool, "PRAGMA journal_mode").await, "wal");
            assert_eq!(pragma(pool, "PRAGMA busy_timeout").await, "5000");
            assert_eq!(pragma(pool, "PRAGMA foreign_keys").await, "1");
        }
        // 2: FULL, for everything but single uses; 1: NORMAL, for those ...
        assert_eq!(pragma(&store.pool, "PRAGMA synchronous").await, "2");
        assert_eq!(pragma(&store.single_use, "PRAGMA synchronous").await, "1");
        // ... and each single use's commit is made durable by a sync of the WAL.
        let wal = store.wal.clone().unwrap();
        assert_eq!(wal.syncs(), 0);
        used(&store, "a", 100, 50, 5).await.unwrap();
        assert_eq!(wal.syncs(), 1);
        // The file synced is SQLite's WAL (the commit is in it), not a path beside it.
        assert!(wal.wal().exists(), "{}", wal.wal().display());
    }

    #[test]
    fn the_busy_timeout_pragma_is_busy_timeout() {
        assert_eq!(
            SQLITE_BUSY_TIMEOUT,
            format!("PRAGMA busy_timeout = {}", BUSY_TIMEOUT.as_millis())
        );
    }

    #[tokio::test]
    async fn a_store_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signetd.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let e = SqlStore::connect(&StoreLocation::Sqlite { path })
            .await
            .err()
            .unwrap();
        assert!(e.0.contains("chmod 600"), "{e}");
    }
}
