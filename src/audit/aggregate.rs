//! Refusals of callers whom no policy names, folded into one record per caller and
//! interval instead of one record (and one fsync) each.
//!
//! Pure: the caller passes the time in, as seconds since the epoch. Intervals are
//! aligned windows `[k·I, (k+1)·I)`; a refusal in a new window closes the old one. Per
//! window at most `callers` callers get a record of their own, and refusals of any
//! others share one more record with no caller: so a window ends in at most
//! `callers + 1` records, whatever the number of refusals or callers. The service owns
//! the aggregator, asks policy who is named, and appends what [`RefusalAggregator::take_closed`]
//! returns (see `docs/audit.md`, "Refusals").

use std::collections::{BTreeMap, HashMap};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::record::{CallerRecord, Entry, Event, Outcome};
use crate::identity::Principal;

/// Distinct error codes listed per record; further codes count under [`OTHERS`].
pub const MAX_CODES: usize = 16;
/// Distinct requests (method and path) listed per record; further ones count under
/// [`OTHERS`]. Paths are the caller's choice, so they are bounded too.
pub const MAX_REQUESTS: usize = 8;
/// The key under which codes and requests beyond the bounds are counted.
pub const OTHERS: &str = "(others)";

/// What a folded refusal is keyed by: the caller as the audit log records it, without
/// what changes from one connection to the next (a TCP port, a pid). Anonymous TCP
/// callers are thereby keyed by IP address, local ones by uid and gid, certificate
/// holders by their certificate.
pub fn caller_key(principal: &Principal) -> CallerRecord {
    match CallerRecord::from(principal) {
        CallerRecord::Unix { uid, gid, .. } => CallerRecord::Unix {
            uid,
            gid,
            pid: None,
        },
        CallerRecord::Tcp { .. } => CallerRecord::Tcp {
            addr: principal_ip(principal),
        },
        CallerRecord::Tls {
            spiffe_id,
            dns,
            cert_sha256,
            ..
        } => CallerRecord::Tls {
            addr: principal_ip(principal),
            spiffe_id,
            dns,
            cert_sha256,
        },
        other => other,
    }
}

fn principal_ip(principal: &Principal) -> Option<String> {
    match principal {
        Principal::Anonymous(addr) | Principal::Remote { addr, .. } => {
            addr.map(|a| a.ip().to_string())
        }
        Principal::Local(_) => None,
    }
}

/// One caller's refusals in the current window.
#[derive(Debug, Default)]
struct Bucket {
    count: u64,
    codes: BTreeMap<String, u64>,
    requests: BTreeMap<String, u64>,
}

/// Counts `key` in `map`, or under [`OTHERS`] once `map` holds `max` other keys.
fn bump(map: &mut BTreeMap<String, u64>, key: &str, max: usize) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < max {
        map.insert(key.to_string(), 1);
    } else {
        *map.entry(OTHERS.to_string()).or_default() += 1;
    }
}

impl Bucket {
    fn add(&mut self, request: &str, code: &str) {
        self.count += 1;
        bump(&mut self.codes, code, MAX_CODES);
        bump(&mut self.requests, request, MAX_REQUESTS);
    }
}

/// Refusals of the current window, by caller, with at most `callers` callers of their
/// own and one bucket for the rest.
#[derive(Debug)]
pub struct RefusalAggregator {
    interval: u64,
    callers: usize,
    /// The window being counted (`now / interval`), once a refusal arrived.
    window: Option<u64>,
    /// Buckets in first-refusal order, so records come out in a stable order.
    buckets: Vec<(CallerRecord, Bucket)>,
    index: HashMap<CallerRecord, usize>,
    others: Bucket,
}

impl RefusalAggregator {
    /// An aggregator over windows of `interval_seconds` (at least 1) with at most
    /// `callers` callers of their own per window.
    pub fn new(interval_seconds: u64, callers: usize) -> Self {
        RefusalAggregator {
            interval: interval_seconds.max(1),
            callers,
            window: None,
            buckets: Vec::new(),
            index: HashMap::new(),
            others: Bucket::default(),
        }
    }

    /// Most records one window can end in: one per caller of its own, and `others`.
    pub fn max_records_per_window(&self) -> usize {
        self.callers + 1
    }

    /// Counts a refusal of `caller` (a [`caller_key`]) at `now`. Returns the records
    /// of the window it closed, if `now` is in a later one (or, after the clock stepped
    /// back, an earlier one).
    pub fn note(
        &mut self,
        caller: CallerRecord,
        request: &str,
        code: &str,
        now: u64,
    ) -> Vec<Entry> {
        crate::telemetry::audit_refusal(true);
        let closed = self.take_closed(now);
        self.window = Some(now / self.interval);
        let slot = match self.index.get(&caller) {
            Some(&i) => Some(i),
            None if self.buckets.len() < self.callers => {
                self.index.insert(caller.clone(), self.buckets.len());
                self.buckets.push((caller, Bucket::default()));
                Some(self.buckets.len() - 1)
            }
            None => None,
        };
        match slot {
            Some(i) => self.buckets[i].1.add(request, code),
            None => self.others.add(request, code),
        }
        closed
    }

    /// The records of the window counted so far if `now` is no longer in it; nothing
    /// while it is still open.
    pub fn take_closed(&mut self, now: u64) -> Vec<Entry> {
        match self.window {
            Some(window) if window != now / self.interval => {
                let end = window.saturating_add(1).saturating_mul(self.interval);
                self.take(end)
            }
            _ => Vec::new(),
        }
    }

    /// The records of the window counted so far, closed at `now` whether or not it is
    /// over (at stop).
    pub fn take_all(&mut self, now: u64) -> Vec<Entry> {
        match self.window {
            Some(window) => {
                let end = window.saturating_add(1).saturating_mul(self.interval);
                self.take(now.min(end))
            }
            None => Vec::new(),
        }
    }

    /// Empties the window into records, the interval ending at `until`.
    fn take(&mut self, until: u64) -> Vec<Entry> {
        let Some(window) = self.window.take() else {
            return Vec::new();
        };
        let since = rfc3339(window.saturating_mul(self.interval));
        let until = rfc3339(until);
        self.index.clear();
        let mut entries: Vec<Entry> = std::mem::take(&mut self.buckets)
            .into_iter()
            .map(|(caller, bucket)| record(Some(caller), bucket, &since, &until))
            .collect();
        let others = std::mem::take(&mut self.others);
        if others.count > 0 {
            let mut entry = record(None, others, &since, &until);
            entry.detail = Some(format!(
                "refusals of callers beyond the first {} this interval",
                self.callers
            ));
            entries.push(entry);
        }
        entries
    }
}

fn record(caller: Option<CallerRecord>, bucket: Bucket, since: &str, until: &str) -> Entry {
    let mut entry = Entry::new(Event::RefusedAggregate);
    entry.caller = caller;
    entry.outcome = Some(Outcome::Refused);
    entry.count = Some(bucket.count);
    entry.codes = Some(bucket.codes);
    entry.requests = Some(bucket.requests);
    entry.since = Some(since.to_string());
    entry.until = Some(until.to_string());
    entry
}

fn rfc3339(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
