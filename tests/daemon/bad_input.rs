//! Every bad request gets its own stable code and status, and the daemon keeps serving.

use hyper::Method;
use serde_json::json;
use signetd::Algorithm;

use crate::common::{RawConnection, TestDaemon, generate_key, issuer_toml, my_uid, post_head};

/// Request headers, then body, then the expected status and error code.
type RawCase<'a> = (&'a [(&'a str, &'a str)], Vec<u8>, u16, &'a str);

#[tokio::test]
async fn each_bad_mint_request_has_its_code_and_the_daemon_keeps_serving() {
    generate_key("bad-in", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("bad-in", Algorithm::Es256)).await;
    let json_type: &[(&str, &str)] = &[("content-type", "application/json")];
    let valid = json!({"issuer":"bad-in","aud":"api"}).to_string();

    let raw_cases: Vec<RawCase> = vec![
        (json_type, b"{\"issuer\":".to_vec(), 400, "malformed_json"),
        (
            json_type,
            br#"{"issuer" "bad-in"}"#.to_vec(),
            400,
            "malformed_json",
        ),
        (json_type, b"[1,2".to_vec(), 400, "invalid_request"),
        (
            json_type,
            b"{\"issuer\":5,\"aud\":\"api\"}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            json_type,
            b"{\"aud\":\"api\"}".to_vec(),
            400,
            "invalid_request",
        ),
        (
            json_type,
            br#"{"issuer":"bad-in","aud":"api","claim":{}}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            &[("content-type", "text/plain")],
            valid.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            &[],
            valid.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            json_type,
            format!(
                "{{\"issuer\":\"bad-in\",\"aud\":\"api\",\"sub\":\"{}\"}}",
                "x".repeat(70_000)
            )
            .into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    for (headers, body, status, code) in raw_cases {
        let reply = daemon
            .unix(Method::POST, "/v1/tokens", headers, &body)
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        assert!(!reply.json["error"]["message"].as_str().unwrap().is_empty());
    }

    let policy_cases = [
        (
            json!({"issuer":"nobody","aud":"api"}),
            404,
            "unknown_issuer",
        ),
        (
            json!({"issuer":"bad-in","aud":"evil"}),
            422,
            "audience_not_allowed",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","ttl_seconds":61}),
            422,
            "ttl_exceeds_max",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","ttl_seconds":100000}),
            422,
            "ttl_exceeds_max",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","ttl_seconds":0}),
            400,
            "invalid_request",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","ttl_seconds":-5}),
            400,
            "invalid_request",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"iss":"https://evil"}}),
            422,
            "reserved_claim",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"exp":9999999999u64}}),
            422,
            "reserved_claim",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"iat":1}}),
            422,
            "reserved_claim",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"jti":"mine"}}),
            422,
            "reserved_claim",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"nbf":1}}),
            422,
            "reserved_claim",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","claims":{"big":"x".repeat(5000)}}),
            422,
            "claims_too_large",
        ),
        (
            json!({"issuer":"bad-in","aud":"api","sub":""}),
            400,
            "invalid_request",
        ),
    ];
    for (body, status, code) in policy_cases {
        let reply = daemon.post("/v1/tokens", &body).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}");
    }

    let reply = daemon.get("/v1/nothing-here").await;
    assert_eq!((reply.status, reply.code()), (404, "not_found"));
    let reply = daemon
        .unix(Method::DELETE, "/.well-known/jwks.json", &[], b"")
        .await;
    assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"));
    let reply = daemon.get("/v1/tokens").await;
    assert_eq!((reply.status, reply.code()), (405, "method_not_allowed"));

    // After all of that, the daemon still mints.
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"bad-in","aud":"api"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

#[tokio::test]
async fn a_caller_whose_uid_the_policy_excludes_is_refused() {
    generate_key("bad-uid", Algorithm::Es256).await;
    let config = format!(
        "[issuers.bad-uid]\niss = \"https://x\"\naudiences = [\"api\"]\ncallers = [\"uid:{}\"]\nraw_sign = true\n",
        my_uid() + 1
    );
    let daemon = TestDaemon::start(&config).await;
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"bad-uid","aud":"api"}))
        .await;
    assert_eq!((reply.status, reply.code()), (403, "caller_not_allowed"));
    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"bad-uid","digest":signetd::token::jws::b64([0u8; 32])}),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (403, "caller_not_allowed"));
}

#[tokio::test]
async fn an_issuer_without_a_key_answers_no_active_key() {
    let daemon = TestDaemon::start(&issuer_toml("bad-nokey", Algorithm::Es256)).await;
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"bad-nokey","aud":"api"}))
        .await;
    assert_eq!((reply.status, reply.code()), (503, "no_active_key"));
}

/// Runs the real CLI as another user (nobody), so the kernel reports a different uid.
/// Only root can switch users; elsewhere the uid policy is shown by the test above.
#[tokio::test]
async fn another_uid_on_the_socket_is_refused_and_an_allowed_gid_is_admitted() {
    if my_uid() != 0 {
        eprintln!("skipping the cross-user part: needs root to run a client as nobody");
        return;
    }
    const NOBODY: u32 = 65534;
    generate_key("bad-other", Algorithm::Es256).await;
    generate_key("bad-group", Algorithm::Es256).await;
    let config = format!(
        "[issuers.bad-other]\niss = \"https://x\"\naudiences = [\"api\"]\ncallers = [\"uid:0\"]\n\
         [issuers.bad-group]\niss = \"https://y\"\naudiences = [\"api\"]\ncallers = [\"gid:{NOBODY}\"]\n"
    );
    let daemon = TestDaemon::start_with_mode(&config, 0o666).await;
    // Let nobody reach the socket inside the test's private directory.
    std::fs::set_permissions(
        daemon.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mint_as_nobody =
        |issuer: &'static str| crate::common::mint_as_nobody(daemon.socket.clone(), issuer);
    let refused = mint_as_nobody("bad-other").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("caller_not_allowed") && stderr.contains("403"),
        "{stderr}"
    );
    let admitted = mint_as_nobody("bad-group").await;
    assert!(
        admitted.status.success(),
        "{}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&admitted.stdout)
            .matches('.')
            .count(),
        2,
        "a compact JWS"
    );
}

#[tokio::test]
async fn a_caller_no_issuer_names_is_refused_before_its_body_is_read() {
    let config = format!(
        "[issuers.bad-early]\niss = \"https://x\"\naudiences = [\"api\"]\ncallers = [\"uid:{}\"]\n",
        my_uid() + 1
    );
    let daemon = TestDaemon::start(&config).await;
    let mut conn = RawConnection::open(&daemon.socket).await;
    // Headers promise a body that never comes; the answer must not wait for it.
    conn.send(post_head(1000).as_bytes()).await;
    let (status, json) = tokio::time::timeout(std::time::Duration::from_secs(5), conn.reply())
        .await
        .expect("answered without waiting for the body");
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (403, Some("caller_not_allowed"))
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_times_out_and_the_daemon_keeps_serving() {
    generate_key("bad-slow", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("bad-slow", Algorithm::Es256)).await;
    let mut conn = RawConnection::open(&daemon.socket).await;
    conn.send(format!("{}{{\"issuer\":", post_head(100)).as_bytes())
        .await;
    let (status, json) = conn.reply().await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"bad-slow","aud":"api"}))
        .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused() {
    generate_key("bad-chunked", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("bad-chunked", Algorithm::Es256)).await;
    let mut conn = RawConnection::open(&daemon.socket).await;
    conn.send(b"POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await;
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, " ".repeat(16 * 1024));
    for _ in 0..5 {
        conn.send(chunk.as_bytes()).await;
    }
    conn.send(b"0\r\n\r\n").await;
    let (status, json) = conn.reply().await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
}
