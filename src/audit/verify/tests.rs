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
