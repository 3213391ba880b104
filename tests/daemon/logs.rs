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

/// `POST /v1/tokens` with the JSON `body` and `headers` besides its content type.
async fn post_token(endpoint: &Endpoint, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    request(
        endpoint,
        Method::POST,
        "/v1/tokens",
        &headers,
        body.as_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_the_response_names() {
    let t = TestToken::create("logs");
    let (config, socket) = t.write_config(&issuer_toml("a", Algorithm::Es256));
    t.init_ca_and_key(&config, "a");
    let _daemon = t.serve_under(&["env", "SIGNETD_LOG_FORMAT=json"], &config, &socket);
    let endpoint = Endpoint::Unix(socket.clone());
    let body = json!({"issuer": "a", "aud": "api"}).to_string();
    let mint = async |headers: &[(&str, &str)]| post_token(&endpoint, &body, headers).await;

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

/// A daemon whose stdout and stderr are one pipe nobody reads (as under systemd, where
/// both are the journal's stream), past the point where the pipe, the log thread's write
/// buffer and its queue are full; also returns the pipe's read end (held, so the pipe
/// stays open) and the mint request's body.
async fn daemon_with_a_stalled_log(
    t: &TestToken,
) -> (ServedDaemon, std::io::PipeReader, Endpoint, String) {
    let (config, socket) = t.write_config(&issuer_toml("a", Algorithm::Es256));
    t.init_ca_and_key(&config, "a");
    // Between them the pipe (64 KiB), the log thread's write buffer (64 KiB) and its
    // queue (64 lines here) hold about 450 mints' lines at `info`; the 1,200 mints below
    // are well past that.
    let (stderr, writer) = std::io::pipe().unwrap();
    let child = t
        .command(signetd_bin(), "serve --config")
        .arg(&config)
        .env("SIGNETD_LOG", "info")
        .env("SIGNETD_LOG_BUFFER_LINES", "64")
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let daemon = ServedDaemon(child);
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
        async move { post_token(&endpoint, &body, &[]).await.status }
    };
    // Concurrent callers, so the lines come faster than nothing reads them; a stall
    // would hang here (the test's own timeout catches it).
    let minted = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut statuses = Vec::new();
        for _ in 0..150 {
            let round: Vec<_> = (0..8).map(|_| tokio::spawn(mint())).collect();
            for call in round {
                statuses.push(call.await.unwrap());
            }
        }
        statuses
    })
    .await
    .expect("minting stalled while stderr was not read");
    assert_eq!(minted.len(), 1200);
    assert!(minted.iter().all(|&s| s == 200), "{minted:?}");
    (daemon, stderr, endpoint, body)
}

/// A journal that stops reading (stderr a pipe nobody drains) never stalls signing: the
/// daemon's log lines wait on a thread of their own, past its buffer they are dropped and
/// counted in `/metrics`, and once the reader drains the pipe the lines flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_stalls_signing() {
    use std::io::Read;
    let t = TestToken::create("logs-stalled");
    let (mut daemon, mut stderr, endpoint, body) = daemon_with_a_stalled_log(&t).await;

    let metrics = request(&endpoint, Method::GET, "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    let dropped = metric(
        &String::from_utf8_lossy(&metrics.raw),
        "signetd_log_lines_dropped_total",
    )
    .expect("signetd_log_lines_dropped_total is in /metrics");
    assert!(dropped > 0.0, "no line was dropped: {dropped}");

    // Drained, the pipe takes lines again: mints after the drain show up in it. (The
    // first of them may still find the queue full, until the log thread's pending
    // write goes through: minted until one comes out.)
    let (chunks, drained) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = stderr.read(&mut chunk) {
            if chunks
                .send(String::from_utf8_lossy(&chunk[..n]).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut text = String::new();
    let mut jtis = Vec::new();
    let came_through = eventually(30, async || {
        let reply = post_token(&endpoint, &body, &[]).await;
        assert_eq!(reply.status, 200);
        jtis.push(reply.json["jti"].as_str().unwrap().to_string());
        text.extend(drained.try_iter());
        jtis.iter().any(|jti| text.contains(jti.as_str()))
    })
    .await;
    assert!(came_through, "no mint after the drain reached the log");
    assert!(text.contains("minted token"));
    // SIGTERM ends the daemon, which writes out what its log thread still holds and
    // closes the pipe.
    assert!(daemon.terminate().success());
    reader.join().unwrap();
    text.extend(drained.try_iter());
    assert!(!text.contains(&t.pin()), "the PIN is in the log");
}

/// Nor does it keep the daemon from exiting: SIGTERM with the pipe still full (stdout
/// too) ends it cleanly, after at most a short wait for the lines it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_never_keeps_the_daemon_from_exiting() {
    let t = TestToken::create("logs-stalled-exit");
    let (mut daemon, _unread, _, _) = daemon_with_a_stalled_log(&t).await;
    let pid = daemon.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let exited = eventually(30, async || daemon.0.try_wait().unwrap().is_some()).await;
    assert!(
        exited,
        "the daemon did not exit within 30 s with its log reader stalled"
    );
    assert!(daemon.0.wait().unwrap().success());
}
