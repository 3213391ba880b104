//! The log's files: a directory of numbered segments, the lock that keeps a second
//! writer out, and (in `recover`) recovery of a torn last record at open.
//!
//! Segments are `segment-000001.jsonl`, `segment-000002.jsonl`, ...; only the highest is
//! ever written. The directory is the operator's to archive: segments are never
//! deleted by signetd.

mod recover;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::AuditError;
pub use recover::{Tail, Torn, open_tail};

/// The file name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("segment-{n:06}.jsonl")
}

/// The segment number in a file name, if it is one.
pub fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// The segments in `dir`, in order.
pub fn list(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = segment_number(e.file_name().to_str()?)?;
            Some((n, e.path()))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> AuditError {
    AuditError::Io(format!("{what}: {e}"))
}

/// Creates `dir` (0700) if missing and refuses one that group or others may write: the
/// log's integrity rests on nobody else replacing its files.
pub fn prepare_dir(dir: &Path) -> Result<(), AuditError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(format!("cannot create {}", dir.display()), e))?;
    }
    let meta =
        std::fs::metadata(dir).map_err(|e| io(format!("cannot read {}", dir.display()), e))?;
    if !meta.is_dir() {
        return Err(AuditError::Io(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if Some(meta.uid()) != me {
        return Err(AuditError::Io(format!(
            "{} belongs to uid {}, not to the user signetd runs as",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(AuditError::Io(format!(
            "{} is writable by group or others (mode {:o}); chmod go-w it",
            dir.display(),
            meta.permissions().mode() & 0o777
        )));
    }
    Ok(())
}

/// The exclusive lock on a log directory, held for as long as it lives.
#[derive(Debug)]
pub struct DirLock(#[allow(dead_code)] File);

/// Takes the log's lock, or says that another process writes it.
pub fn lock(dir: &Path) -> Result<DirLock, AuditError> {
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Io(format!(
            "{} is in use by another signetd process",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io(format!("cannot lock {}", path.display()), e))
        }
    }
}

/// fsyncs a directory, so a newly created file's entry survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("cannot sync {}", dir.display()), e))
}

/// The segment being written.
#[derive(Debug)]
pub struct Segment {
    /// Its number.
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
    /// The open file, positioned at the end.
    pub file: File,
    /// Its length in bytes: everything durable.
    pub len: u64,
}

impl Segment {
    /// Creates segment `number` in `dir`. An empty file of that name (left by an
    /// earlier attempt whose directory sync failed) is reused; a non-empty one is an
    /// error, never overwritten.
    pub fn create(dir: &Path, number: u64) -> Result<Segment, AuditError> {
        let path = dir.join(segment_name(number));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io(format!("cannot create {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| io(format!("cannot read {}", path.display()), e))?
            .len();
        if len != 0 {
            return Err(AuditError::Damaged(format!(
                "{} already exists and is not empty",
                path.display()
            )));
        }
        sync_dir(dir)?;
        Ok(Segment {
            number,
            path,
            file,
            len: 0,
        })
    }

    /// Writes `bytes` and makes them durable; on failure, cuts the file back to where it
    /// was, so a failed write leaves no partial record. Returns `Err((write error,
    /// whether the cut worked))`.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), (std::io::Error, bool)> {
        append_or_cut(&mut self.file, &mut self.len, bytes)
    }
}

/// What an append does to a file; a trait so a test can fail a write partway.
trait AppendFile {
    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    fn sync_data(&self) -> std::io::Result<()>;
    fn set_len(&self, len: u64) -> std::io::Result<()>;
}

impl AppendFile for File {
    fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
}

/// [`Segment::append`] on `file`, whose durable length is `len`.
fn append_or_cut(
    file: &mut impl AppendFile,
    len: &mut u64,
    bytes: &[u8],
) -> Result<(), (std::io::Error, bool)> {
    let synced = file.write_bytes(bytes).and_then(|()| {
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        crate::telemetry::audit_fsync(started.elapsed());
        synced
    });
    match synced {
        Ok(()) => {
            *len += bytes.len() as u64;
            Ok(())
        }
        Err(e) => {
            let cut = file.set_len(*len).and_then(|()| file.sync_data()).is_ok();
            Err((e, cut))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::{Error, ErrorKind};

    use super::*;

    /// A file that takes `room` more bytes, then fails like a full disk.
    #[derive(Default)]
    struct Disk {
        bytes: RefCell<Vec<u8>>,
        room: usize,
        cut_fails: bool,
    }

    impl AppendFile for Disk {
        fn write_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            let fits = bytes.len().min(self.room);
            self.bytes.borrow_mut().extend_from_slice(&bytes[..fits]);
            self.room -= fits;
            if fits < bytes.len() {
                return Err(Error::from(ErrorKind::StorageFull));
            }
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            if self.cut_fails {
                return Err(Error::from(ErrorKind::PermissionDenied));
            }
            self.bytes.borrow_mut().truncate(len as usize);
            Ok(())
        }
    }

    #[test]
    fn a_write_that_fails_partway_is_cut_back_out() {
        let mut disk = Disk {
            room: 20,
            ..Disk::default()
        };
        let mut len = 0;
        append_or_cut(&mut disk, &mut len, b"first line\n").unwrap();
        assert_eq!(len, 11);
        let (e, cut) = append_or_cut(&mut disk, &mut len, b"second line\n").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert!(cut);
        assert_eq!(len, 11, "the durable length stays");
        assert_eq!(disk.bytes.borrow().as_slice(), b"first line\n");
    }

    #[test]
    fn a_cut_that_fails_says_so() {
        let mut disk = Disk {
            room: 4,
            cut_fails: true,
            ..Disk::default()
        };
        let mut len = 0;
        let (_, cut) = append_or_cut(&mut disk, &mut len, b"a line\n").unwrap_err();
        assert!(!cut);
        assert_eq!(len, 0);
    }
}
