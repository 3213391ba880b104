//! The audit-log readers, on the input as the one segment of a log: `signetd audit
//! verify` (with and without an unsigned tail allowed; the operator root is empty, so
//! a checkpoint's signature never verifies, but everything before it is parsed), and
//! `open_tail`, which the writer runs at start to continue a log (it may cut a torn last
//! record, so it runs last).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signetd::audit::segment::{open_tail, segment_name};
use signetd::audit::verify::verify;

/// A directory of this process's own, emptied before each input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("signetd-fuzz-audit-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a temp dir");
    let path = dir.join(segment_name(1));
    std::fs::write(&path, data).expect("a temp file");
    let paths = [path];
    for allow_unsigned_tail in [false, true] {
        let _ = verify(&paths, &[], allow_unsigned_tail, &mut |_, _, _| {});
    }
    let _ = open_tail(dir);
});
