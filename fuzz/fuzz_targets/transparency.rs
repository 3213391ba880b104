//! What the audit log's transparency parts read from outside: tile paths from any
//! auditor's request (`audit::tiles::TilePath`), checkpoint texts and signed notes
//! (`audit::note`: `audit verify --checkpoint` takes a file from anyone), and a tree
//! file and segment of any content at a writer's start (`audit::tree::file::HashFile`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signetd::audit::note::{self, TreeHead};
use signetd::audit::tiles::TilePath;
use signetd::audit::tree::HASHES_FILE;
use signetd::audit::tree::file::HashFile;

/// A verifier key of the form signetd publishes (which key does not matter: the note
/// is parsed before any signature is checked).
fn vkey() -> &'static str {
    static VKEY: OnceLock<String> = OnceLock::new();
    VKEY.get_or_init(|| {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        note::verifier_key("signetd-audit/00", key.as_bytes())
    })
}

/// A directory of this process's own, emptied before each input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::temp_dir().join(format!("signetd-fuzz-tlog-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TilePath::parse(text);
    }
    let _ = TreeHead::parse(data);
    let _ = note::open(data, vkey());
    // The input split in two: a tree file and a segment, opened as a writer would.
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (hashes, segment) = data.split_at(split);
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("a temp dir");
    std::fs::write(dir.join(HASHES_FILE), hashes).expect("a temp file");
    std::fs::write(dir.join("segment-000001.jsonl"), segment).expect("a temp file");
    let records = segment.iter().filter(|&&b| b == b'\n').count() as u64;
    let _ = HashFile::open(dir, records, None);
});
