//! Issue 12 (first slice): the state store. Single-use jtis and token revocations live
//! in an SQLite file beside the audit log, survive restarts, and are no longer objects
//! in the token; revocations earlier versions kept in the token are imported once.

use std::path::Path;

use hyper::Method;
use serde_json::json;
use signetd::Algorithm;
use signetd::config::StoreLocation;
use signetd::store::{RevocationStore, RevokedToken, SqlStore};

use crate::common::{
    Reply, TestDaemon, TestToken, decode_parts, generate_key, issuer_toml, lifecycle_toml,
    request_unix,
};

/// The store file a test token's daemon uses by default: `state/signetd.db` beside the
/// audit dir.
fn store_path(t: &TestToken) -> std::path::PathBuf {
    t.path("state/signetd.db")
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
    let (ok, token, err) = t.signetd(&[
        "token", "mint", "--issuer", issuer, "--aud", "api", "--socket", &socket,
    ]);
    assert!(ok, "{err}");
    token
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

#[tokio::test]
async fn single_use_and_revocations_survive_a_restart() {
    let t = TestToken::create("state-restart");
    let tables = issuer_toml("state-restart", Algorithm::Es256) + &lifecycle_toml();
    let (config, socket) = t.write_config(&tables);
    t.init_ca_and_key(&config, "state-restart");

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
    // The database file is private to signetd's user.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(store_path(&t)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

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

#[tokio::test]
async fn concurrent_single_use_of_one_token_succeeds_exactly_once() {
    generate_key("state-once", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("state-once", Algorithm::Es256),
        lifecycle_toml()
    ))
    .await;
    let minted = daemon
        .post("/v1/tokens", &json!({"issuer": "state-once", "aud": "api"}))
        .await;
    assert_eq!(minted.status, 200, "{:?}", minted.json);
    let token = minted.json["token"].as_str().unwrap().to_string();
    let attempts: Vec<_> = (0..16)
        .map(|_| {
            let socket = daemon.socket.clone();
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
        15,
        "{codes:?}"
    );
}

#[tokio::test]
async fn revocations_in_the_token_are_imported_once_and_removed_from_it() {
    let t = TestToken::create("state-import");
    let tables = issuer_toml("state-import", Algorithm::Es256) + &lifecycle_toml();
    let (config, socket) = t.write_config(&tables);
    t.init_ca_and_key(&config, "state-import");
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

#[tokio::test]
async fn store_migrate_and_check_from_the_cli() {
    let t = TestToken::create("state-cli");
    let (config, _) = t.write_config("");
    let c = config.to_str().unwrap();
    // No store yet: check creates an empty file, finds no schema and fails.
    let (ok, out, err) = t.signetd(&["store", "check", "--config", c]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("schema version: 0") && err.contains("signetd store migrate"),
        "{out}\n{err}"
    );
    let (ok, out, err) = t.signetd(&["store", "migrate", "--config", c]);
    assert!(ok, "{err}");
    assert!(out.contains("migrations applied: [1, 2]"), "{out}");
    let (ok, out, err) = t.signetd(&["store", "check", "--config", c]);
    assert!(ok, "{err}");
    assert!(
        out.contains("schema version: 2 (this build expects 2)")
            && out.contains("token revocations: 0"),
        "{out}"
    );
    assert!(out.contains(&store_path(&t).display().to_string()), "{out}");
    // Migrating again changes nothing.
    let (ok, out, _) = t.signetd(&["store", "migrate", "--config", c]);
    assert!(ok && out.contains("migrations applied: []"), "{out}");
}
