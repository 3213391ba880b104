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
    let line = r#"{"seq":0,"time":"2026-01-01T00:00:00Z","event":"mint","prev":"x"}"#;
    let mut bytes = format!("{line}\n").into_bytes();
    bytes.resize(bytes.len() + 4096, 0);
    std::fs::write(&path, &bytes).unwrap();
    let broken = verify(std::slice::from_ref(&path), &[], false, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(broken.at.line, 1, "the record is read: {}", broken.reason);
    assert!(!broken.reason.contains("zeros"), "{}", broken.reason);
    bytes.extend_from_slice(b"{\"seq\":1}\n");
    std::fs::write(&path, &bytes).unwrap();
    let broken = verify(std::slice::from_ref(&path), &[], false, &mut |_, _, _| {}).unwrap_err();
    assert_eq!(broken.at.line, 0);
    assert!(
        broken.reason.contains("bytes after the zeros"),
        "{}",
        broken.reason
    );
    std::fs::write(&path, vec![0; 4096]).unwrap();
    let broken = verify(&[path], &[], false, &mut |_, _, _| {}).unwrap_err();
    assert!(broken.reason.contains("no record"), "{}", broken.reason);
}
