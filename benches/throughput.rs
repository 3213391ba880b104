//! Throughput of signing and minting, as a ratio to the in-process PKCS#11 floor
//! measured in the same run on the same token.
//!
//! Rows, each timed for `--seconds` (default 3):
//! 1. the floor: raw `C_Sign` (cryptoki, no signetd code) on one session per thread, one
//!    thread per worker session;
//! 2. `Hsm::sign` through signetd's session pool, driven by concurrent async tasks;
//! 3. `POST /v1/tokens` to a real daemon over its Unix socket, keep-alive connections,
//!    without an audit log (the cost of everything else);
//! 4. the same with the audit log on disk (under `target/`), as the daemon always runs:
//!    the difference between rows 3 and 4 is what auditing costs, and the row reports
//!    how many records shared each fsync.
//!
//! Run with `scripts/bench.sh` (or `cargo bench --bench throughput -- --help`). The token,
//! the daemon and the client are the integration tests' harness.

#[allow(dead_code)]
#[path = "../tests/daemon/common.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use hyper::Method;
use hyper::body::Bytes;
use signetd::audit::{AuditError, AuditLog, AuditSink, AuditStats, Entry, Expected};
use signetd::client::{Connection, Endpoint};
use signetd::hsm::Hsm;
use signetd::service::wiring::Ports;
use signetd::signer::{KeyRef, SignInput};
use signetd::util::BoxFuture;
use signetd::{Algorithm, Service};

struct Options {
    seconds: f64,
    connections: usize,
    algorithm: Algorithm,
    audit_dir: Option<std::path::PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        seconds: 3.0,
        connections: 16,
        algorithm: Algorithm::Es256,
        audit_dir: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seconds" => o.seconds = value.parse().expect("--seconds N"),
            "--connections" => o.connections = value.parse().expect("--connections N"),
            "--algorithm" => o.algorithm = value.parse().expect("--algorithm ES256|EdDSA"),
            "--audit-dir" => o.audit_dir = Some(value.into()),
            "--bench" => {
                i += 1;
                continue;
            }
            "--help" | "-h" => {
                println!(
                    "throughput [--seconds N] [--connections N] [--algorithm ES256|EdDSA] [--audit-dir DIR]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

fn main() {
    let o = options();
    let sessions = std::thread::available_parallelism().map_or(2, |n| n.get());
    let token = common::token();
    // One uid mints as fast as it can, on as many connections as asked: lift the limits
    // per caller, or they would be what is measured.
    let config_text = format!(
        "{}{}rate_per_principal = \"1000000/s\"\nrate_per_issuer = \"1000000/s\"\n\
         [limits]\nmax_connections_per_principal = 1024\n",
        token.pkcs11_toml_with(sessions),
        common::issuer_toml("bench", o.algorithm)
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hsm = common::hsm_with_sessions(sessions);
    let key = runtime.block_on(common::generate_key_for(
        "bench",
        o.algorithm,
        signetd::keys::KeyPurpose::Jwt,
    ));
    let duration = Duration::from_secs_f64(o.seconds);
    println!(
        "signetd throughput: {} on SoftHSM2, {sessions} worker sessions, {} s per row",
        o.algorithm, o.seconds
    );

    let floor = raw_floor(
        token.var("SIGNETD_PKCS11_MODULE"),
        token.var("SIGNETD_TOKEN_LABEL"),
        &token.pin(),
        &key.kid,
        o.algorithm,
        sessions,
        duration,
    );
    row("C_Sign in-process (floor)", floor, floor);

    let pool = runtime.block_on(pool_rate(&hsm, &key, o.algorithm, sessions * 8, duration));
    row("Hsm::sign via the session pool", pool, floor);

    // On disk under target/ unless told where: the filesystem decides what fsync costs.
    let parent = o
        .audit_dir
        .clone()
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    // Minting with and without the log, alternated over three rounds of a third of the
    // row time each: the medians are compared, so drift in the machine's load (which
    // shows in the floor from run to run) hits both alike.
    let round = duration / 3;
    let (mut bare, mut audited, mut stats) = (Vec::new(), Vec::new(), AuditStats::default());
    for _ in 0..3 {
        let (rate, _) = runtime.block_on(mint_rate(
            &config_text,
            hsm.clone(),
            None,
            o.connections,
            round,
        ));
        bare.push(rate);
        let audit_dir = tempfile::tempdir_in(&parent).unwrap();
        let (rate, round_stats) = runtime.block_on(mint_rate(
            &config_text,
            hsm.clone(),
            Some(audit_dir.path()),
            o.connections,
            round,
        ));
        audited.push(rate);
        stats.records += round_stats.records;
        stats.writes += round_stats.writes;
    }
    let (bare, audited) = (median(bare), median(audited));
    row(
        &format!("POST /v1/tokens, no audit ({} conns)", o.connections),
        bare,
        floor,
    );
    row(
        &format!("POST /v1/tokens, audited ({} conns)", o.connections),
        audited,
        floor,
    );
    println!(
        "audit cost: {:.1}% of mint throughput (medians of 3 alternating rounds); {:.1} records per fsync ({} records, {} writes)",
        (1.0 - audited / bare) * 100.0,
        stats.records as f64 / stats.writes.max(1) as f64,
        stats.records,
        stats.writes
    );
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn row(name: &str, rate: f64, floor: f64) {
    println!(
        "{name:<42} {rate:>10.0} ops/s   {:>5.2}x floor",
        rate / floor
    );
}

fn input(algorithm: Algorithm) -> Vec<u8> {
    match algorithm {
        Algorithm::Es256 => vec![7u8; 32],
        Algorithm::EdDsa => b"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJiZW5jaCJ9".to_vec(),
    }
}

/// Raw cryptoki, one session per thread: what any PKCS#11 program gets from this token.
fn raw_floor(
    module: &str,
    label: &str,
    pin: &str,
    kid: &str,
    algorithm: Algorithm,
    threads: usize,
    duration: Duration,
) -> f64 {
    let ctx = Pkcs11::new(module).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            ctx.get_token_info(*s)
                .map(|i| i.label().trim_end() == label)
                .unwrap_or(false)
        })
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (ctx, count) = (ctx.clone(), count.clone());
            scope.spawn(move || {
                let session = ctx.open_rw_session(slot).unwrap();
                let _ = session.login(UserType::User, Some(&pin.to_string().into()));
                let key = session
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Id(kid.as_bytes().to_vec()),
                    ])
                    .unwrap()[0];
                let mechanism = match algorithm {
                    Algorithm::Es256 => Mechanism::Ecdsa,
                    Algorithm::EdDsa => {
                        Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                            cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
                        ))
                    }
                };
                let data = input(algorithm);
                while started.elapsed() < duration {
                    session.sign(&mechanism, key, &data).unwrap();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn pool_rate(
    hsm: &Arc<Hsm>,
    key: &signetd::keys::StoredKey,
    algorithm: Algorithm,
    tasks: usize,
    duration: Duration,
) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (hsm, count) = (hsm.clone(), count.clone());
        let (kid, public_key) = (key.kid.clone(), key.public_key.clone());
        handles.push(tokio::spawn(async move {
            let sign_input = match algorithm {
                Algorithm::Es256 => SignInput::Digest([7u8; 32]),
                Algorithm::EdDsa => SignInput::Message(input(algorithm)),
            };
            while started.elapsed() < duration {
                hsm.sign(
                    KeyRef {
                        kid: &kid,
                        algorithm,
                        public_key: &public_key,
                    },
                    sign_input.clone(),
                )
                .await
                .unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Mints over a real socket for `duration`; audited into `audit_dir` if given.
async fn mint_rate(
    config_text: &str,
    hsm: Arc<Hsm>,
    audit_dir: Option<&std::path::Path>,
    connections: usize,
    duration: Duration,
) -> (f64, AuditStats) {
    let dir = tempfile::tempdir().unwrap();
    let audit_table = audit_dir.map_or_else(String::new, |d| {
        format!("[audit]\ndir = {:?}\n", d.display().to_string())
    });
    // The state store is the test token's (common::store_url): its keys are recorded there.
    let config = common::daemon_config(config_text, &audit_table, &dir);
    let (store, _) = signetd::service::wiring::open_store(&config, &hsm)
        .await
        .unwrap();
    let log = match audit_dir {
        Some(_) => Some(Arc::new(
            AuditLog::open(&config, hsm.clone(), store.clone())
                .await
                .unwrap(),
        )),
        None => None,
    };
    let sink: Arc<dyn AuditSink> = match &log {
        Some(log) => log.clone(),
        None => Arc::new(Discard),
    };
    let ports = Ports::with_audit(&hsm, store, sink);
    let service = Arc::new(Service::new(config, hsm, ports).await.unwrap());
    let daemon = common::TestDaemon::serve(dir, service, 0o600).await;
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..connections {
        let endpoint = Endpoint::Unix(daemon.socket.clone());
        let (count, failed) = (count.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut connection = Connection::open(&endpoint).await.unwrap();
            let body = Bytes::from_static(br#"{"issuer":"bench","aud":"api","sub":"bench"}"#);
            let json = [("content-type", "application/json")];
            while started.elapsed() < duration {
                let response = connection
                    .request(Method::POST, "/v1/tokens", &json, body.clone())
                    .await
                    .unwrap();
                if !response.status.is_success() {
                    failed.store(true, Ordering::Relaxed);
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    daemon.shutdown().await;
    let stats = log.map(|l| l.stats()).unwrap_or_default();
    assert!(
        !failed.load(Ordering::Relaxed),
        "a mint failed during the benchmark"
    );
    (rate, stats)
}

/// An audit sink that keeps nothing, to measure what the real log costs. It lives here,
/// not in the daemon: signetd's config has no way to turn auditing off.
struct Discard;

impl AuditSink for Discard {
    fn expect(&self) -> Option<Expected> {
        None
    }

    fn append(&self, _: Entry, _: Option<Expected>) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn checkpoint(&self) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn close(&self, _: Entry) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(std::future::ready(Ok(0)))
    }

    fn forget_key(&self) {}

    fn is_healthy(&self) -> bool {
        true
    }
}
