//! Replicas: several daemons on one token sharing one state store. Each keeps its own
//! audit log naming it; a key change or a revocation made at one is followed by the
//! others within a tick; a jti used at one is used at all; of the lifecycle's
//! transitions each is applied once, by the holder of the lifecycle lease, and another
//! replica takes the lease over when the holder stops.
//!
//! Two in-process daemons stand in for two hosts: they share the test token (as
//! replicas share a network HSM) and one store: a PostgreSQL database, as replicas
//! share one, and also an SQLite file (replicas on one host).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use signetd::keys::{self, KeyPurpose};
use signetd::service::unix_now;
use signetd::store::{KeyMetadata, SqlStore};

use crate::common::{
    Engine, TestDaemon, TestStore, TestToken, audit_records, ca, eventually, generate_key, hsm,
    issuer_toml, kids, lifecycle_toml, mint, request_unix, store_url,
};

/// A replica's config: the issuer, 1 s ticks, the shared store, its name.
fn replica(issuer: &str, store_url: &str, name: &str) -> String {
    format!(
        "{}max_ttl_seconds = 1\n{}[store]\nurl = {store_url:?}\n[replica]\nname = \"{name}\"\n",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml(),
    )
}

/// The store two in-process replicas on the test token share, holding the attestation
/// CA's chain and `issuer`'s first key: the test token's own store for SQLite (where
/// the token's keys are recorded), or a fresh PostgreSQL database. Returns the store
/// (kept for the test: dropping a PostgreSQL one drops its database), its URL and the
/// key's kid; `None` if the test is skipped.
async fn shared_store(engine: Engine, issuer: &str) -> Option<(Option<TestStore>, String, String)> {
    if engine == Engine::Sqlite {
        return Some((
            None,
            store_url(),
            generate_key(issuer, Algorithm::Es256).await,
        ));
    }
    let store = TestStore::new(engine, Path::new("/unused")).await?;
    let sql = SqlStore::open(&store.location()).await.unwrap();
    sql.put_ca_chain(&ca().await.chain, unix_now())
        .await
        .unwrap();
    let key = keys::store::generate(
        &hsm(),
        &sql,
        issuer,
        Algorithm::Es256,
        KeyPurpose::Jwt,
        30,
        "test",
    )
    .await
    .unwrap();
    let url = store.url.clone();
    Some((Some(store), url, key.kid))
}

/// The `event` records of `kid` in a daemon's audit log, by the lifecycle.
fn lifecycle_records(daemon: &TestDaemon, event: &str, kid: &str) -> usize {
    audit_records(&daemon.dir.path().join("audit"))
        .iter()
        .filter(|r| r["event"] == event && r["kid"] == kid)
        .filter(|r| r["caller"]["name"] == "lifecycle")
        .count()
}

#[tokio::test]
async fn on_postgres_two_replicas_share_state_and_one_applies_each_transition() {
    two_replicas("rep-pg", Engine::Postgres).await;
}

#[tokio::test]
async fn on_sqlite_two_replicas_share_state_and_one_applies_each_transition() {
    two_replicas("rep-sqlite", Engine::Sqlite).await;
}

async fn two_replicas(issuer: &str, engine: Engine) {
    let Some((_store, store, first)) = shared_store(engine, issuer).await else {
        return;
    };
    // A starts first: its first tick takes the lifecycle lease.
    let a = TestDaemon::start(&replica(issuer, &store, "replica-a")).await;
    let b = TestDaemon::start(&replica(issuer, &store, "replica-b")).await;
    assert_ne!(a.service.lease_holder(), b.service.lease_holder());

    // A single-use token consumed at A is replayed at B. The issuer's tokens live 1 s
    // (plus the 5 s leeway), for the lifecycle's sake: on a loaded machine the three
    // requests can outlast that, so a token that expired on the way (and only that) is
    // replaced by a fresh one, a few times at most.
    let mut tries = 0;
    let again = loop {
        let token = mint(&a, issuer).await["token"].clone();
        let consume = json!({"token": token, "audience": "api", "single_use": true});
        let first = a.post("/v1/verify", &consume).await;
        let again = b.post("/v1/verify", &consume).await;
        let expired = [&first, &again].iter().any(|r| r.code() == "token_expired");
        if expired && tries < 3 {
            tries += 1;
            continue;
        }
        assert_eq!(first.status, 200, "{:?}", first.json);
        break again;
    };
    assert_eq!((again.status, again.code()), (422, "replayed"));

    // What a single use costs on this engine (printed for docs/scaling.md, never
    // asserted): the round trip of POST /v1/verify with single_use over the socket.
    let mut took = Vec::new();
    for _ in 0..100 {
        let token = mint(&a, issuer).await["token"].clone();
        let started = Instant::now();
        let reply = a
            .post(
                "/v1/verify",
                &json!({"token": token, "audience": "api", "single_use": true}),
            )
            .await;
        took.push(started.elapsed());
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    took.sort();

    // A token revoked at B is refused by A within a tick.
    let revoked = mint(&b, issuer).await;
    let revoke = json!({"jti": revoked["jti"], "exp": revoked["expires_at"]});
    assert_eq!(b.post("/v1/revocations", &revoke).await.status, 200);
    let revoked_at = Instant::now();
    let check = json!({"token": revoked["token"], "audience": "api"});
    assert!(
        eventually(5, async || a.post("/v1/verify", &check).await.code()
            == "token_revoked")
        .await,
        "A never learned of B's revocation"
    );
    let propagated = revoked_at.elapsed();

    // A rotation made at B is published by A within a tick, and activated once, by
    // the lease holder.
    let rotated = b
        .post(&format!("/v1/issuers/{issuer}/rotate"), &json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json);
    let next = rotated.json["kid"].as_str().unwrap().to_string();
    let rotated_at = Instant::now();
    assert!(
        eventually(5, async || kids(&a.get("/.well-known/jwks.json").await)
            .contains(&next))
        .await,
        "A never published B's pending key"
    );
    println!(
        "scaling ({engine:?}, debug build, 1 s ticks): single-use verify p50 {:?} p99 {:?}; \
         a revocation at B refused by A after {propagated:?}; B's pending key published by A after {:?}",
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        rotated_at.elapsed()
    );
    for replica in [&a, &b] {
        assert!(
            eventually(10, async || mint(replica, issuer).await["kid"]
                == next.as_str())
            .await,
            "the rotated key never signed"
        );
    }
    // Exactly once between them: normally by A, by B only if A's ticks fell so far
    // behind (a loaded machine) that its lease expired.
    let both = |event: &str, kid: &str| {
        lifecycle_records(&a, event, kid) + lifecycle_records(&b, event, kid)
    };
    assert_eq!(both("key_activate", &next), 1);
    assert_eq!(both("key_retire", &first), 1);

    // A stops and gives the lease up: B applies the next rotation's transitions.
    a.shutdown().await;
    let rotated = b
        .post(&format!("/v1/issuers/{issuer}/rotate"), &json!({}))
        .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json);
    let third = rotated.json["kid"].as_str().unwrap().to_string();
    assert!(
        eventually(10, async || mint(&b, issuer).await["kid"] == third.as_str()).await,
        "B never took the lifecycle over"
    );
    assert_eq!(lifecycle_records(&b, "key_activate", &third), 1);
    for record in audit_records(&b.dir.path().join("audit")) {
        assert_eq!(record["replica"], "replica-b", "{record}");
    }
    b.shutdown().await;
}

/// On PostgreSQL a change is pushed (LISTEN/NOTIFY): with ticks a minute apart, a
/// revocation at B reaches A long before A's next tick could have read it.
#[tokio::test]
async fn on_postgres_a_revocation_is_pushed_to_the_other_replica_before_any_tick() {
    let issuer = "rep-push";
    let Some((_store, store, _)) = shared_store(Engine::Postgres, issuer).await else {
        return;
    };
    let slow =
        |name: &str| replica(issuer, &store, name).replace("tick_seconds = 1", "tick_seconds = 60");
    let a = TestDaemon::start(&slow("push-a")).await;
    let b = TestDaemon::start(&slow("push-b")).await;
    let revoked = mint(&b, issuer).await;
    let check = json!({"token": revoked["token"], "audience": "api"});
    assert_eq!(a.post("/v1/verify", &check).await.status, 200);
    let revoke = json!({"jti": revoked["jti"], "exp": revoked["expires_at"]});
    assert_eq!(b.post("/v1/revocations", &revoke).await.status, 200);
    let started = Instant::now();
    assert!(
        eventually(10, async || a.post("/v1/verify", &check).await.code()
            == "token_revoked")
        .await,
        "the revocation was not pushed to A"
    );
    println!(
        "scaling (Postgres, push): a revocation at B refused by A after {:?}",
        started.elapsed()
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// A replica's config for a `signetd serve` process on `token`: its own socket and
/// audit directory, the shared store, the issuer, 1 s ticks.
fn served_replica(
    token: &TestToken,
    store: &TestStore,
    issuer: &str,
    name: &str,
) -> (PathBuf, PathBuf) {
    let socket = token.path(&format!("{name}.sock"));
    let config = token.path(&format!("{name}.toml"));
    let text = format!(
        "{}[listen]\nsocket = {:?}\nhttp = \"off\"\n[audit]\ndir = {:?}\n{}",
        token.pkcs11_toml(),
        socket.display().to_string(),
        token.path(&format!("audit-{name}")).display().to_string(),
        replica(issuer, &store.url, name),
    );
    std::fs::write(&config, text).unwrap();
    (config, socket)
}

async fn post(socket: &Path, path: &str, body: &Value) -> crate::common::Reply {
    request_unix(socket, Method::POST, path, Some(body)).await
}

/// Two `signetd serve` processes on one token directory (standing in for a network
/// HSM) and one PostgreSQL database. A rotation is prepared at A and A is killed
/// (SIGKILL) while B serves a steady load: B never fails a mint, takes the lifecycle
/// lease over once A's expires, and activates the pending key. Both restarted, the
/// state is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_replica_killed_mid_rotation_leaves_the_other_serving_and_finishing_it() {
    let token = TestToken::create("signetd-replicas");
    let issuer = "rep-kill";
    let Some(store) = TestStore::new(Engine::Postgres, &token.path("unused.db")).await else {
        return;
    };
    let (config_a, socket_a) = served_replica(&token, &store, issuer, "kill-a");
    let (config_b, socket_b) = served_replica(&token, &store, issuer, "kill-b");
    let first = token.init_ca_and_key(&config_a, issuer);
    let mut a = token.serve(&config_a, &socket_a);
    let _b = token.serve(&config_b, &socket_b);

    // A steady load at B for the whole test; every mint must succeed. The kids it
    // received are shared so the test can wait for the load itself to see the new key.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, socket, kids) = (stop.clone(), socket_b.clone(), served.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = post(
                    &socket,
                    "/v1/tokens",
                    &json!({"issuer": issuer, "aud": "api"}),
                )
                .await;
                assert_eq!(reply.status, 200, "B failed a mint: {:?}", reply.json);
                let kid = reply.json["kid"].as_str().unwrap().to_string();
                kids.lock().unwrap().push(kid);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let rotated = post(
        &socket_a,
        &format!("/v1/issuers/{issuer}/rotate"),
        &json!({}),
    )
    .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json);
    let next = rotated.json["kid"].as_str().unwrap().to_string();
    a.crash();

    let jwks_at_b =
        async || request_unix(&socket_b, Method::GET, "/.well-known/jwks.json", None).await;
    assert!(
        eventually(10, async || kids(&jwks_at_b().await).contains(&next)).await,
        "B never published the key A prepared"
    );
    // A's lease lasts three 1 s ticks; then B applies the transition A never did.
    let signs_with_next = async |socket: &Path| {
        post(
            socket,
            "/v1/tokens",
            &json!({"issuer": issuer, "aud": "api"}),
        )
        .await
        .json["kid"]
            == next.as_str()
    };
    assert!(
        eventually(20, async || signs_with_next(&socket_b).await).await,
        "B never activated the pending key after A died"
    );
    // The load saw the switch too (it may have been asleep when the probe above did).
    let load_saw = |kid: &str| served.lock().unwrap().iter().any(|k| k == kid);
    assert!(
        eventually(10, async || load_saw(&next)).await,
        "the load at B never received a token under the new key"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        load_saw(&first),
        "the load never minted under the first key"
    );

    // Restarted, A agrees with B on every key's state.
    drop(_b);
    let _a = token.serve(&config_a, &socket_a);
    let _b = token.serve(&config_b, &socket_b);
    assert!(signs_with_next(&socket_a).await && signs_with_next(&socket_b).await);
    let states = async |socket: &Path| {
        let keys = request_unix(socket, Method::GET, "/v1/keys", None).await;
        let mut states: Vec<(String, String)> = keys.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kid"].as_str().unwrap().to_string(),
                    k["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        states.sort();
        states
    };
    let at_a = states(&socket_a).await;
    assert_eq!(at_a, states(&socket_b).await);
    assert!(
        at_a.contains(&(first.clone(), "retired".to_string())),
        "{at_a:?}"
    );
    assert!(
        at_a.contains(&(next.clone(), "active".to_string())),
        "{at_a:?}"
    );
}

/// Two daemons started on one token and one store without `[replica] name`s (a second
/// instance by mistake) do not run side by side unnoticed: the one that finds the
/// lifecycle lease taken says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_unnamed_daemon_on_one_store_is_reported() {
    let token = TestToken::create("signetd-unnamed");
    let issuer = "twice";
    let Some(store) = TestStore::new(Engine::Sqlite, &token.path("shared.db")).await else {
        return;
    };
    let unnamed = |name: &str| {
        let (config, socket) = served_replica(&token, &store, issuer, name);
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace(&format!("[replica]\nname = \"{name}\"\n"), "");
        assert!(!text.contains("[replica]"), "{text}");
        std::fs::write(&config, text).unwrap();
        (config, socket)
    };
    let (config_a, socket_a) = unnamed("first");
    let (config_b, socket_b) = unnamed("second");
    token.init_ca_and_key(&config_a, issuer);
    let _a = token.serve(&config_a, &socket_a);
    let _b = token.serve(&config_b, &socket_b);
    let log = token.path("serve.log");
    assert!(
        eventually(10, async || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("this daemon has no [replica] name"))
        .await,
        "no word of the second daemon"
    );
}
