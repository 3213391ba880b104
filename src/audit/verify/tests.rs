//! Regression tests for inputs of the `audit_segment` fuzz target (fuzz/): found while
//! writing it, reproduced with it, and kept in its seed corpus.

use super::*;
use crate::audit::segment::{open_tail, segment_name};

/// A record with the largest seq once overflowed `seq + 1` (a panic in builds with
/// overflow checks, a wrap to 0 without): now a clear refusal from both readers.
#[test]
fn the_largest_seq_is_refused_not_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_name(1));
    let line = r#"{"seq":18446744073709551615,"time":"2026-01-01T00:00:00Z","event":"segment_start","log_id":"a","segment":1,"prev":"x"}"#;
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let broken = verify(&[path], &[], true, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(broken.at.line, 1);
    assert!(broken.reason.contains("past the end"), "{}", broken.reason);
    let refused = open_tail(dir.path()).unwrap_err().to_string();
    assert!(refused.contains("past the end"), "{refused}");
}

/// A segment being written ends with zeros: verify reads the records before them, and
/// anything but zeros after them is damage.
#[test]
fn zeros_end_a_segment_and_nothing_may_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_name(1));
    let verify_one = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        verify(std::slice::from_ref(&path), &[], true, &mut |_, _, _| {}).unwrap_err()
    };
    // A genesis record the chain accepts, then zeros past the reader's first buffer.
    let genesis = format!(
        r#"{{"seq":0,"time":"2026-01-01T00:00:00Z","event":"genesis","log_id":"a","segment":1,"prev":"{}"}}"#,
        crate::audit::record::GENESIS_PREV
    );
    let mut bytes = format!("{genesis}\n").into_bytes();
    bytes.resize(bytes.len() + 100_000, 0);
    std::fs::write(&path, &bytes).unwrap();
    let summary = verify(std::slice::from_ref(&path), &[], true, &mut |_, _, _| {}).unwrap();
    assert_eq!(summary.records, 1, "the zeros are not records");

    // Bytes after the zeros, far past the first buffer: damage.
    let mut after = bytes.clone();
    after.extend_from_slice(b"{\"seq\":1}\n");
    let broken = verify_one(&after);
    assert_eq!(
        (broken.at.line, broken.at.seq),
        (2, None),
        "{}",
        broken.reason
    );
    assert!(
        broken
            .reason
            .contains(&format!("offset {}", genesis.len() + 1))
    );
    assert!(
        broken.reason.contains("bytes after the zeros") && broken.reason.contains("offset"),
        "{}",
        broken.reason
    );
    // A record cut before the zeros began.
    let mut cut = format!("{genesis}\n{{\"seq\":1,").into_bytes();
    cut.resize(cut.len() + 10, 0);
    let broken = verify_one(&cut);
    assert_eq!(broken.at.line, 2);
    assert!(broken.reason.contains("incomplete"), "{}", broken.reason);
    // The same, with bytes after its zeros: damage, from where the zeros begin.
    cut.extend_from_slice(b"x");
    let broken = verify_one(&cut);
    assert_eq!(broken.at.line, 2);
    let cut_at = genesis.len() + 1 + "{\"seq\":1,".len();
    assert!(
        broken
            .reason
            .contains(&format!("bytes after the zeros at offset {cut_at}")),
        "{}",
        broken.reason
    );
    // Zeros only; nothing at all.
    assert!(verify_one(&[0; 4096]).reason.contains("no record"));
    assert!(verify_one(b"").reason.contains("is empty"));
}

/// Segments are read a line at a time: a line longer than any record is refused
/// without reading it whole, and a last line without its newline is a cut record.
#[test]
fn a_line_longer_than_any_record_is_refused_and_a_cut_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(segment_name(1));
    let mut long = b"{\"seq\":0,\"x\":\"".to_vec();
    long.resize(long.len() + MAX_LINE as usize + 10, b'a');
    long.extend_from_slice(b"\"}\n");
    std::fs::write(&path, &long).unwrap();
    let broken = verify(std::slice::from_ref(&path), &[], true, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(broken.at.line, 1);
    assert!(broken.reason.contains("longer than"), "{}", broken.reason);
    std::fs::write(&path, b"{\"seq\":0").unwrap();
    let broken = verify(std::slice::from_ref(&path), &[], true, &mut |_, _, _| {}).unwrap_err();
    assert!(broken.reason.contains("incomplete"), "{}", broken.reason);
}
