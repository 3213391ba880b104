//! The segment files as the writer sees them: where the next batch goes, roll-over when
//! a segment is full, and one durable append per batch. A port, so the writer runs
//! against a store that fails on demand in tests.

use std::path::{Path, PathBuf};

use crate::audit::AuditError;
use crate::audit::segment::{DirLock, Segment};
use crate::audit::tree::file::HashFile;

/// A write that did not become durable.
#[derive(Debug)]
pub(in crate::audit) struct WriteFailed {
    /// Why.
    pub error: String,
    /// Whether the batch's bytes were cut back out. If not, the file's end is unknown.
    pub cut: bool,
}

/// Where the writer's batches go.
pub(in crate::audit) trait Store: Send {
    /// The number of the segment the next batch goes to, if nothing is in it yet: the
    /// batch must start with the segment's first record.
    fn fresh_segment(&self) -> Option<u64>;

    /// Starts the next segment if the current one is full.
    fn roll_if_full(&mut self) -> Result<(), AuditError>;

    /// Writes `bytes` and makes them durable: one write and one fdatasync (and, when the
    /// zeros ahead of the records run out, the writes of the next MiB of them). On
    /// failure, cuts them back out, so no partial record stays.
    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteFailed>;

    /// Adds the stored tree hashes of a durable batch's records to the tree file (no
    /// fsync: it is rebuilt from the segments at start). False once an append failed:
    /// the file stops growing until the next start.
    fn append_hashes(&mut self, hashes: &[u8]) -> bool;

    /// Cuts the zeros the segment being written was extended with off its end, once the
    /// writer stops (a closed segment ends with its last record).
    fn seal(&mut self) -> Result<(), AuditError>;

    /// The file being written, for messages.
    fn path(&self) -> &Path;
}

/// The log directory: its lock, the segment being written and the tree file.
#[derive(Debug)]
pub(in crate::audit) struct SegmentFiles {
    dir: PathBuf,
    /// Start a new segment once this many bytes are in the current one.
    segment_bytes: u64,
    segment: Segment,
    hashes: HashFile,
    _lock: DirLock,
}

impl SegmentFiles {
    /// Continues `segment` and the tree file `hashes` of the log in `dir`, whose `lock`
    /// is held for as long as this lives.
    pub fn new(
        dir: PathBuf,
        lock: DirLock,
        segment: Segment,
        hashes: HashFile,
        segment_bytes: u64,
    ) -> Self {
        SegmentFiles {
            dir,
            segment_bytes,
            segment,
            hashes,
            _lock: lock,
        }
    }
}

impl Store for SegmentFiles {
    fn fresh_segment(&self) -> Option<u64> {
        (self.segment.len == 0).then_some(self.segment.number)
    }

    fn roll_if_full(&mut self) -> Result<(), AuditError> {
        if self.segment.len < self.segment_bytes {
            return Ok(());
        }
        self.seal()?;
        let next = Segment::create(&self.dir, self.segment.number + 1)?;
        tracing::info!(segment = %next.path.display(), "audit log: new segment");
        self.segment = next;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteFailed> {
        self.segment
            .append(bytes, self.segment_bytes)
            .map_err(|(e, cut)| WriteFailed {
                error: e.to_string(),
                cut,
            })
    }

    fn append_hashes(&mut self, hashes: &[u8]) -> bool {
        self.hashes.append_logged(hashes)
    }

    fn seal(&mut self) -> Result<(), AuditError> {
        self.segment.seal().map_err(|e| {
            AuditError::Io(format!(
                "cannot cut {} back to its last record: {e}",
                self.segment.path.display()
            ))
        })
    }

    fn path(&self) -> &Path {
        &self.segment.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::segment;

    #[test]
    fn a_full_segment_rolls_over_to_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let lock = segment::lock(dir.path()).unwrap();
        let first = Segment::create(dir.path(), 1).unwrap();
        let (hashes, _) = HashFile::open(dir.path(), 0, None).unwrap();
        let mut files = SegmentFiles::new(dir.path().to_path_buf(), lock, first, hashes, 10);
        assert_eq!(files.fresh_segment(), Some(1));
        files.roll_if_full().unwrap();
        assert_eq!(
            files.fresh_segment(),
            Some(1),
            "an empty segment is not full"
        );
        files.append(b"0123456789\n").unwrap();
        assert_eq!(files.fresh_segment(), None);
        files.roll_if_full().unwrap();
        assert_eq!(files.fresh_segment(), Some(2));
        assert!(files.path().ends_with(segment::segment_name(2)));
        let sizes: Vec<u64> = segment::list(dir.path())
            .unwrap()
            .iter()
            .map(|(_, p)| std::fs::metadata(p).unwrap().len())
            .collect();
        assert_eq!(sizes, [11, 0], "the full segment was sealed");
    }
}
