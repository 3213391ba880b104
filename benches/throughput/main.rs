//! signetd's benchmark: what a caller gets, against the physical limits measured in the
//! same run (`docs/performance.md`).
//!
//! 1. The floor: raw `C_Sign` in this process (cryptoki, no signetd code) on the bench
//!    token, with the key as a token object and as a session copy, on 1 thread and on as
//!    many threads as the daemon has worker sessions.
//! 2. The disk: one 300-byte `write` + `fdatasync` in the audit directory; and the host:
//!    verifying a token and a resumed TLS 1.3 handshake with a client certificate, in
//!    this process (the floors of the verify and TLS rows).
//! 3. A real daemon (`signetd serve`, a process of its own) and this process as an
//!    independent load generator: `/v1/sign`, `/v1/tokens`, `/v1/verify` (plain and
//!    single-use) over the Unix socket with keep-alive clients, and minting over mutual
//!    TLS on a new connection per request that resumes the TLS session; at 1, 4, 16 and
//!    64 clients, then 256 clients past the queue bound. Then the same daemon with its
//!    audit log on tmpfs, one client: what the fsync costs a lone request.
//!
//! Every row reports ops/s, p50, p99 and p999, its ratio to the floor, and the CPU the
//! load generator and the daemon used. The same goes to a JSON file for comparing
//! commits. Nothing here asserts a speed. Run with `scripts/bench.sh` (`--help`).
//!
//! `--instructions N` times nothing: it counts the daemon's instructions per request
//! under callgrind (`instructions`), the repeatable measure of its CPU per request.

mod callgrind;
#[allow(dead_code)]
#[path = "../../tests/daemon/common.rs"]
mod common;
mod floor;
mod host;
mod instructions;
mod load;
#[allow(dead_code)]
#[path = "../../tests/daemon/tls/pki.rs"]
mod pki;
mod report;
mod setup;
mod stats;

use std::time::Duration;

use signetd::Algorithm;

use crate::floor::ObjectKind;
use crate::load::Op;
use crate::report::{Report, Row, Table};

/// What the command line asked for.
pub struct Options {
    pub seconds: f64,
    pub clients: Vec<usize>,
    pub overload_clients: usize,
    pub algorithms: Vec<Algorithm>,
    pub audit_dir: Option<std::path::PathBuf>,
    pub json: Option<std::path::PathBuf>,
    pub quick: bool,
    /// `--instructions N`: count instructions instead of timing rows.
    pub instructions: Option<usize>,
}

const USAGE: &str = "\
Usage: scripts/bench.sh [--quick] [--seconds N] [--clients 1,4,16,64] [--overload N]
                        [--algorithm ES256|EdDSA] [--audit-dir DIR] [--json FILE]
       scripts/bench.sh --instructions N [--algorithm ES256|EdDSA] [--json FILE]

  --quick       0.3 s per row (a smoke run for CI: every row, no thresholds)
  --seconds N   seconds per row (default 3)
  --clients L   client counts of the daemon rows (default 1,4,16,64)
  --overload N  clients of the row past the queue bound (default 256; 0: none)
  --algorithm   one algorithm only (default: ES256, then EdDSA)
  --audit-dir   where the daemon's audit log goes (default: a temporary directory
                under target/, on the disk the repository is on); the disk row
                measures the same filesystem
  --json FILE   where the JSON report goes (default target/bench/COMMIT.json)
  --instructions N
                instead of timing, count the daemon's instructions per request
                under valgrind's callgrind, N sequential requests per row, split
                into C_SignInit + C_Sign and the rest: repeatable on a noisy
                machine (default JSON target/bench/COMMIT-instructions.json)
";

fn options() -> Options {
    let mut o = Options {
        seconds: 3.0,
        clients: vec![1, 4, 16, 64],
        overload_clients: 256,
        algorithms: vec![Algorithm::Es256, Algorithm::EdDsa],
        audit_dir: None,
        json: None,
        quick: false,
        instructions: None,
    };
    let mut args = std::env::args().skip(1);
    let fail = |why: String| -> ! {
        eprintln!("bench: {why}\n\n{USAGE}");
        std::process::exit(2)
    };
    // The options only the timed rows use, given: `--instructions` refuses them.
    let mut timed = Vec::new();
    while let Some(arg) = args.next() {
        if [
            "--quick",
            "--seconds",
            "--clients",
            "--overload",
            "--audit-dir",
        ]
        .contains(&arg.as_str())
        {
            timed.push(arg.clone());
        }
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--quick" => {
                o.quick = true;
                o.seconds = 0.3;
            }
            "--seconds" => {
                o.seconds = value()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--seconds: {e}")))
            }
            "--clients" => {
                o.clients = value()
                    .split(',')
                    .map(|n| {
                        n.parse()
                            .unwrap_or_else(|e| fail(format!("--clients: {e}")))
                    })
                    .collect()
            }
            "--overload" => {
                o.overload_clients = value()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--overload: {e}")))
            }
            "--algorithm" => {
                o.algorithms = vec![
                    value()
                        .parse()
                        .unwrap_or_else(|e| fail(format!("--algorithm: {e}"))),
                ]
            }
            "--instructions" => {
                let n: usize = value()
                    .parse()
                    .unwrap_or_else(|e| fail(format!("--instructions: {e}")));
                if n == 0 {
                    fail("--instructions: at least one request per row".to_string());
                }
                o.instructions = Some(n);
            }
            "--audit-dir" => o.audit_dir = Some(value().into()),
            "--json" => o.json = Some(value().into()),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => fail(format!("unknown argument {other}")),
        }
    }
    if o.instructions.is_some() && !timed.is_empty() {
        fail(format!(
            "--instructions times nothing and keeps its audit log on tmpfs: {} apply only to the timed rows",
            timed.join(", ")
        ));
    }
    o
}

/// The rows each client count gets, in this order: the mint rows come before the
/// single-use row, which verifies the tokens they minted.
const OPS: [Op; 5] = [
    Op::Sign,
    Op::Mint,
    Op::Verify,
    Op::VerifySingleUse,
    Op::MintTls,
];

/// The objects the daemon signs with (`[pkcs11] session_copies`, on by default), so the
/// ratio uses the matching floor.
const DAEMON_OBJECTS: ObjectKind = ObjectKind::Session;

fn main() {
    let o = options();
    let duration = Duration::from_secs_f64(o.seconds);
    let bench = setup::Bench::new(&o);
    let mut report = Report::new(&o, bench.sessions);
    if let Some(n) = o.instructions {
        instructions::run(&bench, &o, n, &report);
        return;
    }

    // The disk first, alone: both filesystems the daemon rows will use.
    let disk = floor::fsync_latency(&bench.audit_parent, duration.max(Duration::from_secs(1)));
    let tmpfs = floor::fsync_latency(std::path::Path::new("/dev/shm"), Duration::from_millis(300));
    report.disk(disk, tmpfs);
    report.disk_in_place(floor::fsync_in_place_latency(
        &bench.audit_parent,
        duration.max(Duration::from_secs(1)),
    ));
    report.disk_after_idle(floor::fsync_latency_after(
        &bench.audit_parent,
        duration.max(Duration::from_secs(1)),
        Duration::from_millis(1),
    ));
    report.thread_round_trip(floor::thread_round_trip(
        duration.max(Duration::from_secs(1)),
    ));

    let mut tables: Vec<Table> = Vec::new();
    {
        let token = bench.open_token();
        for &algorithm in &o.algorithms {
            let kid = bench.kid(algorithm);
            let mut floors = Vec::new();
            for object in [ObjectKind::Token, ObjectKind::Session] {
                for threads in [1, bench.sessions] {
                    floors.push(token.floor(kid, algorithm, object, threads, duration));
                }
            }
            tables.push(Table::new(algorithm, floors, DAEMON_OBJECTS));
        }
    }

    // A resumed TLS 1.3 handshake with a client certificate, in-process: the TLS rows'
    // floor.
    let server = bench.tls_server();
    let threads = [1, report.cores()];
    let tls =
        threads.map(|n| host::resumed_handshakes(|| bench.tls_client(), &server, n, duration));
    report.tls(tls.to_vec());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Audit log on disk: every row.
    let daemon = bench.serve(false);
    for table in &mut tables {
        let target = runtime.block_on(daemon.target(table.algorithm));
        // The host verifying the verify rows' token in-process: their floor.
        let key = runtime.block_on(daemon.verifying_key(&kid_of(&target.token)));
        table.verify_floors = threads
            .map(|n| host::verification(&key, &target.token, n, duration))
            .to_vec();
        // The HTTP round trip alone, for the breakdown of a lone request.
        let outcome = runtime.block_on(load::run(&target, Op::Health, 1, duration, &daemon.pid()));
        table.push(Row::new(Op::Health, 1, "disk", outcome));
        for &clients in &o.clients {
            let mut verified_per_second = 0.0;
            for op in OPS {
                if op == Op::VerifySingleUse {
                    // No faster than a plain verification: that many unused tokens last.
                    let want = verified_per_second * duration.as_secs_f64() * 1.2;
                    runtime.block_on(load::stock(&target, want as usize, &daemon.pid()));
                }
                let outcome =
                    runtime.block_on(load::run(&target, op, clients, duration, &daemon.pid()));
                if op == Op::Verify {
                    verified_per_second = outcome.ok as f64 / outcome.elapsed.as_secs_f64();
                }
                table.push(Row::new(op, clients, "disk", outcome));
            }
        }
        if o.overload_clients > 0 {
            let outcome = runtime.block_on(load::run(
                &target,
                Op::Mint,
                o.overload_clients,
                duration,
                &daemon.pid(),
            ));
            table.push(Row::new(Op::Mint, o.overload_clients, "disk", outcome));
        }
        table.resumed =
            runtime.block_on(load::resumes(&daemon.tls_authority(), daemon.tls_client()));
    }
    drop(daemon);

    // Audit log on tmpfs: a lone client, so the difference to the disk rows is the fsync.
    let daemon = bench.serve(true);
    for table in &mut tables {
        let target = runtime.block_on(daemon.target(table.algorithm));
        for op in [Op::Sign, Op::Mint] {
            let outcome = runtime.block_on(load::run(&target, op, 1, duration, &daemon.pid()));
            table.push(Row::new(op, 1, "tmpfs", outcome));
        }
    }
    drop(daemon);

    report.print_machine();
    for table in &tables {
        table.print(&report);
    }
    report.write(&o, tables);
}

/// The `kid` in a token's header.
fn kid_of(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_string()
}
