//! Publishing is never emptied by a read failure, and `/readyz` means "can sign now":
//! a `signetd serve` subprocess on a token of its own, whose files are moved away and
//! back, whose private key is deleted with pkcs11-tool, or whose audit directory cannot
//! be opened at start.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{ServedDaemon, TestToken, audit_records, issuer_toml, request_unix};
use crate::faults::Faulty;

/// A token with a CA and issuer `pub`'s key, a config with a 1 s lifecycle tick, and a
/// daemon serving it. Returns the kid.
fn served(label: &str, audit: Option<&Path>) -> (TestToken, ServedDaemon, String) {
    let t = TestToken::create(label);
    let mut rest = format!(
        "{}[lifecycle]\ntick_seconds = 1\n",
        issuer_toml("pub", Algorithm::Es256)
    );
    if let Some(dir) = audit {
        rest += &format!("[audit]\ndir = {:?}\n", dir.display().to_string());
    }
    let (config, socket) = t.write_config(&rest);
    let kid = t.init_ca_and_key(&config, "pub");
    let daemon = t.serve(&config, &socket);
    (t, daemon, kid)
}

async fn get(t: &TestToken, path: &str) -> (u16, Value) {
    let reply = request_unix(&t.path("signetd.sock"), Method::GET, path, None).await;
    (reply.status, reply.json)
}

async fn mint(t: &TestToken) -> (u16, Value) {
    let body = json!({"issuer": "pub", "aud": "api"});
    let reply = request_unix(
        &t.path("signetd.sock"),
        Method::POST,
        "/v1/tokens",
        Some(&body),
    )
    .await;
    (reply.status, reply.json)
}

/// Polls `/readyz` for at most `seconds` until its status is `status`; returns the body.
async fn readyz_becomes(t: &TestToken, status: u16, seconds: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let (got, body) = get(t, "/readyz").await;
        if got == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not answer {status} within {seconds} s: {got} {body}\n{}",
            std::fs::read_to_string(t.path("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn problems(body: &Value) -> String {
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let list = body["error"]["problems"]
        .as_array()
        .expect("a list of problems");
    assert!(!list.is_empty(), "{body}");
    list.iter()
        .map(|p| p.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The token goes away for a while: the JWKS stays as it was and `/readyz` says why it
/// is not ready. Returns the daemon, with the token back.
///
/// How a token goes away depends on the module. SoftHSM2's files are moved away and
/// back (root ignores `chmod 000`; a rename is what an unmounted or lost store looks
/// like). kryoptic keeps its SQLite database open, so moving its file is no fault to it
/// (it goes on signing, rightly); there the fault module makes every call answer
/// `CKR_DEVICE_REMOVED` instead. Either way the daemon loads the fault module, a plain
/// pass-through while its plan is empty.
async fn outage(label: &str) -> (Faulty, Value) {
    let f = Faulty::start_with(label, "", "pub", "[lifecycle]\ntick_seconds = 1\n");
    let (t, kid) = (&f.token, &f.kid);
    let (status, jwks) = get(t, "/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert!(jwks.to_string().contains(kid), "{jwks}");
    assert_eq!(mint(t).await.0, 200);

    let store = t.path("token/tokens");
    let away = t.path("token/tokens.away");
    let files_hold_the_token = t.module_env().0 == "SOFTHSM2_CONF";
    if files_hold_the_token {
        std::fs::rename(&store, &away).unwrap();
    } else {
        f.plan("function=* rv=CKR_DEVICE_REMOVED\n");
    }
    let body = readyz_becomes(t, 503, 15).await;
    let why = problems(&body);
    assert!(why.contains(kid.as_str()) && why.contains("token"), "{why}");
    // Several lifecycle ticks (1 s each) re-read the token meanwhile.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(get(t, "/.well-known/jwks.json").await, (200, jwks.clone()));
        assert_eq!(get(t, "/v1/keys").await.0, 200);
        assert_ne!(
            mint(t).await.0,
            200,
            "nothing signs while the token is away"
        );
    }
    if files_hold_the_token {
        std::fs::rename(&away, &store).unwrap();
    } else {
        f.plan("");
    }
    (f, jwks)
}

#[tokio::test]
async fn a_token_outage_keeps_the_jwks_and_readiness_names_it() {
    let (f, jwks) = outage("signetd-pub-outage").await;
    let t = &f.token;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(get(t, "/.well-known/jwks.json").await, (200, jwks));
}

/// After the outage above, minting works again within 60 s, without a restart.
///
/// SoftHSM2 shows this process an empty token until the library is initialized again
/// (`C_Finalize`, `C_Initialize`): the daemon takes an empty reading where keys were as
/// a lost token and recovers as from a device error.
#[tokio::test]
async fn minting_resumes_after_a_token_outage_without_restart() {
    let (f, jwks) = outage("signetd-pub-resume").await;
    let t = &f.token;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = mint(t).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "minting did not resume within 60 s of the token's return: {body}\n{}",
            std::fs::read_to_string(t.path("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    readyz_becomes(t, 200, 10).await;
    assert_eq!(get(t, "/.well-known/jwks.json").await, (200, jwks));
}

/// A private key deleted from a readable token with pkcs11-tool: its public key stays
/// in the JWKS (tokens it signed keep verifying), and the loss is reported in the
/// daemon's log, the audit log, `/readyz` and `signetd keys list`.
#[tokio::test]
async fn a_deleted_private_key_stays_published_and_is_reported() {
    let (t, _daemon, kid) = served("signetd-pub-deleted", None);
    let t = &t;
    let (_, jwks) = get(t, "/.well-known/jwks.json").await;
    let (status, minted) = mint(t).await;
    assert_eq!(status, 200, "{minted}");

    let id: String = kid.bytes().map(|b| format!("{b:02x}")).collect();
    t.pkcs11_tool(&["--delete-object", "--type", "privkey", "--id", &id]);

    let body = readyz_becomes(t, 503, 15).await;
    let why = problems(&body);
    assert!(why.contains(&kid), "{why}");
    // Past several ticks, the key is still published: the token minted before verifies.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get(t, "/.well-known/jwks.json").await, (200, jwks));
    let verified = request_unix(
        &t.path("signetd.sock"),
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": minted["token"], "audience": "api"})),
    )
    .await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);
    assert_eq!(mint(t).await.0, 503, "a missing key signs nothing");

    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains(&kid) && l.contains("missing")),
        "{log}"
    );
    let records = audit_records(&t.audit_dir());
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "key_missing" && r["kid"] == kid.as_str()),
        "{records:?}"
    );
    let config = t.path("signetd.toml");
    let listing = t.signetd_ok(&["keys", "list", "--config", config.to_str().unwrap()]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("problem:") && l.contains(&kid) && l.contains("missing")),
        "{listing}"
    );
}

/// An audit directory that cannot be opened at start (a file stands where it should
/// be): not ready, naming the audit log; once the file is gone, ready and signing
/// within 60 s, without a restart.
#[tokio::test]
async fn an_audit_directory_that_opens_late_needs_no_restart() {
    let t = TestToken::create("signetd-pub-audit");
    let blocked = t.path("late-audit");
    std::fs::write(&blocked, "not a directory").unwrap();
    let rest = format!(
        "{}[audit]\ndir = {:?}\n",
        issuer_toml("pub", Algorithm::Es256),
        blocked.display().to_string()
    );
    let (config, socket) = t.write_config(&rest);
    t.init_ca_and_key(&config, "pub");
    let _daemon = start_unready(&t, &config, &socket);
    let body = readyz_becomes(&t, 503, 15).await;
    assert!(problems(&body).contains("audit"), "{body}");
    assert_eq!(mint(&t).await.0, 503);

    std::fs::remove_file(&blocked).unwrap();
    readyz_becomes(&t, 200, 60).await;
    let (status, body) = mint(&t).await;
    assert_eq!(status, 200, "{body}");
    let records = audit_records(&blocked);
    assert!(
        records.iter().any(|r| r["event"] == "recovered"),
        "{records:?}"
    );
    assert!(records.iter().any(|r| r["event"] == "mint"), "{records:?}");
}

/// `signetd serve` that is expected to start not-ready: waits for its socket to answer
/// `/healthz` instead of `signetd status`.
pub(crate) fn start_unready(t: &TestToken, config: &Path, socket: &Path) -> ServedDaemon {
    let log = std::fs::File::create(t.path("serve.log")).unwrap();
    let child = t
        .command(crate::common::signetd_bin(), "serve --config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = ServedDaemon(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}
