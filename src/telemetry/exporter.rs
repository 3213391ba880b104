//! The process's recorder: `metrics-exporter-prometheus` without its HTTP listener (the
//! daemon's own router serves `/metrics`), histogram buckets per family, and each
//! family's help text.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::*;

/// How often histograms' recent samples are folded in when nobody scrapes, so memory
/// stays bounded between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Request and HSM latencies: from a millisecond to ten seconds (the longest deadline).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// fsync on local disks: from 100 µs to a second.
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Records one group commit makes durable.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Where [`LOG_LINES_DROPPED`] is read from at each scrape: the log writer's own count.
static DROPPED_LOG_LINES: OnceLock<Box<dyn Fn() -> u64 + Send + Sync>> = OnceLock::new();

/// Makes [`LOG_LINES_DROPPED`] report `dropped`, read at each scrape: the binary's log
/// writer counts the lines it dropped while stderr could not keep up. Once per process;
/// later calls do nothing.
pub fn count_dropped_log_lines(dropped: impl Fn() -> u64 + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(dropped));
}

/// Installs the process's recorder, once; later calls do nothing. The daemon calls it
/// as it starts; until then (and in the CLI) every recording is a no-op.
pub fn install() {
    HANDLE.get_or_init(|| {
        let recorder = buckets(PrometheusBuilder::new())
            .map(PrometheusBuilder::build_recorder)
            .map_err(|e| e.to_string());
        let recorder = match recorder {
            Ok(recorder) => recorder,
            Err(e) => {
                tracing::error!(error = %e, "metrics are off: the recorder could not be built");
                return None;
            }
        };
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::error!(error = %e, "metrics are off: another recorder is installed");
            return None;
        }
        INSTALLED.store(true, Ordering::Release);
        describe();
        baseline();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".to_string())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            // Rendering folds samples in too: scrapes keep memory bounded without it.
            tracing::warn!(error = %e, "no metrics upkeep thread; histograms are folded in at each scrape");
        }
        Some(handle)
    });
}

/// Set once [`install`] has made its recorder the process's, before it registers
/// anything: from then on a handle taken from the facade is a live one.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether [`install`] set up the recorder: until then a handle taken from the facade
/// would be a no-op one for good, so none is kept.
pub(super) fn installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// The Prometheus text exposition of every family, or `None` before [`install`] (or if
/// it failed).
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    if let Some(dropped) = DROPPED_LOG_LINES.get() {
        counter!(LOG_LINES_DROPPED).absolute(dropped());
    }
    Some(handle.render())
}

fn buckets(builder: PrometheusBuilder) -> Result<PrometheusBuilder, impl std::fmt::Display> {
    builder
        .set_buckets_for_metric(Matcher::Full(MINT_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SIGN_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(VERIFY_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(AUDIT_FSYNC_DURATION.into()), FSYNC_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(AUDIT_RECORDS_PER_FSYNC.into()), BATCH_BUCKETS)
}

/// Families without labels exist from the start, so a scrape shows a zero rather than
/// nothing; and the build info is constant.
fn baseline() {
    counter!(HSM_OUTAGES).absolute(0);
    counter!(HSM_RECOVERIES).absolute(0);
    counter!(AUDIT_RECORDS_WRITTEN).absolute(0);
    counter!(AUDIT_BYTES_WRITTEN).absolute(0);
    counter!(LOG_LINES_DROPPED).absolute(0);
    gauge!(HSM_QUEUE_DEPTH).set(0.0);
    gauge!(HSM_BUSY_WORKERS).set(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

fn describe() {
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because stderr (the journal) did not take them as fast as they came; the audit log is not affected"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, status code and transport"
    );
    describe_histogram!(
        MINT_DURATION,
        metrics::Unit::Seconds,
        "Time to mint a JWT (policy, limits, signing, audit fsync), by outcome"
    );
    describe_histogram!(
        SIGN_DURATION,
        metrics::Unit::Seconds,
        "Time to make a raw signature (policy, limits, signing, audit fsync), by outcome"
    );
    describe_histogram!(
        VERIFY_DURATION,
        metrics::Unit::Seconds,
        "Time to verify a token, by outcome"
    );
    describe_gauge!(HSM_QUEUE_DEPTH, "PKCS#11 jobs waiting for a worker");
    describe_gauge!(HSM_BUSY_WORKERS, "PKCS#11 workers running a job");
    describe_counter!(
        HSM_ERRORS,
        "Failed PKCS#11 calls, by function and return value"
    );
    describe_counter!(HSM_OUTAGES, "Token outages begun");
    describe_counter!(HSM_RECOVERIES, "Token outages ended by re-initialization");
    describe_histogram!(
        AUDIT_FSYNC_DURATION,
        metrics::Unit::Seconds,
        "Time of one fsync of the audit log"
    );
    describe_histogram!(
        AUDIT_RECORDS_PER_FSYNC,
        metrics::Unit::Count,
        "Audit records made durable by one group commit"
    );
    describe_counter!(AUDIT_RECORDS_WRITTEN, "Audit records written and fsynced");
    describe_counter!(
        AUDIT_BYTES_WRITTEN,
        metrics::Unit::Bytes,
        "Audit log bytes written and fsynced"
    );
    describe_counter!(
        AUDIT_REFUSALS,
        "Refused requests recorded in the audit log: individually or aggregated per interval"
    );
    describe_gauge!(KEYS, "Keys in the published registry, by issuer and state");
    describe_gauge!(
        REPLAY_STORE_JTIS,
        "Unexpired single-use jtis in the replay store, as of the last lifecycle tick"
    );
    describe_counter!(
        RATE_LIMITED,
        "Requests refused by a rate limit, by issuer and whose limit (principal or issuer)"
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version of this signetd");
}
