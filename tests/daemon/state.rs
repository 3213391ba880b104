//! Issue 12: the state store. Single-use jtis and token revocations live in an SQL
//! database (SQLite beside the audit log by default, or PostgreSQL), survive restarts,
//! fail closed while the database is unreachable, and are no longer objects in the
//! token; revocations earlier versions kept in the token are imported once. Each test
//! runs on both engines, on a database of its own ([`TestStore`]).

use std::path::Path;

use hyper::Method;
use serde_json::json;
use signetd::Algorithm;
use signetd::config::StoreLocation;
use signetd::store::{RevocationStore, RevokedToken, SqlStore};

use crate::common::{
    Engine, Reply, TestStore, TestToken, decode_parts, eventually, issuer_toml, lifecycle_toml,
    request_unix,
};

/// Each test named here runs twice, once per engine: `state::sqlite::NAME` and
/// `state::postgres::NAME`.
macro_rules! on_both_engines {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::common::Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(crate::common::Engine::Postgres).await;
                }
            )*
        }
    };
}

on_both_engines!(
    single_use_and_revocations_survive_a_restart,
    concurrent_single_use_of_one_token_succeeds_exactly_once,
    revocations_in_the_token_are_imported_once_and_removed_from_it,
    store_migrate_and_check_from_the_cli,
    single_use_fails_closed_while_the_store_is_unreachable_and_recovers,
);

/// The store file a test token's daemon uses by default: `state/signetd.db` beside the
/// audit dir.
fn store_path(t: &TestToken) -> std::path::PathBuf {
    t.path("state/signetd.db")
}

/// A test token with `issuer`, its CA and first key, and a config using `store`;
/// returns the config and socket paths.
fn configured(
    t: &TestToken,
    issuer: &str,
    store: &TestStore,
    extra: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let tables = issuer_toml(issuer, Algorithm::Es256) + &lifecycle_toml() + &store.toml() + extra;
    let (config, socket) = t.write_config(&tables);
    t.init_ca_and_key(&config, issuer);
    (config, socket)
}

async fn single_use(socket: &Path, token: &str) -> Reply {
    request_unix(
        socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": token, "audience": "api", "single_use": true})),
    )
    .await
}

fn mint(t: &TestToken, socket: &Path, issuer: &str) -> String {
    let socket = socket.display().to_string();
    t.signetd_ok(&[
        "token", "mint", "--issuer", issuer, "--aud", "api", "--socket", &socket,
    ])
}

fn listed_jtis(reply: &Reply) -> Vec<String> {
    reply.json["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", reply.json))
        .iter()
        .map(|t| t["jti"].as_str().unwrap().to_string())
        .collect()
}

/// Objects in the token, as OpenSC's pkcs11-tool (not our code) lists them: one
/// unindented line per object.
fn object_count(t: &TestToken) -> usize {
    t.pkcs11_tool(&["--list-objects"])
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']) && l.to_lowercase().contains("object"))
        .count()
}

async fn single_use_and_revocations_survive_a_restart(engine: Engine) {
    let t = TestToken::create("state-restart");
    let Some(store) = TestStore::new(engine, &store_path(&t)).await else {
        return;
    };
    let (config, socket) = configured(&t, "state-restart", &store, "");

    let mut first = t.serve(&config, &socket);
    let used = mint(&t, &socket, "state-restart");
    let reply = single_use(&socket, &used).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let revoked = mint(&t, &socket, "state-restart");
    let jti = decode_parts(&revoked).1["jti"].clone();
    let reply = request_unix(
        &socket,
        Method::POST,
        "/v1/revocations",
        Some(&json!({"jti": jti})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    first.crash();
    if engine == Engine::Sqlite {
        // The database file is private to signetd's user.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(store_path(&t)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    let _second = t.serve(&config, &socket);
    let replay = single_use(&socket, &used).await;
    assert_eq!(
        (replay.status, replay.code()),
        (422, "replayed"),
        "{:?}",
        replay.json
    );
    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert_eq!(
        listed_jtis(&listed),
        vec![jti.as_str().unwrap().to_string()]
    );
    let refused = request_unix(
        &socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": revoked, "audience": "api"})),
    )
    .await;
    assert_eq!(refused.code(), "token_revoked", "{:?}", refused.json);
}

/// A single use on SQLite is answered only once the WAL holding its commit is synced
/// (beside its audit record). A WAL that cannot be synced refuses the use, records the
/// refusal, and refuses every later one: a failed sync cannot be retried safely.
#[tokio::test]
async fn a_single_use_whose_wal_cannot_be_synced_is_refused_and_so_is_every_later_one() {
    let t = TestToken::create("state-wal-sync");
    let store = TestStore::new(Engine::Sqlite, &store_path(&t))
        .await
        .expect("SQLite needs no server");
    let (config, socket) = configured(&t, "state-wal-sync", &store, "");
    let _daemon = t.serve(&config, &socket);
    let first = mint(&t, &socket, "state-wal-sync");
    assert_eq!(single_use(&socket, &first).await.status, 200);

    // SQLite keeps the WAL it has open; the path the daemon syncs by no longer opens.
    let wal = t.path("state/signetd.db-wal");
    std::fs::rename(&wal, t.path("state/moved-wal")).unwrap();
    std::os::unix::fs::symlink(&wal, &wal).unwrap();
    let second = mint(&t, &socket, "state-wal-sync");
    let refused = single_use(&socket, &second).await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, "state_unavailable"),
        "{:?}",
        refused.json
    );
    let jti = decode_parts(&second).1["jti"].as_str().unwrap().to_string();
    let records: Vec<_> = crate::common::audit_records(&t.audit_dir())
        .into_iter()
        .filter(|r| r["event"] == "verify" && r["jti"] == jti.as_str())
        .collect();
    let outcomes: Vec<_> = records.iter().map(|r| r["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("ok"), json!("refused")], "{records:?}");

    std::fs::remove_file(&wal).unwrap();
    let third = mint(&t, &socket, "state-wal-sync");
    assert_eq!(
        single_use(&socket, &third).await.code(),
        "state_unavailable"
    );
}

async fn concurrent_single_use_of_one_token_succeeds_exactly_once(engine: Engine) {
    // A token of its own: its keys are recorded in the state store under test, which
    // the shared test token's keys are not.
    let t = TestToken::create("state-once");
    let Some(store) = TestStore::new(engine, &store_path(&t)).await else {
        return;
    };
    let (config, socket) = configured(&t, "state-once", &store, "");
    let _daemon = t.serve(&config, &socket);
    let minted = request_unix(
        &socket,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"issuer": "state-once", "aud": "api"})),
    )
    .await;
    assert_eq!(minted.status, 200, "{:?}", minted.json);
    let token = minted.json["token"].as_str().unwrap().to_string();
    let attempts: Vec<_> = (0..32)
        .map(|_| {
            let socket = socket.clone();
            let token = token.clone();
            tokio::spawn(async move { single_use(&socket, &token).await })
        })
        .collect();
    let mut codes = Vec::new();
    for attempt in attempts {
        let reply = attempt.await.unwrap();
        codes.push(if reply.status == 200 {
            "ok".to_string()
        } else {
            reply.code().to_string()
        });
    }
    assert_eq!(codes.iter().filter(|c| *c == "ok").count(), 1, "{codes:?}");
    assert_eq!(
        codes.iter().filter(|c| *c == "replayed").count(),
        31,
        "{codes:?}"
    );
}

async fn revocations_in_the_token_are_imported_once_and_removed_from_it(engine: Engine) {
    let t = TestToken::create("state-import");
    let Some(store) = TestStore::new(engine, &store_path(&t)).await else {
        return;
    };
    let (config, socket) = configured(&t, "state-import", &store, "");
    // A first start makes the audit key; count the objects after it.
    t.serve(&config, &socket).terminate();
    let objects_before = object_count(&t);
    // Two revocations as the previous version wrote them: a private data object of
    // application "signetd" labelled signetd-revoked/JTI, holding the record as JSON.
    let far = signetd::service::unix_now() + 3600;
    for jti in ["old-one", "old-two"] {
        let record = t.path(&format!("{jti}.json"));
        let value = json!({"jti": jti, "exp": far, "revoked_at": 1});
        std::fs::write(&record, value.to_string()).unwrap();
        let label = format!("signetd-revoked/{jti}");
        t.pkcs11_tool(&[
            "--write-object",
            record.to_str().unwrap(),
            "--type",
            "data",
            "--label",
            &label,
            "--application-label",
            "signetd",
            "--private",
        ]);
    }
    assert_eq!(object_count(&t), objects_before + 2);

    let mut daemon = t.serve(&config, &socket);
    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert_eq!(listed_jtis(&listed), vec!["old-one", "old-two"]);
    daemon.terminate();
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(
        log.contains("imported token revocations") && log.contains("imported=2"),
        "{log}"
    );
    // The objects are gone; the keys and certificates are untouched.
    assert_eq!(object_count(&t), objects_before);

    // A second start finds nothing to import and keeps the imported rows.
    let _again = t.serve(&config, &socket);
    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert_eq!(listed_jtis(&listed), vec!["old-one", "old-two"]);
}

/// On SQLite only: what it shows (the token holds no revocation) is the same on either
/// engine, and ten thousand single-row transactions are slow on PostgreSQL.
#[tokio::test]
async fn ten_thousand_revocations_add_no_object_to_the_token() {
    let t = TestToken::create("state-many");
    let tables = issuer_toml("state-many", Algorithm::Es256) + &lifecycle_toml();
    let (config, socket) = t.write_config(&tables);
    t.init_ca_and_key(&config, "state-many");

    // One through the admin API, the rest through the store the daemon opens.
    let mut daemon = t.serve(&config, &socket);
    let reply = request_unix(
        &socket,
        Method::POST,
        "/v1/revocations",
        Some(&json!({"jti": "through-the-api"})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    daemon.terminate();
    // Counted after the first start, which made the audit key.
    let objects_before = object_count(&t);
    let store = SqlStore::open(&StoreLocation::Sqlite {
        path: store_path(&t),
    })
    .await
    .unwrap();
    let exp = signetd::service::unix_now() + 3600;
    for i in 1..10_000 {
        let revoked = RevokedToken {
            jti: format!("bulk-{i:05}"),
            exp,
            revoked_at: 1,
        };
        store.revoke(&revoked).await.unwrap();
    }
    drop(store);

    let _daemon = t.serve(&config, &socket);
    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert_eq!(listed_jtis(&listed).len(), 10_000);
    assert_eq!(object_count(&t), objects_before);
}

async fn store_migrate_and_check_from_the_cli(engine: Engine) {
    let t = TestToken::create("state-cli");
    let Some(store) = TestStore::new(engine, &store_path(&t)).await else {
        return;
    };
    let (config, _) = t.write_config(&store.toml());
    let c = config.to_str().unwrap();
    // No schema yet (an SQLite file is created empty): check finds none and fails.
    let (ok, out, err) = t.signetd(&["store", "check", "--config", c]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("schema version: 0") && err.contains("signetd store migrate"),
        "{out}\n{err}"
    );
    // Every migration in migrations/ (NNNN_what.sql), in order.
    let mut versions: Vec<i64> = std::fs::read_dir(crate::common::repo_root().join("migrations"))
        .unwrap()
        .map(|e| {
            e.unwrap().file_name().to_string_lossy()[..4]
                .parse()
                .unwrap()
        })
        .collect();
    versions.sort_unstable();
    let latest = versions.last().unwrap();
    let out = t.signetd_ok(&["store", "migrate", "--config", c]);
    assert!(
        out.contains(&format!("migrations applied: {versions:?}")),
        "{out}"
    );
    let out = t.signetd_ok(&["store", "check", "--config", c]);
    assert!(
        out.contains(&format!(
            "schema version: {latest} (this build expects {latest})"
        )) && out.contains("token revocations: 0"),
        "{out}"
    );
    // Where the store is, but no password.
    assert!(out.contains(&store.location().to_string()), "{out}");
    if let StoreLocation::Postgres { url, .. } = store.location() {
        let password = url.expose().split(['@', ':']).nth(2).unwrap().to_string();
        assert!(!out.contains(&password), "{out}");
    }
    // Migrating again changes nothing.
    let (ok, out, _) = t.signetd(&["store", "migrate", "--config", c]);
    assert!(ok && out.contains("migrations applied: []"), "{out}");
}

/// The store made unreachable for real while a daemon serves on it: a PostgreSQL
/// database that refuses connections and whose open ones are terminated, or an SQLite
/// file another process holds the write lock of.
enum Outage {
    Postgres(String),
    Sqlite(sqlx::SqliteConnection),
}

impl Outage {
    async fn begin(store: &TestStore, t: &TestToken) -> Outage {
        use sqlx::{Connection, Executor};
        match store.postgres_name() {
            Some(name) => {
                store
                    .admin(&[
                        format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
                        format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                        ),
                    ])
                    .await;
                Outage::Postgres(name.to_string())
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(store_path(t));
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                conn.execute("BEGIN EXCLUSIVE").await.unwrap();
                Outage::Sqlite(conn)
            }
        }
    }

    async fn end(self, store: &TestStore) {
        use sqlx::{Connection, Executor};
        match self {
            Outage::Postgres(name) => {
                store
                    .admin(&[format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")])
                    .await;
            }
            Outage::Sqlite(mut conn) => {
                conn.execute("ROLLBACK").await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

async fn single_use_fails_closed_while_the_store_is_unreachable_and_recovers(engine: Engine) {
    let t = TestToken::create("state-down");
    let Some(store) = TestStore::new(engine, &store_path(&t)).await else {
        return;
    };
    // Requests give up after 10 s: a state_unavailable answer (not deadline_exceeded)
    // shows the store gave up sooner.
    let limits = "\n[limits]\nrequest_timeout_seconds = 10\n";
    let (config, socket) = configured(&t, "state-down", &store, limits);
    let mut daemon = t.serve(&config, &socket);
    let before = mint(&t, &socket, "state-down");
    let reply = single_use(&socket, &before).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    let outage = Outage::begin(&store, &t).await;
    // Minting, plain verification and the JWKS need no state store.
    let token = mint(&t, &socket, "state-down");
    let refused = single_use(&socket, &token).await;
    assert_eq!(
        (refused.status, refused.code()),
        (503, "state_unavailable"),
        "{:?}",
        refused.json
    );
    let plain = request_unix(
        &socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": token, "audience": "api"})),
    )
    .await;
    assert_eq!(plain.status, 200, "{:?}", plain.json);
    let jwks = request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, 200, "{:?}", jwks.json);
    assert!(!jwks.json["keys"].as_array().unwrap().is_empty());
    // Revoking cannot be recorded either: refused, not pretended.
    let revoke = request_unix(
        &socket,
        Method::POST,
        "/v1/revocations",
        Some(&json!({"jti": "during-the-outage"})),
    )
    .await;
    assert_eq!(revoke.code(), "state_unavailable", "{:?}", revoke.json);

    outage.end(&store).await;
    // The same daemon, not restarted, reconnects: the refused token was never recorded
    // as used, so its single use now succeeds, and the token used before is still used.
    let mut last = None;
    let recovered = eventually(20, async || {
        let reply = single_use(&socket, &token).await;
        let done = reply.status != 503;
        last = Some(reply);
        done
    })
    .await;
    let last = last.unwrap();
    assert!(
        recovered,
        "still refused 20 s after the store returned: {:?}",
        last.json
    );
    assert_eq!(last.status, 200, "{:?}", last.json);
    let replay = single_use(&socket, &before).await;
    assert_eq!(replay.code(), "replayed", "{:?}", replay.json);
    daemon.terminate();
    // The connection string's password never reaches the log.
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(log.contains("state store"), "{log}");
    if let StoreLocation::Postgres { url, .. } = store.location() {
        let password = url.expose().split(['@', ':']).nth(2).unwrap().to_string();
        assert!(!log.contains(&password), "{log}");
    }
}
