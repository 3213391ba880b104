//! The tree's stored hashes on disk ([`HASHES_FILE`]): appended after each durable
//! batch, read for tiles and proofs, rebuilt from the segments at start.
//!
//! The segments are the record; this file is an index of them. It is appended without
//! an fsync: after a crash it may be shorter than the segments (it is extended from
//! them) or, after a torn record was cut, longer (it is cut back). A failed append
//! stops further appends until the next start rather than refuse signing: the log
//! itself is durable, and the file is rebuilt from it.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use tlog_tiles::{HASH_SIZE, Hash, HashReader, stored_hash_count};

use super::{Frontier, HASHES_FILE};
use crate::audit::AuditError;
use crate::audit::note::TreeHead;
use crate::audit::segment;

/// The open hash file of a log.
#[derive(Debug)]
pub struct HashFile {
    file: File,
    /// Set when an append failed: later appends would leave a gap.
    broken: bool,
}

impl HashFile {
    /// Opens (or creates) the hash file of the log in `dir`, whose segments hold
    /// `records` records, and brings it in line with them. Returns the file and the
    /// tree of those records.
    ///
    /// The file is not trusted past `known`, the log's last signed checkpoint: the
    /// records after it are hashed again from the segments, and the tree the file
    /// holds must have the root `known` states, or the file is rebuilt from every
    /// segment (a power loss can leave zeros in a file never fsynced). If even the
    /// segments do not hash to that root, the log is damaged and stays closed.
    pub fn open(
        dir: &Path,
        records: u64,
        known: Option<&TreeHead>,
    ) -> Result<(HashFile, Frontier), AuditError> {
        let known = known.filter(|k| k.size <= records);
        let (hashes, tree) = Self::extend(dir, records, known.map(|k| k.size))?;
        let Some(known) = known else {
            return Ok((hashes, tree));
        };
        let matches = |file: &HashFile| {
            tlog_tiles::tree_hash(known.size, file).is_ok_and(|root| root == known.root)
        };
        if matches(&hashes) {
            return Ok((hashes, tree));
        }
        tracing::warn!(
            size = known.size,
            "the audit log's tree file does not match its last signed checkpoint; rebuilding it from the segments"
        );
        hashes
            .file
            .set_len(0)
            .map_err(|e| AuditError::Io(format!("{HASHES_FILE}: {e}")))?;
        let (hashes, tree) = Self::extend(dir, records, Some(0))?;
        if !matches(&hashes) {
            return Err(AuditError::Damaged(format!(
                "the records before seq {} do not hash to the root its signed checkpoint states: run `signetd audit verify`",
                known.size
            )));
        }
        Ok((hashes, tree))
    }

    /// Opens the file, keeps at most the hashes of its first `trusted` records (all it
    /// has if `None`), and extends it from the segments to `records`.
    fn extend(
        dir: &Path,
        records: u64,
        trusted: Option<u64>,
    ) -> Result<(HashFile, Frontier), AuditError> {
        let path = dir.join(HASHES_FILE);
        let failed = |e: std::io::Error| AuditError::Io(format!("{}: {e}", path.display()));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed)?;
        let len = file.metadata().map_err(failed)?.len() / HASH_SIZE as u64;
        // The most records whose hashes the file holds whole.
        let (mut low, mut high) = (0u64, trusted.unwrap_or(records).min(records));
        while low < high {
            let mid = high - (high - low) / 2;
            if stored_hash_count(mid) <= len {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        let hashed = low;
        file.set_len(stored_hash_count(hashed) * HASH_SIZE as u64)
            .map_err(failed)?;
        let mut hashes = HashFile {
            file,
            broken: false,
        };
        let mut tree = Frontier::read(hashed, &hashes)
            .map_err(|e| AuditError::Io(format!("{}: {e}", path.display())))?;
        if hashed < records {
            tracing::info!(
                hashed,
                records,
                "audit log: adding the records the tree file lacks"
            );
            let mut stored = Vec::new();
            for_each_line(dir, hashed, records, |line| {
                tree.append(line, &mut stored);
                if stored.len() >= 1 << 20 {
                    hashes.append(&stored)?;
                    stored.clear();
                }
                Ok(())
            })
            .map_err(|e| {
                AuditError::Io(format!(
                    "{e}: {HASHES_FILE} lacks their hashes; put the archived segments back for one start (or restore {HASHES_FILE})"
                ))
            })?;
            hashes.append(&stored)?;
        }
        Ok((hashes, tree))
    }

    /// Opens the tree file of the log in `dir` for reading only, beside the writer.
    pub fn reader(dir: &Path) -> Result<HashFile, AuditError> {
        let path = dir.join(HASHES_FILE);
        let file =
            File::open(&path).map_err(|e| AuditError::Io(format!("{}: {e}", path.display())))?;
        Ok(HashFile { file, broken: true })
    }

    /// Appends the stored hashes of a durable batch; returns whether the file holds
    /// them. A failure is logged once and stops appends until the next start.
    pub fn append_logged(&mut self, stored: &[u8]) -> bool {
        if self.broken {
            return false;
        }
        if let Err(e) = self.append(stored) {
            self.broken = true;
            tracing::error!(error = %e, "cannot append to the audit log's tree file; tiles stop growing until signetd is restarted (the log itself is unaffected)");
            return false;
        }
        true
    }

    fn append(&mut self, stored: &[u8]) -> Result<(), AuditError> {
        self.file
            .write_all(stored)
            .map_err(|e| AuditError::Io(format!("{HASHES_FILE}: {e}")))
    }
}

impl HashReader for HashFile {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::tlog::Error> {
        indexes
            .iter()
            .map(|&index| {
                let mut hash = [0; HASH_SIZE];
                self.file
                    .read_exact_at(&mut hash, index * HASH_SIZE as u64)
                    .map_err(|e| {
                        tlog_tiles::tlog::Error::InvalidInput(format!("stored hash {index}: {e}"))
                    })?;
                Ok(Hash(hash))
            })
            .collect()
    }
}

/// Calls `f` with each line (no newline) of records `from..to` of the log in `dir`, in
/// order, starting at the last segment that begins at or before `from`.
pub fn for_each_line(
    dir: &Path,
    from: u64,
    to: u64,
    mut f: impl FnMut(&[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let io = |path: &Path, e: std::io::Error| AuditError::Io(format!("{}: {e}", path.display()));
    let segments = segment::list(dir).map_err(|e| io(dir, e))?;
    let mut start = 0;
    for (i, (_, path)) in segments.iter().enumerate() {
        match segment_first_seq(path)? {
            Some(seq) if seq <= from => start = i,
            Some(_) => break,
            None => {}
        }
    }
    let mut next = from;
    for (_, path) in &segments[start.min(segments.len())..] {
        let file = File::open(path).map_err(|e| io(path, e))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| io(path, e))?;
            if line.first() == Some(&0) {
                // The zeros the segment being written is extended with: its records
                // end here.
                break;
            }
            let Some(seq) = seq_of(&line) else {
                return Err(AuditError::Io(format!(
                    "{}: a line that is not a record",
                    path.display()
                )));
            };
            if seq < next {
                continue;
            }
            if seq != next && next == from {
                // Segments moved elsewhere (archived) that the tree file never hashed:
                // the tree of the whole log cannot be computed without them.
                return Err(AuditError::Io(format!(
                    "the records from seq {from} to {} are not in {} (segments moved elsewhere?)",
                    seq - 1,
                    dir.display()
                )));
            }
            if seq != next {
                return Err(AuditError::Io(format!(
                    "{}: seq {seq} where {next} was expected",
                    path.display()
                )));
            }
            if next == to {
                return Ok(());
            }
            f(&line)?;
            next += 1;
        }
    }
    if next == to {
        Ok(())
    } else {
        Err(AuditError::Io(format!(
            "the segments end at seq {next}, before {to}"
        )))
    }
}

/// The `seq` of the first record in the log's directory `dir` (`None` if it holds no
/// segment): records before it were archived.
pub fn first_seq(dir: &Path) -> Result<Option<u64>, AuditError> {
    let segments =
        segment::list(dir).map_err(|e| AuditError::Io(format!("{}: {e}", dir.display())))?;
    match segments.first() {
        Some((_, path)) => segment_first_seq(path),
        None => Ok(None),
    }
}

/// The `seq` of the first record of the segment at `path`, if its first line is one.
fn segment_first_seq(path: &Path) -> Result<Option<u64>, AuditError> {
    let io = |e: std::io::Error| AuditError::Io(format!("{}: {e}", path.display()));
    let mut first = Vec::new();
    BufReader::new(File::open(path).map_err(io)?)
        .read_until(b'\n', &mut first)
        .map_err(io)?;
    Ok(seq_of(&first))
}

/// The `seq` of a record line: every line starts `{"seq":N,`.
fn seq_of(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_segment(dir: &Path, number: u64, seqs: std::ops::Range<u64>) {
        let text: String = seqs.map(|s| format!("{{\"seq\":{s},\"x\":1}}\n")).collect();
        std::fs::write(dir.join(segment::segment_name(number)), text).unwrap();
    }

    fn tree_of(records: u64) -> Frontier {
        let mut tree = Frontier::new();
        for s in 0..records {
            tree.append(
                format!("{{\"seq\":{s},\"x\":1}}").as_bytes(),
                &mut Vec::new(),
            );
        }
        tree
    }

    #[test]
    fn lines_are_read_up_to_the_zeros_of_the_segment_being_written() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 0..3);
        let path = dir.path().join(segment::segment_name(2));
        write_segment(dir.path(), 2, 3..5);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.resize(bytes.len() + 4096, 0);
        std::fs::write(&path, bytes).unwrap();
        let mut seen = Vec::new();
        for_each_line(dir.path(), 1, 5, |line| {
            seen.push(seq_of(line).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        let short = for_each_line(dir.path(), 0, 6, |_| Ok(())).unwrap_err();
        assert!(short.to_string().contains("end at seq 5"), "{short}");
    }

    #[test]
    fn the_file_is_built_from_the_segments_and_cut_back_or_extended_to_match_them() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 0..10);
        write_segment(dir.path(), 2, 10..25);
        let (_, tree) = HashFile::open(dir.path(), 25, None).unwrap();
        assert_eq!(tree, tree_of(25));
        let path = dir.path().join(HASHES_FILE);
        let full = std::fs::metadata(&path).unwrap().len();
        assert_eq!(full, stored_hash_count(25) * HASH_SIZE as u64);

        // A torn record was cut from the segments: the file follows.
        let (file, tree) = HashFile::open(dir.path(), 20, None).unwrap();
        assert_eq!(tree, tree_of(20));
        assert_eq!(tlog_tiles::tree_hash(20, &file).unwrap(), tree.root());
        // A crash before the last appends reached the file: extended again, from the
        // second segment only.
        std::fs::write(dir.path().join(segment::segment_name(1)), "garbage\n").unwrap();
        let (_, tree) = HashFile::open(dir.path(), 25, None).unwrap();
        assert_eq!(tree, tree_of(25));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full);
    }

    #[test]
    fn a_file_with_a_partial_hash_is_cut_to_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 0..5);
        HashFile::open(dir.path(), 3, None).unwrap();
        let path = dir.path().join(HASHES_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[9; 40]);
        std::fs::write(&path, bytes).unwrap();
        let (_, tree) = HashFile::open(dir.path(), 5, None).unwrap();
        assert_eq!(tree, tree_of(5));
    }

    #[test]
    fn a_file_that_does_not_match_the_last_signed_root_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 0..20);
        HashFile::open(dir.path(), 20, None).unwrap();
        let path = dir.path().join(HASHES_FILE);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        // A power loss left zeros where hashes were.
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let known = TreeHead {
            origin: "o".into(),
            size: 12,
            root: tree_of(12).root(),
        };
        let (file, tree) = HashFile::open(dir.path(), 20, Some(&known)).unwrap();
        assert_eq!(tree, tree_of(20));
        assert_eq!(
            tlog_tiles::tree_hash(20, &file).unwrap(),
            tree_of(20).root()
        );
        // Segments that do not hash to the signed root: the log is damaged.
        let forged = TreeHead {
            root: tree_of(11).root(),
            ..known
        };
        let refused = HashFile::open(dir.path(), 20, Some(&forged)).unwrap_err();
        assert!(matches!(refused, AuditError::Damaged(_)), "{refused}");
    }

    #[test]
    fn archived_segments_the_file_never_hashed_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 2, 10..25);
        let refused = HashFile::open(dir.path(), 25, None)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("the records from seq 0 to 9 are not in")
                && refused.contains("put the archived segments back"),
            "{refused}"
        );
        assert_eq!(first_seq(dir.path()).unwrap(), Some(10));
        // Once hashed, the file stands in for them.
        write_segment(dir.path(), 1, 0..10);
        HashFile::open(dir.path(), 25, None).unwrap();
        std::fs::remove_file(dir.path().join(segment::segment_name(1))).unwrap();
        let (_, tree) = HashFile::open(dir.path(), 25, None).unwrap();
        assert_eq!(tree, tree_of(25));
    }

    #[test]
    fn segments_that_lack_records_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 1, 0..5);
        assert!(HashFile::open(dir.path(), 6, None).is_err());
    }
}
