//! Start-up failures: the real binary exits non-zero with a message naming the problem,
//! and never prints the PIN. These run as subprocesses because PKCS#11 login state is
//! per process: in this test process the token is already logged in.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{TestToken, signetd_bin, token};

struct Outcome {
    success: bool,
    stderr: String,
}

/// Runs `signetd serve` with `[pkcs11]` set to `pkcs11` (and a throwaway socket), with
/// `t`'s module environment.
fn serve_with(t: &TestToken, pkcs11: &str) -> Outcome {
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
        .env(t.module_env().0, t.module_env().1)
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
    // A token of its own: a failed login is a write to SoftHSM2's token file, and
    // another process writing the shared token while this one's tests do is what the
    // harness avoids (common.rs, TestToken::create).
    let t = &TestToken::create("wrong-pin");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pin");
    std::fs::write(&wrong, "987654-wrong-pin").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outcome = serve_with(
        t,
        &pkcs11(
            t.var("SIGNETD_PKCS11_MODULE"),
            &format!("token_label = {:?}", t.var("SIGNETD_TOKEN_LABEL")),
            &format!("pin_file = {:?}", wrong.display().to_string()),
        ),
    );
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
    let outcome = serve_with(
        t,
        &pkcs11(
            "/nonexistent/libno-such-pkcs11.so",
            &format!("token_label = {:?}", t.var("SIGNETD_TOKEN_LABEL")),
            &format!("pin_file = {:?}", t.var("SIGNETD_PIN_FILE")),
        ),
    );
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
        let outcome = serve_with(
            t,
            &pkcs11(
                t.var("SIGNETD_PKCS11_MODULE"),
                selector,
                &format!("pin_file = {:?}", t.var("SIGNETD_PIN_FILE")),
            ),
        );
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
    // A wrong PIN proves the token was found (selection precedes login) without logging
    // in; on a token of its own, as above.
    let t = &TestToken::create("select-by");
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
        let outcome = serve_with(
            t,
            &pkcs11(
                t.var("SIGNETD_PKCS11_MODULE"),
                &selector,
                &format!("pin_file = {:?}", wrong.display().to_string()),
            ),
        );
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
        let outcome = serve_with(t, &config);
        assert!(!outcome.success);
        assert!(
            outcome.stderr.contains(field),
            "{field}: {}",
            outcome.stderr
        );
    }
}

/// A real daemon process is killed with SIGKILL and started again: a new C_Initialize,
/// login and handle lookup find the same key, the lifecycle state and the token
/// revocations, and a token minted before the crash still verifies after it.
#[tokio::test]
async fn keys_survive_a_killed_daemon_and_a_fresh_start() {
    use hyper::Method;
    use serde_json::json;
    let t = crate::common::TestToken::create("restart");
    let tables = crate::common::issuer_toml("start-restart", signetd::Algorithm::Es256)
        + &crate::common::lifecycle_toml();
    let (config, socket) = t.write_config(&tables);
    t.init_ca_and_key(&config, "start-restart");
    let socket_arg = socket.display().to_string();
    let cli = |args: &[&str]| {
        let (ok, out, _) = t.signetd(&[args, &["--socket", &socket_arg]].concat());
        (ok, out)
    };
    let request = |method: Method, path: String, body: Option<serde_json::Value>| {
        let socket = socket.clone();
        async move { crate::common::request_unix(&socket, method, &path, body.as_ref()).await }
    };

    let mut first = t.serve(&config, &socket);
    let (ok, token) = cli(&["token", "mint", "--issuer", "start-restart", "--aud", "api"]);
    assert!(ok);
    // Lifecycle state and a token revocation, made just before the crash.
    let (_, revoked) = cli(&["token", "mint", "--issuer", "start-restart", "--aud", "api"]);
    let jti = crate::common::decode_parts(&revoked).1["jti"].clone();
    let reply = request(
        Method::POST,
        "/v1/revocations".into(),
        Some(json!({"jti": jti})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let rotated = request(
        Method::POST,
        "/v1/issuers/start-restart/rotate".into(),
        Some(json!({})),
    )
    .await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.json);
    let pending = rotated.json["kid"].as_str().unwrap().to_string();
    first.crash(); // SIGKILL: no graceful shutdown, the socket file stays behind
    assert!(socket.exists());

    let mut second = t.serve(&config, &socket); // replaces the stale socket
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
    let keys = request(Method::GET, "/v1/keys".into(), None).await;
    let kid = crate::common::decode_parts(&token).0["kid"].clone();
    assert!(
        keys.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid),
        "the same key is there"
    );
    let state = request(Method::GET, format!("/v1/keys/{pending}"), None)
        .await
        .json["state"]
        .clone();
    assert!(
        state == "pending" || state == "active",
        "the rotation survived: {state}"
    );
    let revocations = request(Method::GET, "/v1/revocations".into(), None).await;
    assert!(
        revocations.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["jti"] == jti),
        "{:?}",
        revocations.json
    );
    let verdict = request(
        Method::POST,
        "/v1/verify".into(),
        Some(json!({"token": revoked, "audience": "api"})),
    )
    .await;
    assert_eq!(verdict.code(), "token_revoked");
    assert!(second.terminate().success(), "graceful shutdown exits 0");
}

#[test]
fn a_missing_socket_directory_and_a_url_for_a_socket_are_named() {
    let t = token();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signetd.toml");
    let socket = dir.path().join("no-such-dir").join("s.sock");
    std::fs::write(
        &config,
        format!(
            "{}\n[listen]\nsocket = {:?}\nhttp = \"off\"\n",
            t.pkcs11_toml(),
            socket.display().to_string()
        ),
    )
    .unwrap();
    let out = t.signetd_output(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("does not exist")
            && stderr.contains("no-such-dir"),
        "{stderr}"
    );

    let out = Command::new(signetd_bin())
        .args([
            "token",
            "mint",
            "--issuer",
            "x",
            "--aud",
            "y",
            "--socket",
            "http://127.0.0.1:8750",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Unix socket"),
        "{stderr}"
    );
}

/// Configs written for earlier versions (`allowed_uids`, `single_use_gids`, ...) keep
/// working: the real daemon serves them, and logs the selector line to write instead.
/// A malformed selector stops it at start with the forms it takes.
#[test]
fn legacy_caller_lists_still_work_and_a_bad_selector_is_named() {
    let t = crate::common::TestToken::create("legacy");
    let uid = crate::common::my_uid();
    let (config, socket) = t.write_config(&format!(
        "[issuers.legacy]\niss = \"https://legacy.example\"\naudiences = [\"api\"]\n\
         allowed_uids = [{uid}]\n[verify]\nsingle_use_gids = [4242]\n"
    ));
    t.init_ca_and_key(&config, "legacy");
    let mut daemon = t.serve(&config, &socket);
    let socket_arg = socket.display().to_string();
    let (ok, token, err) = t.signetd(&[
        "token",
        "mint",
        "--issuer",
        "legacy",
        "--aud",
        "api",
        "--socket",
        &socket_arg,
    ]);
    assert!(ok && token.split('.').count() == 3, "{token} {err}");
    assert!(daemon.terminate().success());
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(
        log.contains("[issuers.legacy] allowed_uids/allowed_gids are deprecated")
            && log.contains(&format!("callers = [\"uid:{uid}\"]"))
            && log.contains("single_use_callers = [\"gid:4242\"]"),
        "{log}"
    );

    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("allowed_uids = [{uid}]"),
        "callers = [\"user:alice\"]",
    );
    std::fs::write(&config, text).unwrap();
    let out = t.signetd_output(&["serve", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"user:alice\" is not a caller selector") && stderr.contains("spiffe://"),
        "{stderr}"
    );
}
