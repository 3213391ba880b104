//! Where an existing log left off, and recovery of a torn last record at open.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Segment, io, list, segment_name, sync_dir};
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
/// Anything else odd (a last line that is not a record, a segment without a first
/// record) refuses to open: `signetd audit verify` says what is wrong.
pub fn open_tail(dir: &Path) -> Result<(Option<Tail>, Option<Torn>), AuditError> {
    let mut segments = list(dir).map_err(|e| io(format!("cannot list {}", dir.display()), e))?;
    let Some((number, path)) = segments.pop() else {
        return Ok((None, None));
    };
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(|e| io(format!("cannot open {}", path.display()), e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io(format!("cannot read {}", path.display()), e))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut torn = None;
    if complete < bytes.len() {
        let removed = &bytes[complete..];
        let keep = keep_torn(dir, number, complete as u64, removed)?;
        file.set_len(complete as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                io(
                    format!("cannot cut the torn record from {}", path.display()),
                    e,
                )
            })?;
        torn = Some(Torn {
            segment: path.clone(),
            len: removed.len() as u64,
            sha256: line_hash(removed),
            kept: keep,
        });
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
    file.seek(SeekFrom::End(0))
        .map_err(|e| io(format!("cannot seek {}", path.display()), e))?;
    let tail = Tail {
        head: line_hash(last_line),
        segment: Segment {
            number,
            path,
            file,
            len: bytes.len() as u64,
        },
        log_id,
        last,
        unsigned,
        last_note: checkpoint.and_then(|c| c.note),
    };
    Ok((Some(tail), torn))
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
