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

/// The value of an unlabelled family in `/metrics`' text.
fn metric(text: &str, family: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(family)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A journal that stops reading (stderr a pipe nobody drains) never stalls signing: the
/// daemon's log lines wait on a thread of their own, past its buffer they are dropped and
/// counted in `/metrics`, and once the reader drains the pipe the lines flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_stalls_signing() {
    use std::io::Read;
    let t = TestToken::create("logs-stalled");
    let (config, socket) = t.write_config(&issuer_toml("a", Algorithm::Es256));
    t.init_ca_and_key(&config, "a");
    // A pipe holds 64 KiB, a few hundred mints' lines at `info`; with a buffer of 64
    // lines the next hundred or so are dropped.
    let child = t
        .command(signetd_bin(), "serve --config")
        .arg(&config)
        .env("SIGNETD_LOG", "info")
        .env("SIGNETD_LOG_BUFFER_LINES", "64")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut daemon = ServedDaemon(child);
    // Held and not read: the pipe fills and stays full.
    let mut stderr = daemon.0.stderr.take().unwrap();
    let socket_arg = socket.display().to_string();
    let ready = eventually(20, async || {
        t.signetd(&["status", "--socket", &socket_arg]).0
    })
    .await;
    assert!(
        ready,
        "the daemon did not become ready with its stderr unread"
    );

    let endpoint = Endpoint::Unix(socket.clone());
    let body = json!({"issuer": "a", "aud": "api"}).to_string();
    let mint = || {
        let (endpoint, body) = (endpoint.clone(), body.clone());
        async move {
            let headers = [("content-type", "application/json")];
            request(
                &endpoint,
                Method::POST,
                "/v1/tokens",
                &headers,
                body.as_bytes(),
            )
            .await
            .status
        }
    };
    // Concurrent callers, so the lines come faster than nothing reads them; a stall
    // would hang here (the test's own timeout catches it).
    let minted = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut statuses = Vec::new();
        for _ in 0..100 {
            let round: Vec<_> = (0..8).map(|_| tokio::spawn(mint())).collect();
            for call in round {
                statuses.push(call.await.unwrap());
            }
        }
        statuses
    })
    .await
    .expect("minting stalled while stderr was not read");
    assert_eq!(minted.len(), 800);
    assert!(minted.iter().all(|&s| s == 200), "{minted:?}");

    let metrics = request(&endpoint, Method::GET, "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    let dropped = metric(
        &String::from_utf8_lossy(&metrics.raw),
        "signetd_log_lines_dropped_total",
    )
    .expect("signetd_log_lines_dropped_total is in /metrics");
    assert!(dropped > 0.0, "no line was dropped: {dropped}");

    // Drained, the pipe takes lines again: a mint after the drain shows up in it.
    let drained = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let after = body.clone();
    let reply = request(
        &endpoint,
        Method::POST,
        "/v1/tokens",
        &[("content-type", "application/json")],
        after.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let jti = reply.json["jti"].as_str().unwrap().to_string();
    // SIGTERM ends the daemon, which writes out what its log thread still holds and
    // closes the pipe.
    assert!(daemon.terminate().success());
    let text = drained.join().unwrap();
    assert!(text.contains("minted token"), "no mint line came through");
    assert!(
        text.contains(&jti),
        "the mint after the drain is not in the log"
    );
    assert!(!text.contains(&t.pin()), "the PIN is in the log");
}
