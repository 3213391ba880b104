//! docs/operations.md's backup and restore, followed as written: the state store copied
//! online with `signetd store backup`, the token's files copied with the daemon
//! stopped, then changes, then both restored. The restored (older) state must not bring
//! a revoked key or a revoked token back: the daemon moves them forward from its audit
//! log, says so, and the operator's next step (a new key) works.

use std::path::Path;
use std::process::Command;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{
    Reply, TestToken, audit_records, eventually, issuer_toml, kids, lifecycle_toml, request_unix,
};

/// `cp -a FROM TO`: what the procedure runs for a SoftHSM2 or kryoptic token's files.
fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Each key's state as `GET /v1/keys` shows it.
async fn key_state(socket: &Path, kid: &str) -> Option<String> {
    let keys = request_unix(socket, Method::GET, "/v1/keys", None).await;
    keys.json["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kid"] == kid)
        .map(|k| k["state"].as_str().unwrap().to_string())
}

async fn revocations(socket: &Path) -> Reply {
    request_unix(socket, Method::GET, "/v1/revocations", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_token_and_store_do_not_serve_a_revoked_key_or_token_again() {
    let token = TestToken::create("signetd-backup");
    let issuer = "bk";
    let (config, socket) = token.write_config(&format!(
        "{}{}",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml()
    ));
    let c = config.to_str().unwrap();
    let first = token.init_ca_and_key(&config, issuer);
    let mut daemon = token.serve(&config, &socket);
    let mint = async || {
        request_unix(
            &socket,
            Method::POST,
            "/v1/tokens",
            Some(&json!({"issuer": issuer, "aud": "api"})),
        )
        .await
    };
    assert_eq!(mint().await.json["kid"], first.as_str());

    // Backup, as docs/operations.md says: the store first (online), then the token
    // (its files, with the daemon stopped).
    let backup = token.path("backup");
    std::fs::create_dir(&backup).unwrap();
    let store_copy = backup.join("signetd.db");
    let store_backup = || {
        let out = store_copy.to_str().unwrap();
        token.signetd(&["store", "backup", "--config", c, "--out", out])
    };
    let (ok, out, err) = store_backup();
    assert!(ok, "store backup: {out}{err}");
    daemon.terminate();
    let token_files = token.path("token/tokens");
    copy_tree(&token_files, &backup.join("tokens"));
    let mut daemon = token.serve(&config, &socket);

    // After the backup: the key is revoked with the CLI (the daemon records what it
    // observes), a token is revoked by an admin, and the issuer gets a new key.
    let (ok, _, err) = token.signetd(&["keys", "revoke", "--config", c, "--kid", &first]);
    assert!(ok, "keys revoke: {err}");
    assert!(
        eventually(10, async || kids(&revocations(&socket).await)
            .contains(&first))
        .await,
        "the daemon never published the revocation"
    );
    let exp = signetd::service::unix_now() + 600;
    let revoked = request_unix(
        &socket,
        Method::POST,
        "/v1/revocations",
        Some(&json!({"jti": "stolen-token", "exp": exp})),
    )
    .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);
    let (ok, _, err) = token.signetd(&["keys", "generate", "--config", c, "--issuer", issuer]);
    assert!(ok, "keys generate: {err}");
    assert!(
        eventually(10, async || mint().await.status == 200).await,
        "the new key never signed"
    );
    daemon.terminate();

    // Restore both from the backup, as the procedure says: the daemon stopped, the
    // store's WAL files removed with it, the token's files replaced.
    let store = token.path("state/signetd.db");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    std::fs::copy(&store_copy, &store).unwrap();
    std::fs::remove_dir_all(&token_files).unwrap();
    copy_tree(&backup.join("tokens"), &token_files);
    // The restored store shows the key active, as it was when copied.
    let (_, listed, _) = token.signetd(&["keys", "list", "--config", c, "--format", "json"]);
    assert!(
        listed.contains("\"active\""),
        "the restored store should show the key active: {listed}"
    );

    // Not ready: the issuer has no key it may sign with (see below).
    let _daemon = token.serve_live(&config, &socket);
    assert_eq!(
        key_state(&socket, &first).await.as_deref(),
        Some("revoked"),
        "a restored store brought a revoked key back"
    );
    let listed = revocations(&socket).await;
    assert!(kids(&listed).contains(&first), "{:?}", listed.json);
    assert!(
        listed.json.to_string().contains("stolen-token"),
        "the token revocation was lost: {:?}",
        listed.json
    );
    let jwks = request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
    assert!(!kids(&jwks).contains(&first), "{:?}", jwks.json);
    // The new key's pair and record are both older than the backup's: the issuer has no
    // key now, and says so, rather than sign with the revoked one.
    let refused = mint().await;
    assert_eq!(refused.code(), "no_active_key", "{:?}", refused.json);
    let verify = request_unix(
        &socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": "x.y.z"})),
    )
    .await;
    assert_eq!(
        verify.status, 400,
        "the daemon keeps serving: {:?}",
        verify.json
    );

    // Said loudly: a state_rollback record for each, and an error line.
    let records = audit_records(&token.audit_dir());
    let rolled: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "state_rollback")
        .collect();
    assert!(
        rolled.iter().any(|r| r["kid"] == first.as_str()),
        "{rolled:?}"
    );
    assert!(
        rolled.iter().any(|r| r["jti"] == "stolen-token"),
        "{rolled:?}"
    );
    let log = std::fs::read_to_string(token.path("serve.log")).unwrap();
    assert!(log.contains("state rollback"), "{log}");

    // The operator's next step: a new key, which the running daemon takes up.
    let (ok, _, err) = token.signetd(&["keys", "generate", "--config", c, "--issuer", issuer]);
    assert!(ok, "keys generate after the restore: {err}");
    assert!(
        eventually(10, async || {
            let minted = mint().await;
            minted.status == 200 && minted.json["kid"] != first.as_str()
        })
        .await,
        "no key signed after the restore"
    );
    let (ok, out, err) = store_backup();
    assert!(
        !ok && err.contains("exists"),
        "a backup never overwrites: {out}{err}"
    );
}

/// Keys generated or changed with the CLI while no daemon runs are on the audit record
/// after the next start: the daemon compares the store with what its log last recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_made_while_the_daemon_was_stopped_are_recorded_at_the_next_start() {
    let token = TestToken::create("signetd-stopped");
    let issuer = "stopped";
    let (config, socket) = token.write_config(&issuer_toml(issuer, Algorithm::Es256));
    let c = config.to_str().unwrap();
    let first = token.init_ca_and_key(&config, issuer);
    token.serve(&config, &socket).terminate();

    let (ok, out, err) = token.signetd(&["keys", "rotate", "--config", c, "--issuer", issuer]);
    assert!(ok, "keys rotate: {err}");
    let next = out
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{issuer}-")) && *w != first)
        .unwrap_or_else(|| panic!("no kid in {out:?}"))
        .to_string();
    let (ok, _, err) = token.signetd(&["keys", "retire", "--config", c, "--kid", &first]);
    assert!(ok, "keys retire: {err}");

    // No active key now: serving, not ready.
    let _daemon = token.serve_live(&config, &socket);
    let recorded = async |event: &str, kid: &str, words: &str| {
        audit_records(&token.audit_dir()).iter().any(|r| {
            r["event"] == event
                && r["kid"] == kid
                && r["detail"].as_str().unwrap_or_default().contains(words)
        })
    };
    assert!(
        eventually(10, async || recorded(
            "key_rotate",
            &next,
            "generated outside the daemon by cli uid"
        )
        .await)
        .await,
        "the key rotated while the daemon was stopped has no generation record"
    );
    assert!(
        eventually(10, async || recorded(
            "key_observed",
            &first,
            "active -> retired"
        )
        .await)
        .await,
        "the retirement made while the daemon was stopped was not recorded"
    );
}
