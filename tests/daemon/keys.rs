//! Keys in the token: generated non-extractable, seen so by an independent tool,
//! surviving restarts, and incomplete ones reported rather than used.

use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::keys::{self, KeyStoreError};
use signetd::store::KeyMetadata;

use crate::common::{TestToken, generate_key, hsm, issuer_toml, store, token};

/// `pkcs11-tool` (OpenSC), not our code, reads the private keys' attributes.
#[tokio::test]
async fn pkcs11_tool_sees_every_private_key_sensitive_never_extractable_and_local() {
    let es = generate_key("keys-p11-es", Algorithm::Es256).await;
    let ed = generate_key("keys-p11-ed", Algorithm::EdDsa).await;
    let t = token();
    let listing = t.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    let blocks: Vec<&str> = listing.split("Private Key Object").skip(1).collect();
    let ours: Vec<&&str> = blocks
        .iter()
        .filter(|b| b.contains("label:      signetd/"))
        .collect();
    for kid in [&es, &ed] {
        assert!(
            ours.iter().any(|b| b.contains(kid.as_str())),
            "pkcs11-tool does not list {kid}:\n{listing}"
        );
    }
    for block in &ours {
        let access = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("Access:"))
            .unwrap_or_else(|| panic!("no Access line in {block}"));
        let flags: Vec<&str> = access.split(',').map(str::trim).collect();
        for want in [
            "sensitive",
            "always sensitive",
            "never extractable",
            "local",
        ] {
            assert!(flags.contains(&want), "{want} missing from {access:?}");
        }
        assert!(!flags.contains(&"extractable"), "extractable key: {block}");
        let usage = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("Usage:"))
            .map(str::trim);
        assert_eq!(
            usage,
            Some("sign"),
            "a signing key is good for nothing else: {block}"
        );
    }
}

#[tokio::test]
async fn generating_twice_for_an_issuer_is_refused_and_keys_are_not_duplicated() {
    let kid = generate_key("keys-twice", Algorithm::Es256).await;
    let store = store().await;
    match keys::store::generate(
        &hsm(),
        &*store,
        "keys-twice",
        Algorithm::Es256,
        keys::KeyPurpose::Jwt,
        30,
        "test",
    )
    .await
    {
        Err(KeyStoreError::ActiveKeyExists { kid: active, .. }) => assert_eq!(active, kid),
        other => panic!("expected ActiveKeyExists, got {other:?}"),
    }
    let inventory = keys::store::inventory(&hsm(), &*store).await.unwrap();
    assert_eq!(
        inventory
            .keys
            .iter()
            .filter(|k| k.issuer == "keys-twice")
            .count(),
        1
    );
}

/// The state store and the token disagree: a key the store has whose private key was
/// deleted from the token, and a key pair in the token the store does not know (here:
/// the store restored from a backup older than the key). Both are reported at start, in
/// the daemon's log, its audit log, `/readyz` and `keys list`; neither is used,
/// published or repaired.
#[tokio::test]
async fn keys_the_store_and_the_token_disagree_about_are_reported_never_repaired() {
    use crate::common::request_unix;
    use hyper::Method;
    let t = TestToken::create("keys-mismatch");
    let both =
        issuer_toml("keys-ok", Algorithm::Es256) + &issuer_toml("keys-ghost", Algorithm::Es256);
    let (config, socket) = t.write_config(&both);
    let c = config.to_str().unwrap();
    let ok = t.init_ca_and_key(&config, "keys-ok");
    let (done, out, err) =
        t.signetd(&["keys", "generate", "--issuer", "keys-ghost", "--config", c]);
    assert!(done, "{err}");
    let ghost = out.split_whitespace().nth(5).unwrap().to_string();
    // A backup of the store (the SQLite file with its write-ahead log), taken before
    // keys-ok's next key is made and restored after.
    let files = ["signetd.db", "signetd.db-wal", "signetd.db-shm"];
    let (live, saved) = (t.path("state"), t.path("backup"));
    std::fs::create_dir(&saved).unwrap();
    for file in files.iter().filter(|f| live.join(f).exists()) {
        std::fs::copy(live.join(file), saved.join(file)).unwrap();
    }
    let (done, out, err) = t.signetd(&["keys", "rotate", "--issuer", "keys-ok", "--config", c]);
    assert!(done, "{err}");
    let stray = out.split_whitespace().nth(5).unwrap().to_string();
    for file in files {
        let _ = std::fs::remove_file(live.join(file));
        if saved.join(file).exists() {
            std::fs::copy(saved.join(file), live.join(file)).unwrap();
        }
    }
    let hex = |kid: &str| kid.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    for kind in ["privkey", "pubkey"] {
        t.pkcs11_tool(&["--delete-object", "--type", kind, "--id", &hex(&ghost)]);
    }
    let missing = format!("key {ghost} of issuer keys-ghost (active) is missing");
    let unknown =
        format!("key {stray} (signetd/keys-ok/{stray}) is in the token but not in the state store");

    // The CLI reports both.
    let (listed, out, err) = t.signetd(&["keys", "list", "--config", c]);
    assert!(listed, "{err}");
    assert!(
        out.contains(&format!("problem: {missing}"))
            && out.contains(&format!("problem: {unknown}")),
        "{out}"
    );

    // A daemon serving keys-ok alone: ready (the unknown key pair signs nothing), and
    // /readyz warns of it.
    t.write_config(&issuer_toml("keys-ok", Algorithm::Es256));
    let mut daemon = t.serve(&config, &socket);
    let readyz = request_unix(&socket, Method::GET, "/readyz", None).await;
    assert_eq!(readyz.status, 200);
    let warnings = readyz.json["warnings"].to_string();
    assert!(
        warnings.contains(&unknown) && !warnings.contains(&ghost),
        "{warnings}"
    );
    let jwks = request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
    let kids = jwks.json["keys"].to_string();
    assert!(
        kids.contains(&ok) && !kids.contains(&ghost) && !kids.contains(&stray),
        "{kids}"
    );
    daemon.terminate();
    // Reported at start whatever the config serves: log and audit log.
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(log.contains(&missing) && log.contains(&unknown), "{log}");
    let records = crate::common::audit_records(&t.audit_dir());
    let event = |kid: &str| {
        records
            .iter()
            .find(|r| r["kid"] == kid && r["event"].as_str().is_some_and(|e| e.starts_with("key_")))
            .map(|r| r["event"].as_str().unwrap().to_string())
    };
    assert_eq!(event(&ghost).as_deref(), Some("key_missing"), "{records:?}");
    assert_eq!(event(&stray).as_deref(), Some("key_unknown"), "{records:?}");

    // Serving keys-ghost too: its active key is lost, so not ready, and /readyz says why.
    t.write_config(&both);
    let daemon = crate::publishing::start_unready(&t, &config, &socket);
    let answered = crate::common::eventually(20, async || {
        crate::common::try_request(
            &signetd::client::Endpoint::Unix(socket.clone()),
            Method::GET,
            "/readyz",
            &[],
            b"",
        )
        .await
        .is_ok_and(|r| r.status == 503)
    })
    .await;
    assert!(answered, "/readyz never answered 503");
    let readyz = request_unix(&socket, Method::GET, "/readyz", None).await;
    let problems = readyz.json["error"]["problems"].to_string();
    assert!(problems.contains(&missing), "{problems}");
    let minted = request_unix(
        &socket,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"issuer": "keys-ghost", "aud": "api"})),
    )
    .await;
    assert_eq!(minted.code(), "no_active_key");
    drop(daemon);

    // Nothing was repaired: the unknown key pair is still in the token, the lost key's
    // row in the store.
    let objects = t.pkcs11_tool(&["--list-objects", "--type", "privkey"]);
    assert!(
        objects.contains(&format!("signetd/keys-ok/{stray}")),
        "{objects}"
    );
    let (_, out, _) = t.signetd(&["keys", "list", "--config", c, "--format", "problems"]);
    assert!(out.contains(&ghost) && out.contains(&stray), "{out}");
    // The operator's repair: `keys finish` records the key pair (pending: keys-ok has an
    // active key).
    let (done, out, err) = t.signetd(&["keys", "finish", "--kid", &stray, "--config", c]);
    assert!(done && out.contains("is complete (pending)"), "{out}{err}");
}

#[test]
fn keys_cli_generates_once_and_lists_with_attributes() {
    let t = TestToken::create("keys-cli");
    let (config, _) = t.write_config(&issuer_toml("keys-cli", Algorithm::EdDsa));
    let config = config.display().to_string();
    let run = |args: &[&str]| t.signetd(&[args, &["--config", &config]].concat());
    let (ok, _, stderr) = run(&["keys", "generate", "--issuer", "keys-cli"]);
    assert!(
        !ok && stderr.contains("no attestation CA"),
        "keys need the CA first: {stderr}"
    );
    assert!(run(&["attest", "init-ca", "--self-signed"]).0);
    let (ok, stdout, stderr) = run(&["keys", "generate", "--issuer", "keys-cli"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("generated and attested EdDSA key keys-cli-"),
        "{stdout}"
    );
    let (ok, _, stderr) = run(&["keys", "generate", "--issuer", "keys-cli"]);
    assert!(!ok && stderr.contains("already has active key"), "{stderr}");
    let (ok, stdout, _) = run(&["keys", "generate", "--issuer", "keys-cli", "--if-missing"]);
    assert!(ok && stdout.contains("nothing was done"), "{stdout}");
    let (ok, _, stderr) = run(&["keys", "generate", "--issuer", "not-configured"]);
    assert!(!ok && stderr.contains("unknown issuer"), "{stderr}");

    let (ok, stdout, stderr) = run(&["keys", "list", "--issuer", "keys-cli", "--json"]);
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["token"]["label"], "keys-cli");
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["token_attributes"]["never_extractable"], true);
    assert!(!stderr.contains(&t.pin()), "the PIN never reaches output");
}

/// Data objects are named by application, label and exact value: destroying one record
/// leaves another under the same label, and exact copies go one per call.
#[tokio::test]
async fn destroying_a_data_object_by_value_leaves_its_same_label_neighbour() {
    let hsm = hsm();
    const APP: &str = "signetd-objects-test";
    const LABEL: &str = "objects-test/same-label";
    let stored = |values: &[&[u8]]| {
        let hsm = hsm.clone();
        let mut want: Vec<Vec<u8>> = values.iter().map(|v| v.to_vec()).collect();
        want.sort();
        async move {
            let mut have: Vec<Vec<u8>> = hsm
                .data_objects(APP)
                .await
                .unwrap()
                .into_iter()
                .filter(|o| o.label == LABEL)
                .map(|o| o.value)
                .collect();
            have.sort();
            assert_eq!(have, want);
        }
    };
    for value in [&b"old"[..], b"new", b"new"] {
        hsm.create_data(APP, LABEL.into(), value.to_vec())
            .await
            .unwrap();
    }
    stored(&[b"old", b"new", b"new"]).await;

    assert!(hsm.destroy_data(APP, LABEL, b"old").await.unwrap());
    stored(&[b"new", b"new"]).await;
    assert!(!hsm.destroy_data(APP, LABEL, b"old").await.unwrap(), "gone");
    // Every part of the name must match.
    assert!(!hsm.destroy_data(APP, LABEL, b"ne").await.unwrap());
    assert!(
        !hsm.destroy_data(APP, "objects-test/other", b"new")
            .await
            .unwrap()
    );
    assert!(!hsm.destroy_data("signetd", LABEL, b"new").await.unwrap());
    stored(&[b"new", b"new"]).await;

    assert!(hsm.destroy_data(APP, LABEL, b"new").await.unwrap());
    stored(&[b"new"]).await;
    assert!(hsm.destroy_data(APP, LABEL, b"new").await.unwrap());
    stored(&[]).await;
}

/// Certificate objects are named by `CKA_ID`, label and exact value.
#[tokio::test]
async fn destroying_a_certificate_matches_its_id_label_and_value() {
    let hsm = hsm();
    const PREFIX: &str = "objects-test-cert/";
    let label = format!("{PREFIX}one");
    // The token stores the bytes it is given; these need not be real certificates.
    let subject = vec![0x30, 0x00];
    for (id, value) in [
        (&b"cert-a"[..], &b"first"[..]),
        (b"cert-a", b"second"),
        (b"cert-b", b"first"),
    ] {
        hsm.create_certificate(id.to_vec(), label.clone(), subject.clone(), value.to_vec())
            .await
            .unwrap();
    }
    let listed = || async {
        let mut found: Vec<(Vec<u8>, Vec<u8>)> = hsm
            .certificates(PREFIX)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.value))
            .collect();
        found.sort();
        found
    };
    assert!(
        !hsm.destroy_certificate(b"cert-c", &label, b"first")
            .await
            .unwrap()
    );
    assert!(
        !hsm.destroy_certificate(b"cert-a", "objects-test-cert/two", b"first")
            .await
            .unwrap()
    );
    assert!(
        hsm.destroy_certificate(b"cert-a", &label, b"first")
            .await
            .unwrap()
    );
    assert_eq!(
        listed().await,
        vec![
            (b"cert-a".to_vec(), b"second".to_vec()),
            (b"cert-b".to_vec(), b"first".to_vec()),
        ]
    );
    assert!(
        !hsm.destroy_certificate(b"cert-a", &label, b"first")
            .await
            .unwrap()
    );
    assert!(
        hsm.destroy_certificate(b"cert-b", &label, b"first")
            .await
            .unwrap()
    );
    assert!(
        hsm.destroy_certificate(b"cert-a", &label, b"second")
            .await
            .unwrap()
    );
    assert!(listed().await.is_empty());
}

/// A state change is a row changed in the state store, with an entry in the key's
/// history naming who made it; the token is not written.
#[tokio::test]
async fn a_state_change_is_recorded_in_the_store_with_its_history() {
    let issuer = "keys-history";
    let first =
        crate::common::generate_key_for(issuer, Algorithm::Es256, keys::KeyPurpose::Jwt).await;
    let kid = first.kid.clone();
    let store = store().await;
    let objects_before = hsm().data_objects("signetd").await.unwrap().len();
    let retired = keys::store::transition(&*store, &kid, keys::KeyState::Retired, "test-a")
        .await
        .unwrap();
    assert_eq!(retired.state, keys::KeyState::Retired);
    // From a state it is no longer in, a change is refused.
    let again = keys::store::transition(&*store, &kid, keys::KeyState::Retired, "test-b").await;
    assert!(matches!(again, Err(KeyStoreError::Key(_))), "{again:?}");
    keys::store::transition(&*store, &kid, keys::KeyState::Archived, "test-c")
        .await
        .unwrap();
    let history: Vec<(Option<keys::KeyState>, keys::KeyState, String)> = store
        .history(&kid)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.from, c.to, c.actor))
        .collect();
    use keys::KeyState::*;
    assert_eq!(
        history,
        vec![
            (None, Active, "test".to_string()),
            (Some(Active), Retired, "test-a".to_string()),
            (Some(Retired), Archived, "test-c".to_string()),
        ]
    );
    let inventory = keys::store::inventory(&hsm(), &*store).await.unwrap();
    let key = inventory.keys.iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(key.state, Archived);
    assert_eq!(
        hsm().data_objects("signetd").await.unwrap().len(),
        objects_before
    );
}

/// What OpenSC's `pkcs11-tool -O` (not our code) lists: the kind of each object, one
/// per unindented line ("Private Key Object; EC", "Data object 1234", ...).
fn object_kinds(t: &TestToken) -> Vec<String> {
    t.pkcs11_tool(&["--list-objects"])
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']) && l.to_lowercase().contains("object"))
        .map(|l| l.to_lowercase())
        .collect()
}

/// No data object and no certificate among `kinds`. (Some modules list objects of their
/// own too, such as kryoptic's mechanism objects: what signetd writes is what counts.)
fn no_data_or_certificates(kinds: &[String]) -> bool {
    !kinds
        .iter()
        .any(|k| k.starts_with("data object") || k.starts_with("certificate object"))
}

/// The token holds private keys (and their public halves) and nothing else: after a CA,
/// keys, a start with its audit key, a mint, a rotation and a retirement, OpenSC sees
/// no data object and no certificate.
#[test]
fn after_a_normal_run_the_token_holds_only_key_objects() {
    let t = TestToken::create("keys-only");
    let (config, socket) = t.write_config(&issuer_toml("keys-only", Algorithm::Es256));
    let c = config.to_str().unwrap();
    let first = t.init_ca_and_key(&config, "keys-only");
    let daemon = t.serve(&config, &socket);
    let s = socket.display().to_string();
    let (minted, _, err) = t.signetd(&[
        "token",
        "mint",
        "--issuer",
        "keys-only",
        "--aud",
        "api",
        "--socket",
        &s,
    ]);
    assert!(minted, "{err}");
    let (rotated, _, err) = t.signetd(&["keys", "rotate", "--issuer", "keys-only", "--config", c]);
    assert!(rotated, "{err}");
    let (retired, _, err) = t.signetd(&["keys", "retire", "--kid", &first, "--config", c]);
    assert!(retired, "{err}");
    drop(daemon);
    let kinds = object_kinds(&t);
    assert!(no_data_or_certificates(&kinds), "{kinds:?}");
    // The CA key, two issuer keys and the audit key, each a private and a public object.
    let count = |what: &str| kinds.iter().filter(|k| k.starts_with(what)).count();
    assert_eq!(
        (count("private key object"), count("public key object")),
        (4, 4),
        "{kinds:?}"
    );
}

/// Item 5 of issue 12: a token whose keys' records and certificates are objects, as
/// versions before the state store wrote them, and an empty store. The daemon imports
/// them once, in one transaction, says so, and then destroys those objects; the keys are
/// unchanged and tokens minted before verify. On each engine.
mod import {
    #[tokio::test]
    async fn on_sqlite() {
        super::key_records_and_certificates_in_the_token_are_imported_once_and_removed_from_it(
            crate::common::Engine::Sqlite,
        )
        .await;
    }

    #[tokio::test]
    async fn on_postgres() {
        super::key_records_and_certificates_in_the_token_are_imported_once_and_removed_from_it(
            crate::common::Engine::Postgres,
        )
        .await;
    }
}

async fn key_records_and_certificates_in_the_token_are_imported_once_and_removed_from_it(
    engine: crate::common::Engine,
) {
    use base64::Engine;
    use hyper::Method;
    use signetd::store::SqlStore;
    let t = TestToken::create("keys-import");
    // The store the keys are made with, and the empty one the earlier version's token
    // meets.
    let stores = (
        crate::common::TestStore::new(engine, &t.path("state/first.db")).await,
        crate::common::TestStore::new(engine, &t.path("state/second.db")).await,
    );
    let (Some(first), Some(second)) = stores else {
        return;
    };
    let tables = issuer_toml("keys-import", Algorithm::Es256);
    let (config, socket) = t.write_config(&(tables.clone() + &first.toml()));
    let c = config.to_str().unwrap();
    t.init_ca_and_key(&config, "keys-import");
    let s = socket.display().to_string();
    // A first start makes the audit key; a token minted then must verify after the import.
    let daemon = t.serve(&config, &socket);
    let minted = t.signetd_ok(&[
        "token",
        "mint",
        "--issuer",
        "keys-import",
        "--aud",
        "api",
        "--socket",
        &s,
    ]);
    let jwks_before =
        crate::common::request_unix(&socket, Method::GET, "/.well-known/jwks.json", None)
            .await
            .json;
    drop(daemon);
    let listed = |t: &TestToken| {
        let out = t.signetd_ok(&["keys", "list", "--json", "--config", c]);
        serde_json::from_str::<Value>(&out).unwrap()["keys"].clone()
    };
    let keys_before = listed(&t);
    assert_eq!(keys_before.as_array().unwrap().len(), 2, "{keys_before}");

    // The same keys as an earlier version kept them: the store's rows and certificates
    // written as token objects, and an empty store in the config.
    let store = SqlStore::open(&first.location()).await.unwrap();
    let (rows, chain) = (store.keys().await.unwrap(), store.ca_chain().await.unwrap());
    drop(store);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut data = Vec::new();
    let mut certificates = Vec::new();
    for row in &rows {
        let record = json!({
            "v": 1, "kid": row.kid, "issuer": row.issuer, "alg": row.algorithm,
            "state": row.state, "created_at": row.created_at, "revision": 0,
            "changed_at": row.updated_at, "purpose": row.purpose,
        });
        data.push(json!({"label": format!("signetd-state/{}", row.kid), "value": b64(record.to_string().as_bytes())}));
        certificates.push(json!({"id": b64(&row.token_id), "label": format!("signetd-cert/{}", row.kid), "der": b64(&row.certificate)}));
    }
    for (i, der) in chain.iter().enumerate() {
        let label = if i == 0 {
            "signetd-ca/certificate".to_string()
        } else {
            format!("signetd-ca/chain/{i:02}")
        };
        certificates
            .push(json!({"id": b64(b"signetd-attestation-ca"), "label": label, "der": b64(der)}));
    }
    let old_objects = json!({"data": data, "certificates": certificates});
    write_token_objects(&t, &old_objects);
    t.write_config(&(tables + &second.toml()));
    let kinds = object_kinds(&t);
    let count = |what: &str| kinds.iter().filter(|k| k.starts_with(what)).count();
    assert_eq!(
        (count("data object"), count("certificate object")),
        (2, 3),
        "{kinds:?}"
    );

    let mut daemon = t.serve(&config, &socket);
    let jwks_after =
        crate::common::request_unix(&socket, Method::GET, "/.well-known/jwks.json", None)
            .await
            .json;
    assert_eq!(
        jwks_after, jwks_before,
        "the same keys, with the same chains"
    );
    let verified = crate::common::request_unix(
        &socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": minted, "audience": "api"})),
    )
    .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    t.signetd_ok(&[
        "token",
        "mint",
        "--issuer",
        "keys-import",
        "--aud",
        "api",
        "--socket",
        &s,
    ]);
    daemon.terminate();
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    let said = "imported 2 key(s) and 1 attestation CA certificate(s) from the token into the state store; destroyed 5 data and certificate object(s) from the token";
    assert_eq!(log.matches(said).count(), 1, "{log}");
    let records = crate::common::audit_records(&t.audit_dir());
    let imports: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "state_import")
        .collect();
    assert_eq!(imports.len(), 1, "{records:?}");
    assert!(
        imports[0]["detail"].as_str().unwrap().contains(said),
        "{:?}",
        imports[0]
    );

    // Only key objects are left; the store has the keys as they were, imported once.
    let kinds = object_kinds(&t);
    assert!(no_data_or_certificates(&kinds), "{kinds:?}");
    assert_eq!(listed(&t), keys_before);
    let store = SqlStore::open(&second.location()).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), rows);
    assert_eq!(store.ca_chain().await.unwrap(), chain);
    let history = store.history(&rows[0].kid).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].actor, "import");
    drop(store);
    // A second start has nothing to import.
    drop(t.serve(&config, &socket));
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert_eq!(log.matches("imported 2 key(s)").count(), 1, "{log}");

    // The case issue 14 found: the key revoked in the store, then an old token backup
    // from before the store put back, its state objects saying `active`. The store is
    // the truth once it has a key's row: the import leaves it, and the key stays revoked.
    let kid = &rows.iter().find(|r| r.issuer == "keys-import").unwrap().kid;
    t.signetd_ok(&["keys", "revoke", "--kid", kid, "--config", c]);
    write_token_objects(&t, &old_objects);
    let old_record = old_objects["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == format!("signetd-state/{kid}"))
        .unwrap();
    let old_state: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(old_record["value"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(old_state["state"], "active", "the old objects say active");
    // Not ready: the issuer's only key is revoked.
    let daemon = t.serve_live(&config, &socket);
    let keys = crate::common::request_unix(&socket, Method::GET, "/v1/keys", None)
        .await
        .json;
    let served = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .map(|k| k["state"].clone());
    assert_eq!(served, Some(json!("revoked")), "{keys}");
    let jwks = crate::common::request_unix(&socket, Method::GET, "/.well-known/jwks.json", None)
        .await
        .json;
    assert!(!jwks.to_string().contains(kid.as_str()), "{jwks}");
    drop(daemon);
    let store = SqlStore::open(&second.location()).await.unwrap();
    let row = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|r| &r.kid == kid);
    assert_eq!(
        row.map(|r| r.state),
        Some(signetd::keys::state::KeyState::Revoked)
    );
}

/// Writes private data and certificate objects into `t`'s token as versions before the
/// state store did, with the library's own `Hsm::create_data` and
/// `Hsm::create_certificate` (pkcs11-tool cannot make a private certificate), in
/// [`write_token_key_objects`]'s process ([`TestToken::run_helper_test`]).
fn write_token_objects(t: &TestToken, objects: &Value) {
    let spec = t.path("token-objects.json");
    let spec_value = json!({"pkcs11": t.pkcs11_toml(), "objects": objects});
    std::fs::write(&spec, spec_value.to_string()).unwrap();
    t.run_helper_test("keys::write_token_key_objects", (WRITE_OBJECTS_ENV, &spec));
}

/// Where [`write_token_key_objects`] finds what to write.
const WRITE_OBJECTS_ENV: &str = "SIGNETD_TEST_WRITE_TOKEN_OBJECTS";

/// A helper process of [`write_token_objects`], not a test of its own.
#[tokio::test]
#[ignore = "a helper: keys::import::on_sqlite and on_postgres run it in a process of its own"]
async fn write_token_key_objects() {
    use base64::Engine;
    let Some(spec) = std::env::var_os(WRITE_OBJECTS_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_slice(&std::fs::read(spec).unwrap()).unwrap();
    let unb64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let config = signetd::Config::parse(spec["pkcs11"].as_str().unwrap()).unwrap();
    let hsm = signetd::hsm::Hsm::open(config.hsm_settings().unwrap()).unwrap();
    for object in spec["objects"]["data"].as_array().unwrap() {
        let label = object["label"].as_str().unwrap().to_string();
        hsm.create_data("signetd", label, unb64(&object["value"]))
            .await
            .unwrap();
    }
    for cert in spec["objects"]["certificates"].as_array().unwrap() {
        let der = unb64(&cert["der"]);
        let parsed = signetd::attest::verify::parse(&der).unwrap();
        let subject = der::Encode::to_der(&parsed.tbs_certificate.subject).unwrap();
        let label = cert["label"].as_str().unwrap().to_string();
        hsm.create_certificate(unb64(&cert["id"]), label, subject, der)
            .await
            .unwrap();
    }
}
