//! The daemon's logs: JSON lines on request, and a request id on every line of a
//! request and in its response (`X-Request-Id`).

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::client::Endpoint;

use crate::common::*;

/// The log lines whose message is `message`, parsed.
fn lines_saying(log: &[Value], message: &str) -> Vec<Value> {
    log.iter()
        .filter(|l| l["fields"]["message"] == message)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_the_response_names() {
    let t = TestToken::create("logs");
    let (config, socket) = t.write_config(&issuer_toml("a", Algorithm::Es256));
    t.init_ca_and_key(&config, "a");
    let _daemon = t.serve_under(&["env", "SIGNETD_LOG_FORMAT=json"], &config, &socket);
    let endpoint = Endpoint::Unix(socket.clone());
    let body = json!({"issuer": "a", "aud": "api"}).to_string();
    let mint = async |headers: &[(&str, &str)]| {
        let mut headers = headers.to_vec();
        headers.push(("content-type", "application/json"));
        request(
            &endpoint,
            Method::POST,
            "/v1/tokens",
            &headers,
            body.as_bytes(),
        )
        .await
    };

    // A caller's own short id is kept; a fresh one is made otherwise, and for an id
    // that is too long or has characters that have no place in a log line.
    let kept = mint(&[("x-request-id", "gw-1234.5")]).await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.header("x-request-id"), "gw-1234.5");
    let mut fresh_ids = Vec::new();
    for headers in [
        vec![],
        vec![("x-request-id", "a b")],
        vec![("x-request-id", &*"x".repeat(65))],
    ] {
        let reply = mint(&headers).await;
        assert_eq!(reply.status, 200);
        let id = reply.header("x-request-id").to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        fresh_ids.push(id);
    }
    // Refusals and unknown paths get one too.
    let refused = request(&endpoint, Method::GET, "/nowhere", &[], b"").await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header("x-request-id").len(), 32);
    let wrong_method = request(&endpoint, Method::DELETE, "/v1/tokens", &[], b"").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("x-request-id").len(), 32);
    let preflight = request(&endpoint, Method::OPTIONS, "/v1/keys", &[], b"").await;
    assert_eq!(preflight.header("x-request-id").len(), 32);

    let log_path = t.path("serve.log");
    let read = || -> Vec<Value> {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let minted = eventually(10, async || {
        lines_saying(&read(), "minted token").len() == 4
    })
    .await;
    assert!(minted, "expected 4 'minted token' lines");
    let log = read();
    let ids: Vec<String> = lines_saying(&log, "minted token")
        .iter()
        .map(|l| l["span"]["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids[0], "gw-1234.5");
    assert_eq!(ids[1..], fresh_ids[..]);
    let line = &lines_saying(&log, "minted token")[0];
    assert_eq!(line["span"]["name"], "request");
    assert_eq!(line["span"]["method"], "POST");
    assert_eq!(line["span"]["path"], "/v1/tokens");
    assert_eq!(line["level"], "INFO");
    assert!(line["fields"]["jti"].is_string(), "{line}");
    // The token itself, and the PIN, are nowhere.
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(&t.pin()));
    assert!(!text.contains("eyJ"), "a JWT is in the log");
}
