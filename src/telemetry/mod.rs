//! Prometheus metrics: what the daemon counts and measures, and `GET /metrics`'s text.
//!
//! Every family is named here and recorded through one function each, so the names,
//! units and labels live in one place and `docs/metrics.md` can list them from it. The
//! recording sites call these functions through the `metrics` facade: without an
//! installed recorder (the CLI, unit tests) each call is a no-op. The families every
//! request records go through handles kept once made (`hot`), not a registry lookup
//! per call.
//!
//! The recorder is global to the process ([`install`]): the binary runs one daemon, so
//! its counts are that daemon's. Tests that start several daemons in one process share
//! one set of counts; the tests that check counts run the real binary
//! (tests/daemon/metrics.rs).
//!
//! Labels are bounded: routes are the router's path templates (never a raw path),
//! issuers come from the config, PKCS#11 functions and return values from the
//! specification's finite lists; no kid, jti or principal is ever a label. Imports
//! nothing of signetd, so any room may record.

mod exporter;
mod hot;

use std::time::{Duration, Instant};

use metrics::{counter, gauge};

pub use exporter::{count_dropped_log_lines, install, render};

/// `signetd_http_requests_total{route, code, transport}`.
pub const HTTP_REQUESTS: &str = "signetd_http_requests_total";
/// `signetd_mint_duration_seconds{outcome}`.
pub const MINT_DURATION: &str = "signetd_mint_duration_seconds";
/// `signetd_sign_duration_seconds{outcome}`.
pub const SIGN_DURATION: &str = "signetd_sign_duration_seconds";
/// `signetd_verify_duration_seconds{outcome}`.
pub const VERIFY_DURATION: &str = "signetd_verify_duration_seconds";
/// `signetd_hsm_queue_depth`.
pub const HSM_QUEUE_DEPTH: &str = "signetd_hsm_queue_depth";
/// `signetd_hsm_busy_workers`.
pub const HSM_BUSY_WORKERS: &str = "signetd_hsm_busy_workers";
/// `signetd_hsm_errors_total{function, rv}`.
pub const HSM_ERRORS: &str = "signetd_hsm_errors_total";
/// `signetd_hsm_outages_total`.
pub const HSM_OUTAGES: &str = "signetd_hsm_outages_total";
/// `signetd_hsm_recoveries_total`.
pub const HSM_RECOVERIES: &str = "signetd_hsm_recoveries_total";
/// `signetd_audit_fsync_duration_seconds`.
pub const AUDIT_FSYNC_DURATION: &str = "signetd_audit_fsync_duration_seconds";
/// `signetd_audit_records_per_fsync`.
pub const AUDIT_RECORDS_PER_FSYNC: &str = "signetd_audit_records_per_fsync";
/// `signetd_audit_records_written_total`.
pub const AUDIT_RECORDS_WRITTEN: &str = "signetd_audit_records_written_total";
/// `signetd_audit_bytes_written_total`.
pub const AUDIT_BYTES_WRITTEN: &str = "signetd_audit_bytes_written_total";
/// `signetd_audit_refusals_total{recorded}`.
pub const AUDIT_REFUSALS: &str = "signetd_audit_refusals_total";
/// `signetd_keys{issuer, state}`.
pub const KEYS: &str = "signetd_keys";
/// `signetd_replay_store_jtis`.
pub const REPLAY_STORE_JTIS: &str = "signetd_replay_store_jtis";
/// `signetd_rate_limited_total{issuer, kind}`.
pub const RATE_LIMITED: &str = "signetd_rate_limited_total";
/// `signetd_build_info{version}`.
pub const BUILD_INFO: &str = "signetd_build_info";
/// State found gone backwards and moved forward, by kind (`key`, `token_revocation`,
/// `single_use`).
pub const STATE_ROLLBACKS: &str = "signetd_state_rollbacks_total";
/// `signetd_log_lines_dropped_total`.
pub const LOG_LINES_DROPPED: &str = "signetd_log_lines_dropped_total";

/// The transport a request came over: the `transport` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The Unix socket.
    Unix,
    /// HTTPS, with or without a client certificate.
    Tls,
    /// Plain HTTP: the loopback listener or the `[metrics] listen` one.
    Tcp,
}

impl Transport {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::Tls => "tls",
            Transport::Tcp => "tcp",
        }
    }
}

/// One HTTP request answered: `route` is the matched path template (`/v1/keys/{kid}`),
/// or `(unmatched)` when no route matched.
pub fn http_request(route: &str, code: u16, transport: Transport) {
    hot::count_request(route, code, transport);
}

/// What the daemon times separately: the work behind `/v1/tokens`, `/v1/sign` and
/// `/v1/verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Minting a JWT.
    Mint,
    /// A raw signature.
    Sign,
    /// Verifying a token.
    Verify,
}

/// One operation done (`ok`) or refused or failed (`error`) after `elapsed`.
pub fn operation(operation: Operation, ok: bool, elapsed: Duration) {
    if let Some(histogram) = hot::operation(operation, ok) {
        histogram.record(elapsed.as_secs_f64());
    }
}

/// Awaits `operation`'s work, recording its time and whether it succeeded.
pub async fn timed<T, E>(
    operation: Operation,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = work.await;
    self::operation(operation, result.is_ok(), started.elapsed());
    result
}

/// A job joins (`true`) or leaves (`false`) the queue of jobs waiting for a PKCS#11
/// worker. Counted up and down rather than set from the queue's length: a length read
/// by the caller could be written after a worker's newer one, leaving a job counted
/// that was long taken.
pub fn hsm_queued(joins: bool) {
    let Some(jobs) = hot::hsm_queue_depth() else {
        return;
    };
    if joins {
        jobs.increment(1.0);
    } else {
        jobs.decrement(1.0);
    }
}

/// A PKCS#11 worker starts (`true`) or ends (`false`) a job.
pub fn hsm_worker_busy(busy: bool) {
    let Some(workers) = hot::hsm_busy_workers() else {
        return;
    };
    if busy {
        workers.increment(1.0);
    } else {
        workers.decrement(1.0);
    }
}

/// A PKCS#11 call failed: `function` as `C_Sign`, `rv` as `CKR_DEVICE_ERROR`.
pub fn hsm_error(function: String, rv: String) {
    counter!(HSM_ERRORS, "function" => function, "rv" => rv).increment(1);
}

/// The token's health changed: an outage began (`false`) or ended (`true`).
pub fn hsm_health(ready: bool) {
    counter!(if ready { HSM_RECOVERIES } else { HSM_OUTAGES }).increment(1);
}

/// One fsync of the audit log took `elapsed`.
pub fn audit_fsync(elapsed: Duration) {
    if let Some(fsyncs) = hot::audit_fsync_duration() {
        fsyncs.record(elapsed.as_secs_f64());
    }
}

/// One audit write made durable `records` records in `bytes` bytes.
pub fn audit_written(records: u64, bytes: u64) {
    if let Some(batches) = hot::audit_records_per_fsync() {
        batches.record(records as f64);
    }
    if let Some(written) = hot::audit_records_written() {
        written.increment(records);
    }
    if let Some(written) = hot::audit_bytes_written() {
        written.increment(bytes);
    }
}

/// A refused request went to the audit log: in a record of its own (a caller a policy
/// names) or counted into its interval's `refused_aggregate` record (anyone else).
pub fn audit_refusal(aggregated: bool) {
    let recorded = if aggregated {
        "aggregated"
    } else {
        "individual"
    };
    counter!(AUDIT_REFUSALS, "recorded" => recorded).increment(1);
}

/// `issuer` has `count` keys in `state` in the registry just built.
pub fn keys(issuer: &str, state: &str, count: usize) {
    gauge!(KEYS, "issuer" => issuer.to_string(), "state" => state.to_string()).set(count as f64);
}

/// The replay store holds `jtis` single-use jtis that are not yet expired.
pub fn replay_store_jtis(jtis: u64) {
    gauge!(REPLAY_STORE_JTIS).set(jtis as f64);
}

/// Whose rate limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The calling principal's own allowance at the issuer.
    Principal,
    /// The issuer's allowance for all callers together.
    Issuer,
}

/// A request to `issuer` was refused by a rate limit of `kind`.
pub fn rate_limited(issuer: &str, kind: LimitKind) {
    let kind = match kind {
        LimitKind::Principal => "principal",
        LimitKind::Issuer => "issuer",
    };
    counter!(RATE_LIMITED, "issuer" => issuer.to_string(), "kind" => kind).increment(1);
}

/// Counts state found gone backwards and moved forward (`key`, `token_revocation`,
/// `single_use`).
pub fn state_rollback(kind: &'static str) {
    state_rollbacks(kind, 1);
}

/// Counts `count` pieces of state of one kind found gone backwards and moved forward.
pub fn state_rollbacks(kind: &'static str, count: u64) {
    counter!(STATE_ROLLBACKS, "kind" => kind).increment(count);
}
