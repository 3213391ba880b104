//! The tables the bench prints and the JSON it writes.

use std::collections::BTreeMap;

use signetd::Algorithm;

use crate::floor::{Floor, ObjectKind};
use crate::host::HostFloor;
use crate::load::{Op, Outcome};
use crate::stats::Percentiles;

/// One daemon row.
#[derive(serde::Serialize)]
pub struct Row {
    pub op: Op,
    pub clients: usize,
    /// Where the daemon's audit log was: `disk` or `tmpfs`.
    pub audit: &'static str,
    pub ops_per_s: f64,
    pub latency_us: Percentiles,
    pub ok: usize,
    pub refused: BTreeMap<String, usize>,
    /// CPU used, in percent of one core.
    pub loadgen_cpu_pct: f64,
    pub daemon_cpu_pct: f64,
    /// The daemon's voluntary context switches per answer: its threads' hand-offs.
    pub daemon_switches_per_op: f64,
    pub ran_dry: bool,
}

impl Row {
    pub fn new(op: Op, clients: usize, audit: &'static str, outcome: Outcome) -> Row {
        let seconds = outcome.elapsed.as_secs_f64();
        let answered = outcome.samples.len();
        Row {
            op,
            clients,
            audit,
            // Refusals are answers too (the overload row's `overloaded`), but only
            // successes count as throughput.
            ops_per_s: outcome.ok as f64 / seconds,
            latency_us: outcome.samples.percentiles(),
            ok: outcome.ok,
            refused: outcome.refused,
            loadgen_cpu_pct: outcome.loadgen_cpu / seconds * 100.0,
            daemon_cpu_pct: outcome.daemon_cpu / seconds * 100.0,
            daemon_switches_per_op: outcome.daemon_switches as f64 / answered.max(1) as f64,
            ran_dry: outcome.ran_dry && answered > 0,
        }
    }
}

/// One algorithm's floor and rows.
#[derive(serde::Serialize)]
pub struct Table {
    pub algorithm: Algorithm,
    pub floors: Vec<Floor>,
    /// The floor the ratios use: the object kind the daemon signs with.
    pub objects: ObjectKind,
    pub rows: Vec<Row>,
    /// Whether a second TLS handshake with the load generator's config resumed.
    pub resumed: bool,
    /// The host verifying the verify rows' token in-process, on 1 thread and on as many
    /// as the machine has cores.
    pub verify_floors: Vec<HostFloor>,
}

/// What the whole run measured besides the tables.
pub struct Report {
    commit: String,
    sessions: usize,
    cores: usize,
    disk: (Percentiles, usize),
    tmpfs: (Percentiles, usize),
    /// The disk's append + fdatasync after 1 ms asleep (informational).
    disk_after_idle: (Percentiles, usize),
    /// The disk's write over zeros + fdatasync: what the audit writer does per batch.
    disk_in_place: (Percentiles, usize),
    /// Resumed TLS 1.3 handshakes in-process, on 1 thread and on every core.
    tls: Vec<HostFloor>,
    /// Two threads handing a byte back and forth, each asleep while the other runs.
    thread_round_trip: (Percentiles, usize),
    /// The guest's halt polling, if this is a VM with `cpuidle-haltpoll`.
    halt_poll_ns: Option<u64>,
}

impl Table {
    pub fn new(algorithm: Algorithm, floors: Vec<Floor>, objects: ObjectKind) -> Table {
        Table {
            algorithm,
            floors,
            objects,
            rows: Vec::new(),
            resumed: false,
            verify_floors: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    fn floor(&self, threads: usize) -> &Floor {
        self.floors
            .iter()
            .filter(|f| f.object == self.objects)
            .find(|f| f.threads == threads)
            .unwrap()
    }

    fn row(&self, op: Op, clients: usize, audit: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.op == op && r.clients == clients && r.audit == audit)
    }

    pub fn print(&self, report: &Report) {
        let n = report.sessions;
        println!(
            "\n== {} == {} worker sessions, {} cores; the ratio is to the {:?}-object floor on {n} threads",
            self.algorithm, n, report.cores, self.objects
        );
        println!(
            "{:<34} {:>8} {:>9} {:>9} {:>9}",
            "floor: C_Sign in-process", "threads", "ops/s", "p50 µs", "p99 µs"
        );
        for f in &self.floors {
            println!(
                "{:<34} {:>8} {:>9.0} {:>9.1} {:>9.1}",
                format!("  {:?} object", f.object).to_lowercase(),
                f.threads,
                f.ops_per_s,
                f.latency_us.p50,
                f.latency_us.p99
            );
        }
        let host_floors = self
            .verify_floors
            .iter()
            .map(|f| ("host: verify the token", f))
            .chain(
                report
                    .tls
                    .iter()
                    .map(|f| ("host: resumed mTLS handshake", f)),
            );
        for (what, f) in host_floors {
            println!(
                "{:<34} {:>8} {:>9.0} {:>9.1} {:>9.1}",
                what, f.threads, f.ops_per_s, f.latency_us.p50, f.latency_us.p99
            );
        }
        for (what, p) in [
            ("disk: write 300 B + fdatasync", report.disk.0),
            ("  the same after 1 ms asleep", report.disk_after_idle.0),
            ("  over zeros, size unchanged", report.disk_in_place.0),
            ("tmpfs: write 300 B + fdatasync", report.tmpfs.0),
            ("threads: wake one and back", report.thread_round_trip.0),
        ] {
            println!(
                "{:<34} {:>8} {:>9} {:>9.1} {:>9.1}",
                what, "", "", p.p50, p.p99
            );
        }
        println!(
            "\n{:<30} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>6}  refused",
            "daemon row",
            "clients",
            "audit",
            "ops/s",
            "p50 µs",
            "p99 µs",
            "p999 µs",
            "x floor",
            "gen CPU",
            "dmn CPU",
            "sw/op"
        );
        let floor = self.floor(n).ops_per_s;
        for r in &self.rows {
            let refused = r
                .refused
                .iter()
                .map(|(code, count)| format!("{code} {count}"))
                .collect::<Vec<_>>()
                .join(", ");
            // Verification signs nothing: a ratio to C_Sign would mean nothing there.
            let ratio = match r.op.signs() {
                true => format!("{:.2}", r.ops_per_s / floor),
                false => "-".to_string(),
            };
            println!(
                "{:<30} {:>7} {:>6} {:>9.0} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>7.0}% {:>7.0}% {:>6.1}  {}{}",
                r.op.label(),
                r.clients,
                r.audit,
                r.ops_per_s,
                r.latency_us.p50,
                r.latency_us.p99,
                r.latency_us.p999,
                ratio,
                r.loadgen_cpu_pct,
                r.daemon_cpu_pct,
                r.daemon_switches_per_op,
                refused,
                if r.ran_dry {
                    " (ran out of unused tokens)"
                } else {
                    ""
                }
            );
        }
        println!(
            "TLS session resumed on reconnect: {}",
            if self.resumed { "yes" } else { "NO" }
        );
        self.print_targets(report);
    }

    /// The targets, computed (never asserted: docs/performance.md).
    fn print_targets(&self, report: &Report) {
        let sign_p50 = self.floor(1).latency_us.p50;
        let limit = sign_p50 + report.disk.0.p50;
        let in_place = sign_p50 + report.disk_in_place.0.p50;
        println!("against the limits of this run (targets in docs/performance.md):");
        for op in [Op::Sign, Op::Mint] {
            if let Some(r) = self.row(op, 1, "disk") {
                println!(
                    "  {:<16} 1 client, audit on disk:  p50 {:.0} µs = {:.2} x (C_Sign p50 + fsync p50 = {:.0} µs)   target <= 1.3;  {:.2} x with the in-place fsync ({:.0} µs)",
                    op.label(),
                    r.latency_us.p50,
                    r.latency_us.p50 / limit,
                    limit,
                    r.latency_us.p50 / in_place,
                    in_place
                );
            }
            if let Some(r) = self.row(op, 1, "tmpfs") {
                println!(
                    "  {:<16} 1 client, audit on tmpfs: p50 {:.0} µs = C_Sign p50 + {:.0} µs   target <= +60",
                    op.label(),
                    r.latency_us.p50,
                    r.latency_us.p50 - sign_p50
                );
            }
        }
        // A lone request, split by difference: the HTTP round trip (GET /healthz), C_Sign,
        // the write to tmpfs, and what is left (JSON, policy, claims, the hand-offs to the
        // PKCS#11 worker and the audit writer and back).
        if let (Some(http), Some(sign)) = (
            self.row(Op::Health, 1, "disk"),
            self.row(Op::Sign, 1, "tmpfs"),
        ) {
            let switches = sign.daemon_switches_per_op;
            let (http, sign, write) =
                (http.latency_us.p50, sign.latency_us.p50, report.tmpfs.0.p50);
            println!(
                "  a lone /v1/sign on tmpfs, p50 {sign:.0} µs: HTTP round trip {http:.0} + C_Sign {sign_p50:.0} + write {write:.0} + the rest {:.0} µs \
                 ({switches:.1} daemon threads asleep per request; two threads' round trip here: {:.0} µs)",
                sign - http - sign_p50 - write,
                report.thread_round_trip.0.p50
            );
        }
        self.print_host_targets(report);
        let floor = self.floor(report.sessions).ops_per_s;
        for (op, target) in [(Op::Mint, 0.75), (Op::Sign, 0.8)] {
            if let Some(r) = self.row(op, 64, "disk") {
                println!(
                    "  {:<16} 64 clients: {:.2} x floor (target >= {target}), p99 = {:.1} x p50 (target <= 4)",
                    op.label(),
                    r.ops_per_s / floor,
                    r.latency_us.p99 / r.latency_us.p50
                );
            }
        }
    }
}

impl Table {
    /// The targets of the rows that do not sign (docs/performance.md, "Targets for the
    /// verify and TLS rows"), against the host floors of this run.
    fn print_host_targets(&self, report: &Report) {
        let p50 = |op, clients| self.row(op, clients, "disk").map(|r| r.latency_us.p50);
        let ops = |op, clients| self.row(op, clients, "disk").map(|r| r.ops_per_s);
        let (verify1, verify_n) = (self.verify_floors.first(), self.verify_floors.last());
        if let (Some(http), Some(verify), Some(floor)) =
            (p50(Op::Health, 1), p50(Op::Verify, 1), verify1)
        {
            let limit = http + 2.0 * floor.latency_us.p50;
            println!(
                "  {:<16} 1 client: p50 {verify:.0} µs = {:.2} x (/healthz p50 + 2 x host verify p50 = {limit:.0} µs)   target <= 1",
                Op::Verify.label(),
                verify / limit
            );
        }
        if let (Some(rate), Some(floor)) = (ops(Op::Verify, 64), verify_n) {
            println!(
                "  {:<16} 64 clients: {:.2} x host verify on {} threads (target >= 0.5)",
                Op::Verify.label(),
                rate / floor.ops_per_s,
                floor.threads
            );
        }
        if let (Some(single), Some(verify)) = (p50(Op::VerifySingleUse, 1), p50(Op::Verify, 1)) {
            let limit = verify + report.disk.0.p50;
            let in_place = verify + report.disk_in_place.0.p50;
            println!(
                "  {:<16} 1 client: p50 {single:.0} µs = {:.2} x (verify p50 + fsync p50 = {limit:.0} µs)   target <= 1.3;  {:.2} x with the in-place fsync ({in_place:.0} µs)",
                "single_use",
                single / limit,
                single / in_place
            );
        }
        if let (Some(tls), Some(mint), Some(handshake)) =
            (p50(Op::MintTls, 1), p50(Op::Mint, 1), report.tls.first())
        {
            let limit = mint + 2.0 * handshake.latency_us.p50;
            println!(
                "  {:<16} 1 client: p50 {tls:.0} µs = {:.2} x (socket mint p50 + 2 x resumed handshake p50 = {limit:.0} µs)   target <= 1",
                "mTLS mint",
                tls / limit
            );
        }
        // Each TLS request costs the machine the socket row's work plus two handshakes
        // (the daemon's and the load generator's, on the same cores): the most this
        // machine can do is 1 / (1/socket rate + 2/handshakes per second on every core).
        if let (Some(tls), Some(mint), Some(handshakes)) =
            (ops(Op::MintTls, 64), ops(Op::Mint, 64), report.tls.last())
        {
            let bound = 1.0 / (1.0 / mint + 2.0 / handshakes.ops_per_s);
            println!(
                "  {:<16} 64 clients: {tls:.0}/s = {:.2} x (1 / (1/socket mint rate + 2/handshake floor) = {bound:.0}/s)   target >= 0.75",
                "mTLS mint",
                tls / bound
            );
        }
    }
}

impl Report {
    /// The commit measured, `-dirty` if the tree had changes.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    pub fn new(_o: &crate::Options, sessions: usize) -> Report {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .args(args)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let mut commit = git(&["rev-parse", "--short=12", "HEAD"]);
        if !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            commit.push_str("-dirty");
        }
        let nan = Percentiles {
            p50: f64::NAN,
            p99: f64::NAN,
            p999: f64::NAN,
        };
        Report {
            commit,
            sessions,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            disk: (nan, 0),
            tmpfs: (nan, 0),
            disk_after_idle: (nan, 0),
            disk_in_place: (nan, 0),
            tls: Vec::new(),
            thread_round_trip: (nan, 0),
            halt_poll_ns: crate::floor::guest_halt_poll_ns(),
        }
    }

    /// Cores of this machine.
    pub fn cores(&self) -> usize {
        self.cores
    }

    pub fn disk_after_idle(&mut self, disk: (Percentiles, usize)) {
        self.disk_after_idle = disk;
    }

    pub fn disk_in_place(&mut self, disk: (Percentiles, usize)) {
        self.disk_in_place = disk;
    }

    pub fn thread_round_trip(&mut self, round_trip: (Percentiles, usize)) {
        self.thread_round_trip = round_trip;
    }

    /// The machine's line above the tables: what on it moves a lone request's latency
    /// besides signetd.
    pub fn print_machine(&self) {
        let polling = match self.halt_poll_ns {
            Some(0) => "a virtual machine whose idle vCPUs halt at once (guest_halt_poll_ns = 0)"
                .to_string(),
            Some(ns) => format!(
                "a virtual machine whose idle vCPUs poll {} µs before halting (guest_halt_poll_ns)",
                ns / 1000
            ),
            None => "no guest halt polling found (bare metal, or a VM without cpuidle-haltpoll)"
                .to_string(),
        };
        println!(
            "machine: {} cores; {polling}; two threads waking each other: p50 {:.1} µs a round trip",
            self.cores, self.thread_round_trip.0.p50
        );
    }

    pub fn tls(&mut self, floors: Vec<HostFloor>) {
        self.tls = floors;
    }

    pub fn disk(&mut self, disk: (Percentiles, usize), tmpfs: (Percentiles, usize)) {
        (self.disk, self.tmpfs) = (disk, tmpfs);
    }

    /// Writes the JSON report and says where.
    pub fn write(&self, o: &crate::Options, tables: Vec<Table>) {
        let json = serde_json::json!({
            "commit": self.commit,
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "quick": o.quick,
            "seconds_per_row": o.seconds,
            "cores": self.cores,
            "worker_sessions": self.sessions,
            "fsync_us": {
                "disk": self.disk.0, "disk_samples": self.disk.1,
                "tmpfs": self.tmpfs.0, "tmpfs_samples": self.tmpfs.1,
                "disk_after_1ms_idle": self.disk_after_idle.0,
                "disk_after_1ms_idle_samples": self.disk_after_idle.1,
                "disk_in_place": self.disk_in_place.0,
                "disk_in_place_samples": self.disk_in_place.1,
            },
            "tls_resumed_handshake": self.tls,
            "thread_round_trip_us": self.thread_round_trip.0,
            "thread_round_trip_samples": self.thread_round_trip.1,
            "guest_halt_poll_ns": self.halt_poll_ns,
            "tables": tables,
        });
        self.save(o, "", &json);
    }

    /// Writes `json` to `--json`, else to `target/bench/COMMIT{suffix}.json`, and says
    /// where.
    pub fn save(&self, o: &crate::Options, suffix: &str, json: &serde_json::Value) {
        let path = o.json.clone().unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench")
                .join(format!("{}{suffix}.json", self.commit))
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, serde_json::to_string_pretty(json).unwrap()).unwrap();
        println!("\nJSON: {}", path.display());
    }
}
