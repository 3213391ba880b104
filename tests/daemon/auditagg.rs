//! The audit log is no lever for callers no policy names: their refusals are folded
//! into one record per caller and interval, the number of records stays within the
//! documented bound, and free space below the reserve drops refusal records, never
//! signing records. Named callers' refusals stay records of their own.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::audit::verify;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{TestDaemon, ca, generate_key, issuer_toml, my_uid, segment_text, signetd_bin};

/// Refused anonymous requests sent by the flood.
const FLOOD: usize = 50_000;
/// Keep-alive connections the flood uses at once.
const CONNECTIONS: usize = 4;
/// Requests written before their responses are read (HTTP/1.1 pipelining).
const PIPELINE: usize = 50;

fn config(issuer: &str, log: &Path, audit: &str) -> String {
    format!(
        "{}[audit]\ndir = {:?}\n{audit}",
        issuer_toml(issuer, Algorithm::Es256),
        log.display().to_string()
    )
}

/// Sends `count` refused requests (`POST /v1/tokens` without credentials) over one
/// keep-alive TCP connection, pipelined; returns how many were answered 401.
async fn refused_requests(addr: std::net::SocketAddr, count: usize) -> usize {
    const REQUEST: &[u8] =
        b"POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut buf, mut unauthenticated, mut sent) = (Vec::new(), 0, 0);
    while sent < count {
        let batch = PIPELINE.min(count - sent);
        stream.write_all(&REQUEST.repeat(batch)).await.unwrap();
        for _ in 0..batch {
            let status = read_response(&mut stream, &mut buf).await;
            assert!(
                status == 401 || status == 429,
                "an anonymous mint must be refused, not {status}"
            );
            unauthenticated += usize::from(status == 401);
        }
        sent += batch;
    }
    unauthenticated
}

/// Reads one response from `stream` (bytes beyond it stay in `buf`); returns its status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                buf.drain(..end + 4 + length);
                return status;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the daemon closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_anonymous_refusals_add_a_bounded_number_of_records() {
    generate_key("agg-flood", Algorithm::Es256).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    // One-second intervals, and at most 2 callers of their own per interval.
    let (interval, callers) = (1u64, 2u64);
    let daemon = TestDaemon::start(&config(
        "agg-flood",
        &log,
        &format!("refusal_interval_seconds = {interval}\nrefusal_callers = {callers}\n"),
    ))
    .await;
    let mint = json!({"issuer": "agg-flood", "aud": "api"});
    let started = Instant::now();
    let flood: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(refused_requests(daemon.http, FLOOD / CONNECTIONS)))
        .collect();
    // Minting works during the flood...
    let reply = daemon.post("/v1/tokens", &mint).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let mut unauthenticated = 0;
    for task in flood {
        unauthenticated += tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("the flood finishes")
            .unwrap();
    }
    // ...and after it.
    let reply = daemon.post("/v1/tokens", &mint).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    // A named caller's refusals are still records of their own.
    let bad = json!({"issuer": "agg-flood", "aud": "not-allowed"});
    for _ in 0..2 {
        assert_eq!(
            daemon.post("/v1/tokens", &bad).await.code(),
            "audience_not_allowed"
        );
    }
    daemon.shutdown().await;
    let elapsed = started.elapsed().as_secs() + 1;

    let all = crate::common::audit_records(&log);
    let aggregates: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"] == "refused_aggregate")
        .collect();
    // The documented bound: at most refusal_callers + 1 records per interval, over the
    // intervals the flood touched.
    let bound = (elapsed / interval + 1) * (callers + 1);
    assert!(
        (1..=bound as usize).contains(&aggregates.len()),
        "{} refused_aggregate records for {elapsed} s, bound {bound}",
        aggregates.len()
    );
    // Genesis, start, two mints, two named refusals, stop, and checkpoints: the flood
    // added nothing but the aggregates. (Keys other tests generate in the shared test
    // store meanwhile are recorded as they appear: not this test's records.)
    let own: Vec<&Value> = all
        .iter()
        .filter(|r| {
            let event = r["event"].as_str().unwrap_or_default();
            !(event.starts_with("key_") && r["issuer"] != "agg-flood")
        })
        .collect();
    assert!(
        own.len() <= aggregates.len() + 12,
        "{} records: {:?}",
        own.len(),
        own.iter().map(|r| &r["event"]).collect::<Vec<_>>()
    );
    let folded: u64 = aggregates
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(
        (unauthenticated as u64..=FLOOD as u64).contains(&folded),
        "{folded} refusals counted, {unauthenticated} answered 401"
    );
    for r in &aggregates {
        assert_eq!(
            r["caller"],
            json!({"transport": "tcp", "addr": "127.0.0.1"})
        );
        assert_eq!(r["outcome"], "refused");
        assert_eq!(r["requests"]["POST /v1/tokens"], r["count"]);
        assert!(r["since"].is_string() && r["until"].is_string(), "{r}");
    }
    let named: Vec<&Value> = all.iter().filter(|r| r["event"] == "refused").collect();
    assert_eq!(named.len(), 2, "{named:?}");
    for r in named {
        assert_eq!(r["caller"]["uid"], my_uid());
        assert_eq!(r["code"], "audience_not_allowed");
    }

    // signetd audit verify passes and knows the aggregates.
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca().await.chain_pem()).unwrap();
    let out = std::process::Command::new(signetd_bin())
        .args(["audit", "verify", "--root"])
        .arg(&root)
        .arg(&log)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "refusals: 2 recorded one by one; {folded} more in {} refused_aggregate record(s)",
            aggregates.len()
        )),
        "{text}"
    );
    // An aggregate record without its count is named as such.
    let segment = verify::segment_paths(std::slice::from_ref(&log)).unwrap()[0].clone();
    let edited = segment_text(&segment)
        .lines()
        .map(|line| match line.find("\"count\":") {
            // Only this line changes, so the chain up to it still holds.
            Some(at) if line.contains("\"refused_aggregate\"") => {
                let end = at + line[at..].find(',').unwrap() + 1;
                format!("{}{}\n", &line[..at], &line[end..])
            }
            _ => format!("{line}\n"),
        })
        .collect::<String>();
    let copy = dir.path().join("edited.jsonl");
    std::fs::write(&copy, edited).unwrap();
    let root_der = ca().await.top().to_vec();
    let broken = verify::verify(&[copy], &root_der, false, &mut |_, _, _| {}).unwrap_err();
    assert!(
        broken
            .reason
            .contains("refused_aggregate record without a positive count"),
        "{broken}"
    );
}

/// Below the reserve, refusal records are dropped (and counted); minting goes on.
#[tokio::test]
async fn below_the_reserve_refusals_are_dropped_and_minting_goes_on() {
    generate_key("agg-reserve", Algorithm::Es256).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    // No filesystem has 8 EiB free: the log is always below its reserve.
    let daemon = TestDaemon::start(&config(
        "agg-reserve",
        &log,
        &format!(
            "reserve_bytes = {}\nrefusal_interval_seconds = 1\n",
            i64::MAX
        ),
    ))
    .await;
    let bad = json!({"issuer": "agg-reserve", "aud": "not-allowed"});
    assert_eq!(
        daemon.post("/v1/tokens", &bad).await.code(),
        "audience_not_allowed"
    );
    assert_eq!(refused_requests(daemon.http, 100).await, 100);
    let reply = daemon
        .post(
            "/v1/tokens",
            &json!({"issuer": "agg-reserve", "aud": "api"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let service = daemon.service.clone();
    daemon.shutdown().await;
    // The named refusal, and the aggregate of the anonymous ones, were dropped (two
    // aggregates when the burst straddles an interval's end).
    let dropped = service.refusal_records_dropped();
    assert!(
        (2..=3).contains(&dropped),
        "{dropped} refusal records dropped"
    );
    let all = crate::common::audit_records(&log);
    assert!(all.iter().any(|r| r["event"] == "mint"));
    assert!(
        !all.iter()
            .any(|r| r["event"] == "refused" || r["event"] == "refused_aggregate"),
        "{all:?}"
    );
}
