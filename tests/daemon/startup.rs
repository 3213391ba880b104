//! Start-up failures: the real binary exits non-zero with a message naming the problem,
//! and never prints the PIN. These run as subprocesses because PKCS#11 login state is
//! per process: in this test process the token is already logged in.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{signetd_bin, token};

struct Outcome {
    success: bool,
    stderr: String,
}

/// Runs `signetd serve` with `[pkcs11]` set to `pkcs11` (and a throwaway socket).
fn serve_with(pkcs11: &str) -> Outcome {
    let t = token();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signetd.toml");
    let socket = dir.path().join("s.sock");
    std::fs::write(
        &config,
        format!(
            "{pkcs11}\n[listen]\nsocket = {:?}\nhttp = \"off\"\n",
            socket.display().to_string()
        ),
    )
    .unwrap();
    let out = Command::new(signetd_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env("SOFTHSM2_CONF", t.var("SOFTHSM2_CONF"))
        .env_remove("SIGNETD_TEST_MISSING_PIN")
        .output()
        .unwrap();
    assert!(
        !socket.exists(),
        "a failed start must not leave a listening socket"
    );
    Outcome {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn pkcs11(module: &str, token_line: &str, pin_line: &str) -> String {
    format!("[pkcs11]\nmodule = {module:?}\n{token_line}\n{pin_line}\n")
}

#[test]
fn a_wrong_pin_stops_start_up_without_revealing_any_pin() {
    let t = token();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pin");
    std::fs::write(&wrong, "987654-wrong-pin").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outcome = serve_with(&pkcs11(
        t.var("SIGNETD_PKCS11_MODULE"),
        &format!("token_label = {:?}", t.var("SIGNETD_TOKEN_LABEL")),
        &format!("pin_file = {:?}", wrong.display().to_string()),
    ));
    assert!(!outcome.success);
    assert!(
        outcome.stderr.contains("pin_incorrect"),
        "{}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("987654-wrong-pin"),
        "{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains(&t.pin()), "{}", outcome.stderr);
}

#[test]
fn a_missing_module_is_named() {
    let t = token();
    let outcome = serve_with(&pkcs11(
        "/nonexistent/libno-such-pkcs11.so",
        &format!("token_label = {:?}", t.var("SIGNETD_TOKEN_LABEL")),
        &format!("pin_file = {:?}", t.var("SIGNETD_PIN_FILE")),
    ));
    assert!(!outcome.success);
    assert!(
        outcome.stderr.contains("pkcs11_module_unavailable")
            && outcome.stderr.contains("/nonexistent/libno-such-pkcs11.so"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_token_that_does_not_exist_is_named_with_the_tokens_present() {
    let t = token();
    for selector in [
        "token_label = \"no-such-token\"",
        "token_uri = \"pkcs11:token=no-such-token\"",
        "token_serial = \"0000\"",
    ] {
        let outcome = serve_with(&pkcs11(
            t.var("SIGNETD_PKCS11_MODULE"),
            selector,
            &format!("pin_file = {:?}", t.var("SIGNETD_PIN_FILE")),
        ));
        assert!(!outcome.success);
        assert!(
            outcome.stderr.contains("token_not_found"),
            "{}",
            outcome.stderr
        );
        assert!(
            outcome.stderr.contains(t.var("SIGNETD_TOKEN_LABEL")),
            "lists present tokens: {}",
            outcome.stderr
        );
    }
}

#[test]
fn the_token_can_be_selected_by_serial_or_uri() {
    // A wrong PIN proves the token was found (selection precedes login) without logging in.
    let t = token();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pin");
    std::fs::write(&wrong, "000000").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let uri = format!(
        "token_uri = \"pkcs11:token={};serial={}\"",
        t.var("SIGNETD_TOKEN_LABEL"),
        t.var("SIGNETD_TOKEN_SERIAL")
    );
    for selector in [
        format!("token_serial = {:?}", t.var("SIGNETD_TOKEN_SERIAL")),
        uri,
    ] {
        let outcome = serve_with(&pkcs11(
            t.var("SIGNETD_PKCS11_MODULE"),
            &selector,
            &format!("pin_file = {:?}", wrong.display().to_string()),
        ));
        assert!(
            outcome.stderr.contains("pin_incorrect"),
            "{selector}: {}",
            outcome.stderr
        );
    }
}

#[test]
fn config_problems_name_the_field() {
    let t = token();
    let module = t.var("SIGNETD_PKCS11_MODULE");
    let label = format!("token_label = {:?}", t.var("SIGNETD_TOKEN_LABEL"));
    let cases = [
        (
            pkcs11(module, &label, "pin_env = \"SIGNETD_TEST_MISSING_PIN\""),
            "pkcs11.pin_env",
        ),
        (
            format!(
                "{}pin_timeout = 3\n",
                pkcs11(module, &label, "pin_file = \"/x\"")
            ),
            "pin_timeout",
        ),
        (
            pkcs11(module, &label, "pin_file = \"/nonexistent/pin\""),
            "pkcs11.pin_file",
        ),
    ];
    for (config, field) in cases {
        let outcome = serve_with(&config);
        assert!(!outcome.success);
        assert!(
            outcome.stderr.contains(field),
            "{field}: {}",
            outcome.stderr
        );
    }
}

/// A real daemon process is killed with SIGKILL and started again: a new C_Initialize,
/// login and handle lookup find the same key, and a token minted before the crash still
/// verifies against the JWKS served after it.
#[tokio::test]
async fn keys_survive_a_killed_daemon_and_a_fresh_start() {
    let t = token();
    crate::common::generate_key("start-restart", signetd::Algorithm::Es256).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    let config = dir.path().join("signetd.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[listen]\nsocket = {:?}\nhttp = \"off\"\n{}",
            t.pkcs11_toml(),
            socket.display().to_string(),
            crate::common::issuer_toml("start-restart", signetd::Algorithm::Es256)
                + &crate::common::lifecycle_toml()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(signetd_bin())
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    let start = || {
        let mut child = Command::new(signetd_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("SOFTHSM2_CONF", t.var("SOFTHSM2_CONF"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if cli(&["status"]).0 {
                return child;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the daemon did not become ready");
    };

    let mut first = start();
    let (ok, token) = cli(&["token", "mint", "--issuer", "start-restart", "--aud", "api"]);
    assert!(ok);
    // Lifecycle state and a token revocation, made just before the crash.
    let (_, revoked) = cli(&["token", "mint", "--issuer", "start-restart", "--aud", "api"]);
    let jti = crate::common::decode_parts(&revoked).1["jti"].clone();
    let post = |path: &'static str, body: serde_json::Value| {
        let socket = socket.clone();
        async move { crate::common::request_unix(&socket, hyper::Method::POST, path, Some(&body)).await }
    };
    assert_eq!(
        post("/v1/revocations", serde_json::json!({"jti": jti}))
            .await
            .status,
        200
    );
    let rotated = post("/v1/issuers/start-restart/rotate", serde_json::json!({})).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json);
    let pending = rotated.json["kid"].as_str().unwrap().to_string();
    first.kill().unwrap(); // SIGKILL: no graceful shutdown, the socket file stays behind
    first.wait().unwrap();
    assert!(socket.exists());

    let mut second = start(); // replaces the stale socket
    let (ok, verdict) = cli(&[
        "token",
        "verify",
        "--iss",
        "https://start-restart.example",
        "--aud",
        "api",
        &token,
    ]);
    assert!(
        ok,
        "a token from before the crash verifies after it: {verdict}"
    );
    let (ok, again) = cli(&["token", "mint", "--issuer", "start-restart", "--aud", "api"]);
    assert!(ok);
    let kid = |t: &str| crate::common::decode_parts(t).0["kid"].clone();
    assert_eq!(
        kid(&token),
        kid(&again),
        "the same key signs after the restart"
    );
    let get = |path: String| {
        let socket = socket.clone();
        async move { crate::common::request_unix(&socket, hyper::Method::GET, &path, None).await }
    };
    let revocations = get("/v1/revocations".to_string()).await;
    assert!(
        revocations.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["jti"] == jti),
        "{:?}",
        revocations.json
    );
    let verdict = crate::common::request_unix(
        &socket,
        hyper::Method::POST,
        "/v1/verify",
        Some(&serde_json::json!({"token": revoked, "audience": "api"})),
    )
    .await;
    assert_eq!(verdict.code(), "token_revoked");
    let state = get(format!("/v1/keys/{pending}")).await.json["state"].clone();
    assert!(
        state == "pending" || state == "active",
        "the rotation survived: {state}"
    );
    terminate(&mut second);
}

/// Stops a daemon with SIGTERM (graceful) through the `kill` command and waits for it.
fn terminate(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}
