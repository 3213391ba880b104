//! The aggregator alone: counts, windows, the cap and the `others` record.

use std::net::SocketAddr;

use super::*;
use crate::identity::PeerCredentials;

fn tcp(ip: &str) -> CallerRecord {
    CallerRecord::Tcp {
        addr: Some(ip.to_string()),
    }
}

const MINT: &str = "POST /v1/tokens";

#[test]
fn refusals_in_one_window_make_one_record_with_their_count() {
    let mut agg = RefusalAggregator::new(60, 10);
    for i in 0..1000 {
        let code = if i % 2 == 0 {
            "unauthenticated"
        } else {
            "caller_unknown"
        };
        assert!(
            agg.note(tcp("10.0.0.1"), MINT, code, 120 + i % 60)
                .is_empty()
        );
    }
    assert!(agg.take_closed(179).is_empty(), "the window is still open");
    let records = agg.take_closed(180);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.event, Event::RefusedAggregate);
    assert_eq!(r.outcome, Some(Outcome::Refused));
    assert_eq!(r.caller, Some(tcp("10.0.0.1")));
    assert_eq!(r.count, Some(1000));
    let codes = r.codes.as_ref().unwrap();
    assert_eq!(
        (codes["unauthenticated"], codes["caller_unknown"]),
        (500, 500)
    );
    assert_eq!(r.requests.as_ref().unwrap()[MINT], 1000);
    assert_eq!(r.since.as_deref(), Some("1970-01-01T00:02:00Z"));
    assert_eq!(r.until.as_deref(), Some("1970-01-01T00:03:00Z"));
    assert!(agg.take_closed(500).is_empty(), "taken once");
    assert!(agg.take_all(500).is_empty());
}

#[test]
fn a_refusal_in_a_later_window_closes_the_earlier_one() {
    let mut agg = RefusalAggregator::new(10, 10);
    agg.note(tcp("10.0.0.1"), MINT, "unauthenticated", 5);
    agg.note(tcp("10.0.0.2"), MINT, "unauthenticated", 9);
    let closed = agg.note(tcp("10.0.0.1"), MINT, "unauthenticated", 10);
    assert_eq!(closed.len(), 2);
    assert_eq!(
        closed.iter().map(|r| r.count).collect::<Vec<_>>(),
        [Some(1), Some(1)]
    );
    assert_eq!(
        closed[0].caller,
        Some(tcp("10.0.0.1")),
        "first-refusal order"
    );
    // The clock stepping back also closes the window rather than merging into it.
    let closed = agg.note(tcp("10.0.0.1"), MINT, "unauthenticated", 3);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].since.as_deref(), Some("1970-01-01T00:00:10Z"));
    // At stop, the open window is cut at the stop time.
    let last = agg.take_all(4);
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].until.as_deref(), Some("1970-01-01T00:00:04Z"));
}

#[test]
fn callers_beyond_the_cap_share_one_others_record() {
    let mut agg = RefusalAggregator::new(60, 3);
    assert_eq!(agg.max_records_per_window(), 4);
    for i in 0..10_000u32 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        agg.note(tcp(&ip), MINT, "unauthenticated", 0);
    }
    // The first callers keep their records in later refusals too.
    agg.note(tcp("10.0.0.0"), MINT, "unauthenticated", 1);
    let records = agg.take_all(30);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0].count, Some(2));
    assert_eq!(records[3].caller, None);
    assert_eq!(records[3].count, Some(10_000 - 3));
    assert!(records[3].detail.as_ref().unwrap().contains("first 3"));
    let total: u64 = records.iter().map(|r| r.count.unwrap()).sum();
    assert_eq!(total, 10_001, "every refusal is counted");
}

#[test]
fn codes_and_requests_are_bounded() {
    let mut agg = RefusalAggregator::new(60, 1);
    for i in 0..100 {
        agg.note(
            tcp("10.0.0.1"),
            &format!("POST /v1/keys/k{i}/retire"),
            &format!("code_{i}"),
            0,
        );
    }
    let records = agg.take_all(1);
    let (codes, requests) = (
        records[0].codes.as_ref().unwrap(),
        records[0].requests.as_ref().unwrap(),
    );
    assert_eq!(codes.len(), MAX_CODES + 1);
    assert_eq!(requests.len(), MAX_REQUESTS + 1);
    assert_eq!(codes[OTHERS], 100 - MAX_CODES as u64);
    assert_eq!(requests[OTHERS], 100 - MAX_REQUESTS as u64);
}

#[test]
fn callers_are_keyed_without_port_or_pid() {
    let at = |s: &str| Principal::Anonymous(Some(s.parse::<SocketAddr>().unwrap()));
    assert_eq!(
        caller_key(&at("192.0.2.7:4000")),
        caller_key(&at("192.0.2.7:4001"))
    );
    assert_ne!(
        caller_key(&at("192.0.2.7:4000")),
        caller_key(&at("192.0.2.8:4000"))
    );
    assert_eq!(caller_key(&at("192.0.2.7:4000")), tcp("192.0.2.7"));
    let local = |pid| {
        Principal::Local(PeerCredentials {
            uid: 1000,
            gid: 100,
            pid: Some(pid),
        })
    };
    assert_eq!(caller_key(&local(1)), caller_key(&local(2)));
    assert_eq!(
        caller_key(&local(1)),
        CallerRecord::Unix {
            uid: 1000,
            gid: 100,
            pid: None
        }
    );
}
