//! Limits: rate limits per principal and per issuer, connection slots per principal,
//! head size, declared body size, total request time and idle connections. The abuse
//! cases stay on the loopback Unix socket, bounded in count and time.

use std::io::Read;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use signetd::Algorithm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    RawConnection, TestDaemon, eventually, generate_key, issuer_toml, mint_as_nobody, my_uid,
};

const NOBODY: u32 = 65534;

/// The refusal records of the in-process daemon's audit log.
fn refusals(daemon: &TestDaemon) -> Vec<Value> {
    crate::common::audit_records(&daemon.dir.path().join("audit"))
        .into_iter()
        .filter(|r| r["event"] == "refused")
        .collect()
}

fn mint_body(issuer: &str) -> Value {
    json!({"issuer": issuer, "aud": "api"})
}

#[tokio::test]
async fn an_issuer_over_its_limit_answers_429_with_retry_after_while_another_mints() {
    generate_key("lim-tight", Algorithm::Es256).await;
    generate_key("lim-loose", Algorithm::Es256).await;
    let config = format!(
        "{}rate_per_issuer = \"2/m\"\n{}",
        issuer_toml("lim-tight", Algorithm::Es256),
        issuer_toml("lim-loose", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    for _ in 0..2 {
        let reply = daemon.post("/v1/tokens", &mint_body("lim-tight")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let refused = daemon.post("/v1/tokens", &mint_body("lim-tight")).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry_after), "Retry-After {retry_after}");
    // The same caller, another issuer: its own allowance.
    for _ in 0..3 {
        let reply = daemon.post("/v1/tokens", &mint_body("lim-loose")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    // A named caller's refusal is recorded like any other.
    let recorded = refusals(&daemon);
    let record = recorded
        .iter()
        .find(|r| r["code"] == "rate_limited")
        .expect("the 429 is in the audit log");
    assert_eq!(record["caller"]["uid"], my_uid());
}

/// Runs the real CLI as `nobody` to mint with `issuer`: the kernel reports another uid.
/// Lets `nobody` reach the socket inside the test's private directory.
async fn daemon_open_to_nobody(config: &str) -> TestDaemon {
    let daemon = TestDaemon::start_with_mode(config, 0o666).await;
    std::fs::set_permissions(
        daemon.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    daemon
}

#[tokio::test]
async fn one_uid_over_its_limit_waits_while_another_uid_keeps_minting() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root to run a second caller as nobody");
        return;
    }
    generate_key("lim-uid", Algorithm::Es256).await;
    let config = format!(
        "[issuers.lim-uid]\niss = \"https://lim-uid\"\naudiences = [\"api\"]\n\
         callers = [\"uid:0\", \"uid:{NOBODY}\"]\nrate_per_principal = \"3/m\"\n"
    );
    let daemon = daemon_open_to_nobody(&config).await;
    for _ in 0..3 {
        let reply = daemon.post("/v1/tokens", &mint_body("lim-uid")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let refused = daemon.post("/v1/tokens", &mint_body("lim-uid")).await;
    assert_eq!((refused.status, refused.code()), (429, "rate_limited"));
    let retry_after: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&retry_after), "Retry-After {retry_after}");
    for _ in 0..3 {
        let minted = mint_as_nobody(daemon.socket.clone(), "lim-uid").await;
        assert!(
            minted.status.success(),
            "{}",
            String::from_utf8_lossy(&minted.stderr)
        );
    }
    let refused = mint_as_nobody(daemon.socket.clone(), "lim-uid").await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("rate_limited"),
        "{stderr}"
    );
}

/// Raises this process's soft limit on open files to at least `wanted` (or the hard
/// limit): the in-process daemon and the connections held against it share it.
fn raise_open_files(wanted: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < wanted) {
        limit.current = Some(limit.maximum.map_or(wanted, |m| m.min(wanted)));
        setrlimit(Resource::Nofile, limit).unwrap();
    }
}

/// What the connection holder saw.
struct Held {
    /// Its connections at the end, open or not.
    streams: Vec<StdUnixStream>,
    /// How many times it reconnected after the daemon closed one.
    reconnects: usize,
    /// The first bytes of a refusal it read, if any.
    refusal: Option<String>,
}

/// On a thread of its own running as `nobody` (Linux credentials are per thread, so the
/// rest of the test process keeps root), opens `count` connections, signals `ready`,
/// then keeps reconnecting each one the daemon closes until `stop`, at most 20,000 times.
fn hold_connections(
    socket: PathBuf,
    count: usize,
    ready: std::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Held> {
    std::thread::spawn(move || {
        let nobody_gid = rustix::process::Gid::from_raw(NOBODY);
        let nobody_uid = rustix::process::Uid::from_raw(NOBODY);
        rustix::thread::set_thread_groups(&[]).unwrap();
        rustix::thread::set_thread_res_gid(nobody_gid, nobody_gid, nobody_gid).unwrap();
        rustix::thread::set_thread_res_uid(nobody_uid, nobody_uid, nobody_uid).unwrap();
        let connect = |socket: &Path| {
            let stream = StdUnixStream::connect(socket).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        };
        let mut streams: Vec<StdUnixStream> = (0..count).map(|_| connect(&socket)).collect();
        ready.send(()).unwrap();
        let (mut reconnects, mut refusal) = (0, None);
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) && reconnects < 20_000 {
            for stream in &mut streams {
                match stream.read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Ok(n) if n > 0 && refusal.is_none() => {
                        refusal = Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                    _ => {}
                }
                *stream = connect(&socket);
                reconnects += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Held {
            streams,
            reconnects,
            refusal,
        }
    })
}

/// Whether the daemon still holds `stream` open: nothing to read, and no end of file.
fn still_open(mut stream: &StdUnixStream) -> bool {
    let mut buf = [0u8; 512];
    matches!(stream.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[tokio::test]
async fn a_uid_holding_2000_idle_connections_cannot_stop_another_from_minting() {
    if my_uid() != 0 {
        eprintln!("skipping: needs root to hold connections as nobody");
        return;
    }
    raise_open_files(8192);
    generate_key("lim-slots", Algorithm::Es256).await;
    // The holder is a user no issuer names, as in the report; listen.max_connections is
    // 1024 per listener and max_connections_per_principal the default 64.
    let daemon = daemon_open_to_nobody(&issuer_toml("lim-slots", Algorithm::Es256)).await;
    let (ready, is_ready) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = hold_connections(daemon.socket.clone(), 2000, ready, stop.clone());
    tokio::task::spawn_blocking(move || is_ready.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("2,000 connections opened");
    // A liveness bound, not a speed check: a daemon whose slots the holder took would
    // never answer; 10 s leaves room for a loaded CI machine (1 s failed there once).
    for _ in 0..3 {
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            daemon.post("/v1/tokens", &mint_body("lim-slots")),
        )
        .await
        .expect("minted while another uid holds 2,000 connections");
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut held = tokio::task::spawn_blocking(move || holder.join().unwrap())
        .await
        .unwrap();
    assert!(
        held.reconnects > 0,
        "the daemon closed connections over the cap"
    );
    let refusal = held
        .refusal
        .take()
        .expect("a refused connection was told why");
    assert!(
        refusal.starts_with("HTTP/1.1 429") && refusal.contains("too_many_connections"),
        "{refusal}"
    );
    // Connections the daemon has not accepted yet look open too: give it time to refuse
    // the last ones the holder made.
    let mut open = 0;
    for _ in 0..50 {
        open = held.streams.iter().filter(|s| still_open(s)).count();
        if open <= 64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(open <= 64, "the daemon kept {open} connections of one uid");
}

/// Sends `head` on a fresh connection and returns the status of the first response,
/// ignoring a failed write: the daemon may answer and close before it reads everything.
async fn first_status(socket: &Path, head: &[u8]) -> u16 {
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let _ = stream.write_all(head).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("answered within 5 s")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf[9..12]).parse().unwrap()
}

#[tokio::test]
async fn an_80_kib_header_gets_431_and_a_15_kib_one_is_served() {
    let daemon = TestDaemon::start("").await;
    let head = |size: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-filler: {}\r\n\r\n",
            "a".repeat(size)
        )
    };
    assert_eq!(
        first_status(&daemon.socket, head(80 * 1024).as_bytes()).await,
        431
    );
    assert_eq!(
        first_status(&daemon.socket, head(15 * 1024).as_bytes()).await,
        200
    );
}

#[tokio::test]
async fn a_declared_10_gb_body_gets_413_at_once_without_100_continue() {
    generate_key("lim-body", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("lim-body", Algorithm::Es256)).await;
    for path in ["/v1/tokens", "/v1/verify"] {
        let mut conn = RawConnection::open(&daemon.socket).await;
        conn.send(
            format!(
                "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                 content-length: 10000000000\r\nexpect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        // The first response must be the refusal: a 100 Continue would come first.
        let (status, json) = tokio::time::timeout(Duration::from_secs(5), conn.reply())
            .await
            .expect("answered at once, without the body");
        assert_eq!(
            (status, json["error"]["code"].as_str()),
            (413, Some("body_too_large")),
            "{path}"
        );
    }
    // Refusals on the signing routes are recorded; verification's are not.
    let recorded = refusals(&daemon);
    assert!(
        recorded
            .iter()
            .any(|r| r["code"] == "body_too_large" && r["request"] == "POST /v1/tokens")
    );
    assert!(
        !recorded.iter().any(|r| r["request"] == "POST /v1/verify"),
        "{recorded:?}"
    );
    let reply = daemon.post("/v1/tokens", &mint_body("lim-body")).await;
    assert_eq!(reply.status, 200);
}

/// Python run as another uid: for each path after the socket (argv[1]), a POST that
/// declares a 10 GB body and sends none; prints the status codes.
const DECLARE_10_GB: &str = r#"
import socket, sys
codes = []
for path in sys.argv[2:]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(("POST " + path + " HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               "content-length: 10000000000\r\n\r\n").encode())
    codes.append(s.recv(4096).split(b" ")[1].decode())
print(" ".join(codes))
"#;

#[tokio::test]
async fn a_caller_no_issuer_names_is_refused_before_its_declared_length_is_looked_at() {
    if my_uid() != 0 {
        eprintln!("skipped: needs root to connect as another uid");
        return;
    }
    generate_key("lim-order", Algorithm::Es256).await;
    let daemon = daemon_open_to_nobody(&issuer_toml("lim-order", Algorithm::Es256)).await;
    let socket = daemon.socket.clone();
    // As `nobody`, whom no issuer names and who is no admin: 403 on both groups of
    // audited routes, whatever the declared length.
    let status = tokio::task::spawn_blocking(move || {
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", DECLARE_10_GB])
            .arg(&socket)
            .args(["/v1/tokens", "/v1/issuers/lim-order/rotate"])
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.trim(), "403 403");
}

#[tokio::test]
async fn a_request_past_its_total_time_gets_503_and_the_daemon_keeps_serving() {
    generate_key("lim-slow", Algorithm::Es256).await;
    let config = format!(
        "{}[limits]\nrequest_timeout_seconds = 1\n",
        issuer_toml("lim-slow", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    let mut conn = RawConnection::open(&daemon.socket).await;
    // A body that stops arriving, well before the 10 s body deadline.
    conn.send(b"POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"issuer\":")
        .await;
    let (status, json) = tokio::time::timeout(Duration::from_secs(5), conn.reply())
        .await
        .expect("answered within 5 s");
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (503, Some("deadline_exceeded"))
    );
    assert!(
        refusals(&daemon)
            .iter()
            .any(|r| r["code"] == "deadline_exceeded" && r["request"] == "POST /v1/tokens")
    );
    let reply = daemon.post("/v1/tokens", &mint_body("lim-slow")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn an_idle_connection_is_closed_before_and_between_requests() {
    let daemon = TestDaemon::start("[limits]\nidle_timeout_seconds = 1\n").await;
    // Never a request.
    let mut silent = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    // One request, then silence on the kept-alive connection.
    let mut kept = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    for stream in [&mut silent, &mut kept] {
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all))
            .await
            .expect("the daemon closed the idle connection within 5 s")
            .unwrap();
    }
    assert!(
        eventually(5, async || daemon.get("/healthz").await.status == 200).await,
        "the daemon keeps serving"
    );
}
