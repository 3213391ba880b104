//! Where an existing log left off, and recovery of a torn last record at open.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Segment, io, list, records_end, segment_name, sync_dir};
use crate::audit::AuditError;
use crate::audit::record::{Record, line_hash};

/// Where an existing log left off.
#[derive(Debug)]
pub struct Tail {
    /// The segment to continue.
    pub segment: Segment,
    /// The log's id.
    pub log_id: String,
    /// The last durable record.
    pub last: Record,
    /// Its chain hash.
    pub head: String,
    /// Records after the segment's last checkpoint (all of them if it has none).
    pub unsigned: u64,
    /// The last checkpoint's signed note, if it is one (logs of 0.1 hold JWS): what the
    /// tree file is checked against at open.
    pub last_note: Option<String>,
}

/// A torn record cut from the end of the log at open.
#[derive(Debug)]
pub struct Torn {
    /// The segment it was cut from.
    pub segment: PathBuf,
    /// How many bytes.
    pub len: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// Where they were kept.
    pub kept: PathBuf,
}

/// Opens the last segment of an existing log, or `None` for an empty directory.
///
/// A crash can leave part of a record after the last newline; it is cut off and kept
/// in a `torn-*.bin` file beside the segments, and reported so the writer records it.
/// The zeros a segment is extended with ahead of its records are cut off too: the
/// records end at the first zero byte. (What a crash left after that, of a batch
/// written out of order, is torn as well.)
/// Anything else odd (a last line that is not a record, a segment without a first
/// record) refuses to open: `signetd audit verify` says what is wrong.
pub fn open_tail(dir: &Path) -> Result<(Option<Tail>, Option<Torn>), AuditError> {
    let mut segments = list(dir).map_err(|e| io(format!("cannot list {}", dir.display()), e))?;
    let Some((number, path)) = segments.pop() else {
        return Ok((None, None));
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io(format!("cannot open {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io(format!("cannot read {}", path.display()), e))?;
    let zeros_from = records_end(&bytes);
    let complete = bytes[..zeros_from]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    // After the last whole record: zeros, and any bytes a crash left of a batch that
    // never became durable. Only those bytes are kept as evidence.
    let after = &bytes[complete..];
    let removed = &after[..after.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
    let beyond_zeros = &bytes[zeros_from..complete + removed.len()];
    if !beyond_zeros.is_empty() && !one_batch(beyond_zeros) {
        return Err(AuditError::Damaged(format!(
            "{}: zeros at offset {zeros_from}, then records of more than one batch: not what \
             a crash leaves (a damaged or restored file?); run `signetd audit verify {}` to \
             see where",
            path.display(),
            dir.display()
        )));
    }
    let mut torn = None;
    if !removed.is_empty() {
        let keep = keep_torn(dir, number, complete as u64, removed)?;
        torn = Some(Torn {
            segment: path.clone(),
            len: removed.len() as u64,
            sha256: line_hash(removed),
            kept: keep,
        });
    }
    if complete < bytes.len() {
        file.set_len(complete as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                io(
                    format!("cannot cut {} back to its last record", path.display()),
                    e,
                )
            })?;
        bytes.truncate(complete);
    }
    if bytes.is_empty() {
        // A segment created but whose first record never became durable: drop it and
        // continue the one before (or start the log afresh).
        drop(file);
        std::fs::remove_file(&path)
            .map_err(|e| io(format!("cannot remove {}", path.display()), e))?;
        let (tail, earlier) = open_tail(dir)?;
        return Ok((tail, torn.or(earlier)));
    }
    let damaged = |why: &str| {
        AuditError::Damaged(format!(
            "{}: {why}; run `signetd audit verify {}` to see where",
            path.display(),
            dir.display()
        ))
    };
    // Every line is complete here: the file ends with a newline.
    let body = &bytes[..bytes.len() - 1];
    let first = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let last_line = body.rsplit(|&b| b == b'\n').next().unwrap_or_default();
    let first: Record =
        serde_json::from_slice(first).map_err(|_| damaged("the first line is not a record"))?;
    let last: Record =
        serde_json::from_slice(last_line).map_err(|_| damaged("the last line is not a record"))?;
    // The writer continues at `last.seq + 1`: a last seq at the maximum (which only a
    // damaged or forged file holds) would overflow it.
    if last.seq == u64::MAX {
        return Err(damaged("the last record's seq is past the end of any log"));
    }
    let checkpoint = last_checkpoint(body, &segments)?;
    let unsigned = match &checkpoint {
        Some(checkpoint) => last.seq.saturating_sub(checkpoint.seq),
        None => last.seq + 1,
    };
    let log_id = first
        .log_id
        .clone()
        .ok_or_else(|| damaged("the first record carries no log_id"))?;
    let tail = Tail {
        head: line_hash(last_line),
        segment: Segment {
            number,
            path,
            file,
            len: bytes.len() as u64,
            allocated: bytes.len() as u64,
            preallocate: true,
        },
        log_id,
        last,
        unsigned,
        last_note: checkpoint.and_then(|c| c.note),
    };
    Ok((Some(tail), torn))
}

/// Whether the records in `bytes` (what follows the first zero of a segment, up to its
/// last non-zero byte) could all be of one batch, the one a crash can leave partly
/// written: the writer stamps every record of a batch with the same time. Records of
/// several batches after zeros are records that were durable, behind damage, and must
/// not be cut as torn.
fn one_batch(bytes: &[u8]) -> bool {
    let mut times = bytes
        .split(|&b| b == b'\n')
        .map(|line| &line[line.iter().position(|&b| b != 0).unwrap_or(line.len())..])
        .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
        .map(|record| record.time);
    match times.next() {
        Some(first) => times.all(|time| time == first),
        None => true,
    }
}

/// The log's last checkpoint record: searched from the end of `body` (the last
/// segment), then of the `earlier` segments, newest first.
fn last_checkpoint(body: &[u8], earlier: &[(u64, PathBuf)]) -> Result<Option<Record>, AuditError> {
    let find = |bytes: &[u8]| {
        bytes
            .split(|&b| b == b'\n')
            .rev()
            .filter_map(|line| serde_json::from_slice::<Record>(line).ok())
            .find(|r| r.entry.event == crate::audit::record::Event::Checkpoint)
    };
    if let Some(record) = find(body) {
        return Ok(Some(record));
    }
    for (_, path) in earlier.iter().rev() {
        let bytes =
            std::fs::read(path).map_err(|e| io(format!("cannot read {}", path.display()), e))?;
        if let Some(record) = find(&bytes) {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// Keeps the bytes of a torn record beside the log, durably, before they are cut: the
/// evidence survives even if the process dies before it can record the cut.
fn keep_torn(dir: &Path, segment: u64, offset: u64, bytes: &[u8]) -> Result<PathBuf, AuditError> {
    let stem = format!(
        "torn-{}-{offset}",
        segment_name(segment).trim_end_matches(".jsonl")
    );
    for attempt in 0..100 {
        let name = match attempt {
            0 => format!("{stem}.bin"),
            n => format!("{stem}.{n}.bin"),
        };
        let path = dir.join(name);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut file = match created {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io(format!("cannot create {}", path.display()), e)),
        };
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                io(
                    format!("cannot keep the torn record in {}", path.display()),
                    e,
                )
            })?;
        sync_dir(dir)?;
        return Ok(path);
    }
    Err(AuditError::Io(format!(
        "too many {stem}.*.bin files in {}",
        dir.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::segment::PREALLOCATE;

    const GENESIS: &str = r#"{"seq":0,"time":"2026-12-01T00:00:00Z","event":"genesis","log_id":"L","segment":1,"prev":"AAAA"}"#;
    const START: &str = r#"{"seq":1,"time":"2026-12-01T00:00:01Z","event":"start","prev":"BBBB"}"#;

    /// A log whose one segment holds `bytes`.
    fn log_of(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(1));
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn records() -> Vec<u8> {
        format!("{GENESIS}\n{START}\n").into_bytes()
    }

    #[test]
    fn the_zeros_after_the_records_are_cut_and_are_no_torn_record() {
        let mut bytes = records();
        bytes.resize(bytes.len() + PREALLOCATE as usize, 0);
        let (dir, path) = log_of(&bytes);
        let (tail, torn) = open_tail(dir.path()).unwrap();
        let tail = tail.unwrap();
        assert!(torn.is_none(), "{torn:?}");
        assert_eq!(tail.last.seq, 1);
        let len = records().len() as u64;
        assert_eq!((tail.segment.len, tail.segment.allocated), (len, len));
        assert_eq!(std::fs::read(&path).unwrap(), records());
    }

    #[test]
    fn a_torn_record_before_the_zeros_is_kept_without_them() {
        let mut bytes = records();
        bytes.extend_from_slice(br#"{"seq":2,"ti"#);
        bytes.resize(bytes.len() + 4096, 0);
        let (dir, path) = log_of(&bytes);
        let (tail, torn) = open_tail(dir.path()).unwrap();
        assert_eq!(tail.unwrap().last.seq, 1);
        let torn = torn.expect("a torn record");
        assert_eq!(std::fs::read(&torn.kept).unwrap(), br#"{"seq":2,"ti"#);
        assert_eq!(std::fs::read(&path).unwrap(), records());
    }

    #[test]
    fn bytes_a_crash_left_after_a_gap_of_zeros_are_torn_too() {
        // A batch whose second page reached the disk and whose first did not.
        let mut bytes = records();
        bytes.resize(bytes.len() + 100, 0);
        bytes.extend_from_slice(br#"2","event":"mint"}"#);
        bytes.resize(bytes.len() + 4096, 0);
        let (dir, path) = log_of(&bytes);
        let (tail, torn) = open_tail(dir.path()).unwrap();
        assert_eq!(tail.unwrap().last.seq, 1);
        let kept = std::fs::read(torn.expect("torn").kept).unwrap();
        assert_eq!(kept.len(), 100 + br#"2","event":"mint"}"#.len());
        assert!(kept.ends_with(br#""mint"}"#));
        assert_eq!(std::fs::read(&path).unwrap(), records());
    }

    #[test]
    fn records_of_several_batches_after_zeros_are_damage_not_a_torn_record() {
        // A zeroed block inside records that were durable: cutting there would drop
        // them and reuse their seqs.
        let mut bytes = format!("{GENESIS}\n").into_bytes();
        bytes.resize(bytes.len() + 512, 0);
        bytes.extend_from_slice(format!("{START}\n").as_bytes());
        let later = START
            .replace(":01Z", ":02Z")
            .replace("\"seq\":1", "\"seq\":2");
        bytes.extend_from_slice(format!("{later}\n").as_bytes());
        let (dir, path) = log_of(&bytes);
        let refused = open_tail(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("more than one batch"), "{refused}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing cut");
    }

    #[test]
    fn a_segment_of_zeros_alone_is_removed() {
        let (dir, path) = log_of(&vec![0; 4096]);
        let (tail, torn) = open_tail(dir.path()).unwrap();
        assert!(tail.is_none() && torn.is_none());
        assert!(!path.exists());
    }
}
