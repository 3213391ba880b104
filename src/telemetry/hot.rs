//! Handles of the families recorded on every request, kept once made.
//!
//! `counter!` and its kin build a key, hash its labels and look it up in the recorder's
//! registry at every call; keeping the handles saved about 6 thousand instructions of a
//! signed request (`scripts/bench.sh --instructions`, docs/performance.md). A handle is
//! the registry's entry itself, so recording through a kept one skips all of it. (The
//! exporter keeps every entry for the process's life: it is built without an idle
//! timeout, which would drop entries that kept handles still point at.)
//!
//! Each handle is made at its first use, as the macros would register it, but only once
//! the recorder is installed: a handle taken before would be a no-op one for good.
//! Until then recording through here does nothing, as the macros do without a
//! recorder.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::*;

/// `cell`'s handle, made by `make` at the first call after the recorder is installed.
fn kept<T>(cell: &'static OnceLock<T>, make: impl FnOnce() -> T) -> Option<&'static T> {
    if let Some(handle) = cell.get() {
        return Some(handle);
    }
    exporter::installed().then(|| cell.get_or_init(make))
}

/// `signetd_hsm_queue_depth`.
pub(super) fn hsm_queue_depth() -> Option<&'static Gauge> {
    static HANDLE: OnceLock<Gauge> = OnceLock::new();
    kept(&HANDLE, || gauge!(HSM_QUEUE_DEPTH))
}

/// `signetd_hsm_busy_workers`.
pub(super) fn hsm_busy_workers() -> Option<&'static Gauge> {
    static HANDLE: OnceLock<Gauge> = OnceLock::new();
    kept(&HANDLE, || gauge!(HSM_BUSY_WORKERS))
}

/// `signetd_audit_fsync_duration_seconds`.
pub(super) fn audit_fsync_duration() -> Option<&'static Histogram> {
    static HANDLE: OnceLock<Histogram> = OnceLock::new();
    kept(&HANDLE, || histogram!(AUDIT_FSYNC_DURATION))
}

/// `signetd_audit_records_per_fsync`.
pub(super) fn audit_records_per_fsync() -> Option<&'static Histogram> {
    static HANDLE: OnceLock<Histogram> = OnceLock::new();
    kept(&HANDLE, || histogram!(AUDIT_RECORDS_PER_FSYNC))
}

/// `signetd_audit_records_written_total`.
pub(super) fn audit_records_written() -> Option<&'static Counter> {
    static HANDLE: OnceLock<Counter> = OnceLock::new();
    kept(&HANDLE, || counter!(AUDIT_RECORDS_WRITTEN))
}

/// `signetd_audit_bytes_written_total`.
pub(super) fn audit_bytes_written() -> Option<&'static Counter> {
    static HANDLE: OnceLock<Counter> = OnceLock::new();
    kept(&HANDLE, || counter!(AUDIT_BYTES_WRITTEN))
}

/// The duration histogram of `operation` with outcome `ok` or `error`.
pub(super) fn operation(operation: Operation, ok: bool) -> Option<&'static Histogram> {
    static HANDLES: [OnceLock<Histogram>; 6] = [const { OnceLock::new() }; 6];
    let (index, name) = match operation {
        Operation::Mint => (0, MINT_DURATION),
        Operation::Sign => (2, SIGN_DURATION),
        Operation::Verify => (4, VERIFY_DURATION),
    };
    let (index, outcome) = if ok {
        (index, "ok")
    } else {
        (index + 1, "error")
    };
    kept(&HANDLES[index], || histogram!(name, "outcome" => outcome))
}

/// `signetd_http_requests_total`'s handles by route, then by code and transport: as
/// bounded as the labels (routes are the router's templates).
type Requests = HashMap<Box<str>, HashMap<(u16, Transport), Counter>>;

static REQUESTS: LazyLock<RwLock<Requests>> = LazyLock::new(Default::default);

/// Counts one request in `signetd_http_requests_total` by route, code and transport,
/// through the kept handle (counted under the read lock: no clone of the handle to
/// hand out).
pub(super) fn count_request(route: &str, code: u16, transport: Transport) {
    if !exporter::installed() {
        return;
    }
    {
        let known = REQUESTS.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(requests) = known.get(route).and_then(|by| by.get(&(code, transport))) {
            requests.increment(1);
            return;
        }
    }
    let made = counter!(
        HTTP_REQUESTS,
        "route" => route.to_string(),
        "code" => code.to_string(),
        "transport" => transport.as_str(),
    );
    made.increment(1);
    REQUESTS
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.into())
        .or_default()
        .insert((code, transport), made);
}
