//! Keys in the token: generated non-extractable, seen so by an independent tool,
//! surviving restarts, and incomplete ones reported rather than used.

use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::keys::{self, KeyStoreError};

use crate::common::{TestDaemon, TestToken, generate_key, hsm, issuer_toml, token};

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
    match keys::store::generate(
        &hsm(),
        "keys-twice",
        Algorithm::Es256,
        keys::KeyPurpose::Jwt,
        30,
    )
    .await
    {
        Err(KeyStoreError::ActiveKeyExists { kid: active, .. }) => assert_eq!(active, kid),
        other => panic!("expected ActiveKeyExists, got {other:?}"),
    }
    let inventory = keys::store::inventory(&hsm()).await.unwrap();
    assert_eq!(
        inventory
            .keys
            .iter()
            .filter(|k| k.issuer == "keys-twice")
            .count(),
        1
    );
}

#[tokio::test]
async fn incomplete_keys_are_reported_and_never_published() {
    let hsm = hsm();
    // A key pair whose state record was never written (an interrupted generation).
    let stray = hsm
        .generate_key_pair(
            Algorithm::Es256,
            b"keys-stray-1".to_vec(),
            "signetd/keys-stray/keys-stray-1".into(),
        )
        .await
        .unwrap();
    assert!(stray.attributes.is_hardware_bound());
    // A state record whose key is gone.
    let record = json!({"v":1,"kid":"keys-ghost-1","issuer":"keys-ghost","alg":"ES256","state":"active","created_at":1});
    hsm.create_data(
        "signetd",
        "signetd-state/keys-ghost-1".into(),
        serde_json::to_vec(&record).unwrap(),
    )
    .await
    .unwrap();

    let inventory = keys::store::inventory(&hsm).await.unwrap();
    let problems = inventory.problems.join("\n");
    assert!(
        problems.contains("keys-stray-1") && problems.contains("no state record"),
        "{problems}"
    );
    assert!(
        problems.contains("keys-ghost-1") && problems.contains("missing"),
        "{problems}"
    );
    assert!(inventory.keys.iter().all(|k| k.kid != "keys-stray-1"));

    let config = format!(
        "{}{}",
        issuer_toml("keys-stray", Algorithm::Es256),
        issuer_toml("keys-ghost", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    let jwks = daemon.get("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        !kids.contains(&"keys-stray-1") && !kids.contains(&"keys-ghost-1"),
        "{kids:?}"
    );
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"keys-stray","aud":"api"}))
        .await;
    assert_eq!(reply.code(), "no_active_key");
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
    assert!(ok && stdout.contains("nothing generated"), "{stdout}");
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

/// A state change destroys exactly the record it replaces: a superseded record that an
/// interrupted update left under the same label stays, and is still reported.
#[tokio::test]
async fn a_state_change_destroys_only_the_record_it_replaces() {
    let issuer = "keys-replace";
    let first =
        crate::common::generate_key_for(issuer, Algorithm::Es256, keys::KeyPurpose::Jwt).await;
    let kid = first.kid.clone();
    let hsm = hsm();
    let retired = keys::store::transition(&hsm, &kid, keys::KeyState::Retired)
        .await
        .unwrap();
    assert_ne!(retired.record, first.record);
    // As if the process had died between writing revision 1 and destroying revision 0.
    hsm.create_data(
        "signetd",
        first.record.label.clone(),
        first.record.value.clone(),
    )
    .await
    .unwrap();
    let revisions = || async {
        let mut found: Vec<u64> = hsm
            .data_objects("signetd")
            .await
            .unwrap()
            .into_iter()
            .filter(|o| o.label == first.record.label)
            .map(|o| {
                serde_json::from_slice::<keys::KeyRecord>(&o.value)
                    .unwrap()
                    .revision
            })
            .collect();
        found.sort();
        found
    };
    assert_eq!(revisions().await, [0, 1]);

    let archived = keys::store::transition(&hsm, &kid, keys::KeyState::Archived)
        .await
        .unwrap();
    assert_eq!(
        revisions().await,
        [0, 2],
        "revision 1 replaced, revision 0 left"
    );
    let inventory = keys::store::inventory(&hsm).await.unwrap();
    let key = inventory.keys.iter().find(|k| k.kid == kid).unwrap();
    assert_eq!(key.state, keys::KeyState::Archived);
    assert_eq!(key.record, archived.record);
    assert!(
        inventory
            .problems
            .iter()
            .any(|p| p.contains(&kid) && p.contains("superseded state record (revision 0")),
        "{:?}",
        inventory.problems
    );
}
