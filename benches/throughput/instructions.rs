//! `--instructions N`: what one request costs in instructions, counted by valgrind's
//! callgrind in a real daemon, split into the token's share (`C_SignInit` and `C_Sign`,
//! the work the floor rows time) and everything else.
//!
//! Timed rows on a shared or virtual machine move by tens of percent between runs;
//! instruction counts do not, so they are what tells whether a change to the daemon's
//! CPU per request helped. They count only user-space instructions: the kernel's work
//! (socket reads and writes, wake-ups, the fsync) and time spent waiting are not in
//! them, and the timed rows remain the measure of speed. Under valgrind the CPU looks
//! older than it is (no SHA extensions), so SHA-256 counts several times what it costs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use signetd::Algorithm;

use signetd::client::Connection;

use crate::callgrind::{self, Dump};
use crate::load::{self, Op};
use crate::setup::Bench;

/// The token's share of a request: the two calls the floor rows time.
const TOKEN_CALLS: [&str; 2] = ["C_SignInit", "C_Sign"];

/// Requests sent before each counted row, so first-time work (a connection, a cache
/// filled) is not counted.
const WARM_UP: usize = 20;

/// How long the daemon idles, counted, to learn what its background work costs per
/// second besides the lifecycle tick's own; that is taken off each row by its length.
/// Two whole periods of the default tick (5 s), so it holds two ticks' other work (the
/// state store's reads, on sqlx's threads) wherever they fall.
const IDLE: Duration = Duration::from_secs(10);

/// The lifecycle tick's work: its loop on a runtime thread, and the token reads its
/// reload makes on a PKCS#11 worker (a request makes one only when a key's handle is
/// unknown, which these rows, after their warm-up, never meet). A tick costs about ten
/// million instructions under valgrind, so one tick more or fewer in a row moved it by
/// more than the changes this count is for; each dump's ticks are taken off by name.
const TICK_CALLS: [&str; 3] = [
    "signetd::lifecycle::run::{{closure}}",
    "signetd::hsm::objects::key_pairs",
    "signetd::hsm::objects::key_pair_by_id",
];

/// What the lifecycle ticks in `dump` ran.
fn ticks(dump: &Dump) -> u64 {
    TICK_CALLS.iter().map(|f| dump.calls_to(f)).sum()
}

/// How many times a row is counted before the bench gives up on a consistent dump.
const ATTEMPTS: usize = 3;

/// The rows, in order.
const OPS: [Op; 5] = [
    Op::Health,
    Op::Sign,
    Op::Mint,
    Op::Verify,
    Op::VerifySingleUse,
];

/// One row's count, per request.
#[derive(serde::Serialize)]
struct Count {
    op: Op,
    requests: usize,
    /// Every instruction the daemon ran during the row, per request, less its
    /// lifecycle ticks and the idle daemon's other work for the row's length.
    total: f64,
    /// Inside `C_SignInit` and `C_Sign`, per request (the audit checkpoints that the
    /// row's records bring included); empty for a row that signs nothing.
    token: BTreeMap<String, f64>,
}

impl Count {
    fn in_token(&self) -> f64 {
        self.token.values().sum()
    }
}

/// Runs the daemon under callgrind and counts `n` sequential requests of each row, for
/// each algorithm; prints a table and writes the JSON report.
pub fn run(bench: &Bench, o: &crate::Options, n: usize, report: &crate::report::Report) {
    for tool in ["valgrind", "callgrind_control"] {
        let found = Command::new(tool).arg("--version").output();
        if !found.is_ok_and(|out| out.status.success()) {
            eprintln!("bench: --instructions needs {tool}: sudo apt-get install -y valgrind");
            std::process::exit(1);
        }
    }
    let out = tempfile::tempdir().unwrap();
    let dumps = out.path().join("callgrind.out");
    let out_file = format!("--callgrind-out-file={}", dumps.display());
    let mut wrapper = vec![
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--quiet",
    ];
    wrapper.extend(callgrind::VALGRIND_OPTIONS);
    wrapper.push(&out_file);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The audit log on tmpfs: the fsync is the kernel's work, not counted either way. A
    // checkpoint every 1,000 records and never by time: how many a row holds must not
    // depend on how long valgrind took.
    let daemon = bench.serve_under(
        true,
        "checkpoint_seconds = 3600\n",
        &wrapper,
        Duration::from_secs(180),
    );
    let pid = daemon.pid();
    let mut control = Control {
        pid: &pid,
        dumps: &dumps,
        taken: 0,
        kept: Some(out),
    };
    let (idle, idle_seconds) =
        control.count_consistent("idling", || {}, || std::thread::sleep(IDLE));
    // A rename would leave the ticks in the rows unseen: fail instead.
    for f in &TICK_CALLS[..2] {
        assert!(
            idle.calls_to(f) > 0,
            "callgrind counted no call to {f} in {IDLE:?} of idling: the lifecycle tick's \
             functions were renamed (update TICK_CALLS)"
        );
    }
    let background_per_second = idle.total.saturating_sub(ticks(&idle)) as f64 / idle_seconds;

    let mut tables = Vec::new();
    for &algorithm in &o.algorithms {
        let target = runtime.block_on(daemon.target(algorithm));
        let mut counts = Vec::new();
        for op in OPS {
            let what = format!("{algorithm} {}", op.label());
            let stock = |want: usize| {
                // Single-use tokens, minted while nothing is counted.
                let lacking = want.saturating_sub(target.unused.lock().unwrap().len());
                runtime.block_on(async {
                    let mut minter = Connection::open(&target.socket).await.unwrap();
                    load::sequential(&mut minter, &target, Op::Mint, lacking).await
                });
            };
            if op == Op::VerifySingleUse {
                stock(WARM_UP);
            }
            // The row's one connection: accepted and warmed up before counting starts.
            let mut connection = runtime.block_on(Connection::open(&target.socket)).unwrap();
            runtime.block_on(load::sequential(&mut connection, &target, op, WARM_UP));
            let (dump, seconds) = control.count_consistent(
                &what,
                || {
                    if op == Op::VerifySingleUse {
                        stock(n);
                    }
                },
                || runtime.block_on(load::sequential(&mut connection, &target, op, n)),
            );
            if op.signs() {
                // Every signing request calls both: a count without them read the dump
                // wrong, or the module's symbols are hidden.
                for f in TOKEN_CALLS {
                    assert!(
                        dump.calls_to(f) > 0,
                        "callgrind counted no call to {f} in the {what} row"
                    );
                }
            }
            let background = ticks(&dump) as f64 + background_per_second * seconds;
            if background >= dump.total as f64 {
                panic!(
                    "the {what} row counted {} instructions, less than its background \
                     ({background:.0}: ticks {}, idle {:.0}/s for {seconds:.1} s); the dumps \
                     are in {}",
                    dump.total,
                    ticks(&dump),
                    background_per_second,
                    control.keep().display()
                );
            }
            counts.push(Count {
                op,
                requests: n,
                total: (dump.total as f64 - background) / n as f64,
                // A row that signs nothing has no token share to compare with; what a
                // checkpoint of its records costs in the token stays in its total.
                token: match op.signs() {
                    true => TOKEN_CALLS
                        .iter()
                        .map(|&f| (f.to_string(), dump.calls_to(f) as f64 / n as f64))
                        .collect(),
                    false => BTreeMap::new(),
                },
            });
        }
        tables.push((algorithm, counts));
    }
    drop(daemon);

    print(n, background_per_second, &tables);
    write(o, report, n, background_per_second, &tables);
}

/// The running daemon's callgrind, driven with `callgrind_control`.
struct Control<'a> {
    pid: &'a str,
    dumps: &'a Path,
    /// Dumps taken so far: callgrind numbers them from 1.
    taken: usize,
    /// The dumps' directory, removed at the end unless [`Control::keep`] kept it.
    kept: Option<tempfile::TempDir>,
}

impl Control<'_> {
    /// Counts what the daemon runs while `during` runs; returns the dump and how long
    /// it took.
    ///
    /// Counting stops before the dump: turning instrumentation off closes the calls
    /// still running (a thread's own loop, a tick caught half-way) with what they have
    /// run so far, and keeps the counts for the dump. The time is taken between the two
    /// switches' answers, each of which comes a little after the switch.
    fn count(&mut self, during: impl FnOnce()) -> (Dump, f64) {
        self.send("--instr=on");
        let began = Instant::now();
        during();
        self.send("--instr=off");
        let seconds = began.elapsed().as_secs_f64();
        self.send("--dump");
        self.taken += 1;
        let path = format!("{}.{}", self.dumps.display(), self.taken);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("callgrind wrote no dump {path}: {e}"));
        let dump = Dump::parse(&text);
        let taken = self.taken;
        if dump.part != Some(taken as u64) {
            panic!(
                "{path} is callgrind's part {:?}, not {taken}: a dump was taken that the \
                 bench did not ask for; the dumps are in {}",
                dump.part,
                self.keep().display()
            );
        }
        (dump, seconds)
    }

    /// Keeps the dumps' directory past the bench's end, for a failure's report.
    fn keep(&mut self) -> std::path::PathBuf {
        match self.kept.take() {
            Some(dir) => dir.keep(),
            None => self.dumps.parent().unwrap().to_path_buf(),
        }
    }

    /// [`Control::count`] of `counted` after `prepare` (not counted), again while the
    /// dump is not [`Dump::consistent`] for the functions read from it, at most
    /// [`ATTEMPTS`] times.
    fn count_consistent(
        &mut self,
        what: &str,
        mut prepare: impl FnMut(),
        mut counted: impl FnMut(),
    ) -> (Dump, f64) {
        for attempt in 1..=ATTEMPTS {
            prepare();
            let (dump, seconds) = self.count(&mut counted);
            if dump.consistent(&TOKEN_CALLS) && dump.consistent(&TICK_CALLS) {
                return (dump, seconds);
            }
            eprintln!(
                "bench: {what}: a call to the token or the tick ran across the start or end \
                 of the count; counting again ({attempt} of {ATTEMPTS})"
            );
        }
        panic!(
            "{what}: no consistent callgrind dump in {ATTEMPTS} tries; the dumps are in {}",
            self.keep().display()
        );
    }

    fn send(&self, command: &str) {
        let out = Command::new("callgrind_control")
            .args([command, self.pid])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "callgrind_control {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn print(n: usize, background_per_second: f64, tables: &[(Algorithm, Vec<Count>)]) {
    for (algorithm, counts) in tables {
        println!(
            "\n== {algorithm}: instructions per request (callgrind, user space only; {n} \
             sequential requests per row on one keep-alive connection; the lifecycle \
             ticks taken off, and the idle daemon's other work, {:.2}M/s) ==",
            background_per_second / 1e6
        );
        println!(
            "  {:<28} {:>10} {:>11} {:>10} {:>10} {:>14}",
            "row", "total", "C_SignInit", "C_Sign", "the rest", "total / token"
        );
        for count in counts {
            let token = count.in_token();
            let cell = |f: &str| {
                count
                    .token
                    .get(f)
                    .map_or("-".to_string(), |&v| thousands(v))
            };
            println!(
                "  {:<28} {:>10} {:>11} {:>10} {:>10} {:>14}",
                count.op.label(),
                thousands(count.total),
                cell("C_SignInit"),
                cell("C_Sign"),
                thousands(count.total - token),
                match count.token.is_empty() {
                    true => "-".to_string(),
                    false => format!("{:.2}", count.total / token),
                }
            );
        }
    }
}

/// `123.4k` instructions.
fn thousands(v: f64) -> String {
    format!("{:.1}k", v / 1000.0)
}

fn write(
    o: &crate::Options,
    report: &crate::report::Report,
    n: usize,
    background_per_second: f64,
    tables: &[(Algorithm, Vec<Count>)],
) {
    let json = serde_json::json!({
        "commit": report.commit(),
        "requests_per_row": n,
        "background_instructions_per_second": background_per_second,
        "tables": tables.iter().map(|(algorithm, counts)| serde_json::json!({
            "algorithm": algorithm.to_string(),
            "rows": counts,
        })).collect::<Vec<_>>(),
    });
    report.save(o, "-instructions", &json);
}
