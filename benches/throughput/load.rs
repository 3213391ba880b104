//! The load generator: clients that each send one request after another and time each,
//! over the daemon's Unix socket (keep-alive) or over mutual TLS (a new connection per
//! request, resuming the TLS session).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Method;
use hyper::body::Bytes;
use signetd::Algorithm;
use signetd::client::{Connection, Endpoint};

use crate::stats::{Samples, context_switches, cpu_seconds};

/// What a row's clients send.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `GET /healthz`: the HTTP round trip over the socket and nothing else.
    Health,
    /// `POST /v1/sign` to a raw-signing issuer.
    Sign,
    /// `POST /v1/tokens`.
    Mint,
    /// `POST /v1/verify` of one token, again and again.
    Verify,
    /// `POST /v1/verify` with `single_use`, each token once (minted by earlier rows).
    VerifySingleUse,
    /// `POST /v1/tokens` over mutual TLS, a new connection per request whose handshake
    /// resumes the session of the one before.
    MintTls,
}

impl Op {
    /// Whether the row's requests each call `C_Sign` (verification does not).
    pub fn signs(self) -> bool {
        matches!(self, Op::Sign | Op::Mint | Op::MintTls)
    }

    pub fn label(self) -> &'static str {
        match self {
            Op::Health => "GET /healthz",
            Op::Sign => "POST /v1/sign",
            Op::Mint => "POST /v1/tokens",
            Op::Verify => "POST /v1/verify",
            Op::VerifySingleUse => "POST /v1/verify single_use",
            Op::MintTls => "POST /v1/tokens mTLS resumed",
        }
    }
}

/// Where the clients go and what they name.
#[derive(Clone)]
pub struct Target {
    pub socket: Endpoint,
    pub tls: Endpoint,
    pub algorithm: Algorithm,
    pub issuer: String,
    pub raw_issuer: String,
    /// One token to verify again and again.
    pub token: String,
    /// Fresh tokens for single-use verification, filled by the mint rows.
    pub unused: Arc<Mutex<Vec<String>>>,
}

/// What one row measured.
pub struct Outcome {
    pub ok: usize,
    pub refused: BTreeMap<String, usize>,
    pub samples: Samples,
    pub elapsed: Duration,
    /// CPU seconds this process (the load generator) used during the row.
    pub loadgen_cpu: f64,
    /// CPU seconds the daemon used during the row.
    pub daemon_cpu: f64,
    /// Voluntary context switches of the daemon's threads during the row.
    pub daemon_switches: u64,
    /// A single-use row ran out of unused tokens before its time was up.
    pub ran_dry: bool,
}

/// Keeps at most this many unused tokens: plenty for the single-use rows.
const UNUSED_CAP: usize = 400_000;

/// Mints, untimed, until `target` holds `want` unused tokens (at most the cap), so a
/// single-use row does not run out before its time is up.
pub async fn stock(target: &Target, want: usize, daemon_pid: &str) {
    let want = want.min(UNUSED_CAP);
    while target.unused.lock().unwrap().len() < want {
        run(target, Op::Mint, 16, Duration::from_millis(500), daemon_pid).await;
    }
}

/// Runs `clients` clients against `target` for `duration`.
pub async fn run(
    target: &Target,
    op: Op,
    clients: usize,
    duration: Duration,
    daemon_pid: &str,
) -> Outcome {
    // Every client connects before the clock starts.
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(match op {
            Op::MintTls => None,
            _ => Some(Connection::open(&target.socket).await.unwrap()),
        });
    }
    let (cpu0, daemon0) = (cpu_seconds("self"), cpu_seconds(daemon_pid));
    let switches0 = context_switches(daemon_pid);
    let began = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|connection| {
            let target = target.clone();
            tokio::spawn(async move { client(target, op, connection, began, duration).await })
        })
        .collect();
    let mut outcome = Outcome {
        ok: 0,
        refused: BTreeMap::new(),
        samples: Samples::default(),
        elapsed: Duration::ZERO,
        loadgen_cpu: 0.0,
        daemon_cpu: 0.0,
        daemon_switches: 0,
        ran_dry: false,
    };
    for task in tasks {
        let (ok, refused, samples, ran_dry) = task.await.unwrap();
        outcome.ok += ok;
        for (code, n) in refused {
            *outcome.refused.entry(code).or_default() += n;
        }
        outcome.samples.extend(samples);
        outcome.ran_dry |= ran_dry;
    }
    outcome.elapsed = began.elapsed();
    outcome.loadgen_cpu = cpu_seconds("self") - cpu0;
    outcome.daemon_cpu = cpu_seconds(daemon_pid) - daemon0;
    outcome.daemon_switches = context_switches(daemon_pid).saturating_sub(switches0);
    outcome
}

/// Sends `n` requests of `op` one after another on `connection`, untimed (the
/// instruction count's rows). Every request must succeed; minted tokens are kept for
/// the single-use row.
pub async fn sequential(connection: &mut Connection, target: &Target, op: Op, n: usize) {
    let json = [("content-type", "application/json")];
    let mut minted = Vec::new();
    for _ in 0..n {
        let (method, path, body) =
            request(target, op).unwrap_or_else(|| panic!("{}: no unused token left", op.label()));
        let response = connection
            .request(method, path, &json, body)
            .await
            .unwrap_or_else(|e| panic!("{} failed: {e}", op.label()));
        assert!(
            response.status.is_success(),
            "{}: {}",
            op.label(),
            code_of(&response.body)
        );
        if op == Op::Mint {
            minted.push(token_of(&response.body));
        }
    }
    target.unused.lock().unwrap().extend(minted);
}

type ClientResult = (usize, BTreeMap<String, usize>, Samples, bool);

async fn client(
    target: Target,
    op: Op,
    mut connection: Option<Connection>,
    began: Instant,
    duration: Duration,
) -> ClientResult {
    let json = [("content-type", "application/json")];
    let (mut ok, mut refused, mut samples) = (0, BTreeMap::new(), Samples::with_capacity(4096));
    let mut ran_dry = false;
    let mut minted = Vec::new();
    while began.elapsed() < duration {
        let (method, path, body) = match request(&target, op) {
            Some(request) => request,
            None => {
                ran_dry = true;
                break;
            }
        };
        let t = Instant::now();
        let response = match &mut connection {
            Some(connection) => connection.request(method, path, &json, body).await,
            None => match Connection::open(&target.tls).await {
                Ok(mut fresh) => fresh.request(method, path, &json, body).await,
                Err(e) => Err(e),
            },
        };
        let took = t.elapsed();
        let response = response.unwrap_or_else(|e| panic!("{} failed: {e}", op.label()));
        samples.push(took);
        if response.status.is_success() {
            ok += 1;
            if matches!(op, Op::Mint | Op::MintTls) {
                minted.push(token_of(&response.body));
            }
        } else {
            *refused.entry(code_of(&response.body)).or_default() += 1;
        }
    }
    if !minted.is_empty() {
        let mut unused = target.unused.lock().unwrap();
        let room = UNUSED_CAP.saturating_sub(unused.len());
        unused.extend(minted.into_iter().take(room));
    }
    (ok, refused, samples, ran_dry)
}

/// The next request of `op`, or `None` when a single-use row has no unused token left.
fn request(target: &Target, op: Op) -> Option<(Method, &'static str, Bytes)> {
    let body = match op {
        Op::Health => return Some((Method::GET, "/healthz", Bytes::new())),
        Op::Sign => match target.algorithm {
            Algorithm::Es256 => serde_json::json!({
                "issuer": target.raw_issuer,
                "digest": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()),
            }),
            Algorithm::EdDsa => serde_json::json!({
                "issuer": target.raw_issuer,
                "message": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>().repeat(2)),
            }),
        },
        Op::Mint | Op::MintTls => serde_json::json!({
            "issuer": target.issuer, "aud": "api", "sub": "bench",
        }),
        Op::Verify => serde_json::json!({"token": target.token, "audience": "api"}),
        Op::VerifySingleUse => {
            let token = target.unused.lock().unwrap().pop()?;
            serde_json::json!({"token": token, "audience": "api", "single_use": true})
        }
    };
    let path = match op {
        Op::Sign => "/v1/sign",
        Op::Mint | Op::MintTls => "/v1/tokens",
        Op::Verify | Op::VerifySingleUse => "/v1/verify",
        Op::Health => unreachable!("answered above"),
    };
    let body = Bytes::from(serde_json::to_vec(&body).unwrap());
    Some((Method::POST, path, body))
}

fn token_of(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["token"].as_str().unwrap().to_string()
}

fn code_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "<no code>".to_string())
}

/// Whether a second handshake with `config` resumes the first one's session: the TLS row
/// is labelled as resumed, so this is checked rather than assumed.
pub async fn resumes(authority: &str, config: Arc<rustls::ClientConfig>) -> bool {
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let stream = tokio::net::TcpStream::connect(authority).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, stream).await.unwrap();
        kinds.push(tls.get_ref().1.handshake_kind());
        // TLS 1.3 tickets arrive after the handshake: read until the server has sent
        // them (an HTTP request gets a response, which comes after the tickets).
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tls.read_to_end(&mut reply).await;
    }
    kinds[1] == Some(rustls::HandshakeKind::Resumed)
}
