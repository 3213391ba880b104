//! The log's files: a directory of numbered segments, the lock that keeps a second
//! writer out, and (in `recover`) recovery of a torn last record at open.
//!
//! Segments are `segment-000001.jsonl`, `segment-000002.jsonl`, ...; only the highest is
//! ever written. The directory is the operator's to archive: segments are never
//! deleted by signetd.
//!
//! The segment being written is extended ahead of its records, [`PREALLOCATE`] bytes of
//! zeros at a time, and records are written over the zeros. An `fdatasync` then has only
//! the record's data to flush: when a write grows the file, the new size is metadata the
//! sync must write too, which costs a second device write (a journal commit on a
//! journaling filesystem). On the reference machine's disk this took a 300-byte
//! `write` + `fdatasync` from about 165 to 105 µs p50. The same reason PostgreSQL
//! zero-fills its WAL segments and etcd preallocates its WAL files. So the open segment
//! ends with zero bytes after its last record until it is sealed ([`Segment::seal`], at
//! roll-over and when the log closes); every reader stops at the first zero byte (no
//! record holds one: JSON escapes control characters), and recovery cuts the zeros off.

mod recover;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// How far ahead of its records the segment being written is extended with zeros.
pub const PREALLOCATE: u64 = 1 << 20;

/// Free space an extension leaves on the filesystem at least. Below it, records are
/// appended as they come: the zeros must never be what fills a disk the state store
/// and the refusal records' reserve share.
const KEEP_FREE: u64 = 16 << 20;

/// Where the records of `bytes` end: before the first zero byte, the start of a
/// preallocated segment's unwritten tail.
pub fn records_end(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
}

/// The segment being written.
#[derive(Debug)]
pub struct Segment {
    /// Its number.
    pub number: u64,
    /// Its path.
    pub path: PathBuf,
    /// The open file (not in append mode: records are written at [`Segment::len`]).
    pub file: File,
    /// The length of its records in bytes: everything durable.
    pub len: u64,
    /// The file's size: its records, then zeros up to here.
    pub allocated: u64,
    /// False once extending it with zeros failed (a disk or file-size limit nearly
    /// reached): from then on records are appended as they come.
    pub preallocate: bool,
}

impl Segment {
    /// Creates segment `number` in `dir`. An empty file of that name (left by an
    /// earlier attempt whose directory sync failed) is reused; a non-empty one is an
    /// error, never overwritten.
    pub fn create(dir: &Path, number: u64) -> Result<Segment, AuditError> {
        let path = dir.join(segment_name(number));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
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
            allocated: 0,
            preallocate: true,
        })
    }

    /// Writes `bytes` after the records and makes them durable; on failure, cuts the
    /// file back to its records, so a failed write leaves no partial record. The zeros
    /// never extend the file past `limit` (the size at which it is closed). Returns
    /// `Err((write error, whether the cut worked))`.
    pub fn append(&mut self, bytes: &[u8], limit: u64) -> Result<(), (std::io::Error, bool)> {
        let extent = Extent {
            len: &mut self.len,
            allocated: &mut self.allocated,
            preallocate: &mut self.preallocate,
            limit,
        };
        append_or_cut(&self.file, extent, bytes)
    }

    /// Cuts the zeros after the records off and makes that durable: a segment that is no
    /// longer written ends with its last record.
    pub fn seal(&mut self) -> std::io::Result<()> {
        if self.allocated != self.len {
            self.file.set_len(self.len)?;
            self.file.sync_data()?;
            self.allocated = self.len;
        }
        Ok(())
    }
}

/// What an append does to a file; a trait so a test can fail a write partway.
trait AppendFile {
    fn write_bytes_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()>;
    fn sync_data(&self) -> std::io::Result<()>;
    fn set_len(&self, len: u64) -> std::io::Result<()>;
    /// Free space on the file's filesystem, for an unprivileged writer.
    fn free_bytes(&self) -> std::io::Result<u64>;
}

impl AppendFile for File {
    fn free_bytes(&self) -> std::io::Result<u64> {
        let fs = rustix::fs::fstatvfs(self)?;
        Ok(fs.f_bavail.saturating_mul(fs.f_frsize))
    }
    fn write_bytes_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        self.write_all_at(bytes, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        File::set_len(self, len)
    }
}

/// Writes zeros over `from..to` of `file`. Written, not a hole (`set_len` alone): a
/// record written into a hole allocates its block then, which is the metadata write the
/// preallocation is there to avoid.
fn zero_fill(file: &impl AppendFile, from: u64, to: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_bytes_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// Where a segment's records end and its file does, as [`append_or_cut`] updates them.
struct Extent<'a> {
    len: &'a mut u64,
    allocated: &'a mut u64,
    preallocate: &'a mut bool,
    /// The size past which the zeros never go.
    limit: u64,
}

/// [`Segment::append`] on `file`. A batch that reaches the end of the zeros first extends
/// them by [`PREALLOCATE`] (up to the segment's limit), and that batch's sync makes the
/// new size durable too. Where the zeros do not fit, or would leave less than
/// [`KEEP_FREE`] on the filesystem (a nearly full disk, a file-size limit), the batch is
/// appended alone, as are the segment's next ones: the zeros never refuse a record that
/// would fit.
fn append_or_cut(
    file: &impl AppendFile,
    at: Extent<'_>,
    bytes: &[u8],
) -> Result<(), (std::io::Error, bool)> {
    let end = *at.len + bytes.len() as u64;
    if end >= *at.allocated && *at.preallocate {
        let to = (end + PREALLOCATE).min(at.limit.max(end));
        let room = file
            .free_bytes()
            .is_ok_and(|free| free >= (to - *at.allocated).saturating_add(KEEP_FREE));
        // From the zeros' end, not the batch's: a disk too full for the zeros fails
        // here, before the batch is written, and the batch then goes alone.
        match room.then(|| zero_fill(file, *at.allocated, to)) {
            Some(Ok(())) => *at.allocated = to,
            refused => {
                *at.preallocate = false;
                match refused {
                    Some(Err(e)) => tracing::warn!(
                        "audit log: cannot extend the segment ahead of its records ({e}); \
                         appending records as they come until the next segment"
                    ),
                    _ => tracing::info!(
                        "audit log: little free space; appending records as they come until \
                         the next segment"
                    ),
                }
                if let Err(e) = file.set_len(*at.allocated) {
                    return Err(cut(file, at, e));
                }
            }
        }
    }
    let synced = file.write_bytes_at(bytes, *at.len).and_then(|()| {
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        crate::telemetry::audit_fsync(started.elapsed());
        synced
    });
    match synced {
        Ok(()) => {
            *at.len = end;
            *at.allocated = (*at.allocated).max(end);
            Ok(())
        }
        Err(e) => Err(cut(file, at, e)),
    }
}

/// A write failed with `error`: the file goes back to its records alone (the zeros go
/// too, and come back with the next write). Returns the error and whether the cut worked.
fn cut(file: &impl AppendFile, at: Extent<'_>, error: std::io::Error) -> (std::io::Error, bool) {
    let cut = file
        .set_len(*at.len)
        .and_then(|()| file.sync_data())
        .is_ok();
    if cut {
        *at.allocated = *at.len;
    }
    (error, cut)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::io::{Error, ErrorKind};

    use super::*;

    /// A file that holds `room` bytes, then fails like a full disk (or a file-size
    /// limit: `free` then says what the filesystem has).
    struct Disk {
        bytes: RefCell<Vec<u8>>,
        room: usize,
        free: Option<u64>,
        cut_fails: bool,
        syncs: Cell<u32>,
    }

    impl Disk {
        fn with_room(room: usize) -> Disk {
            Disk {
                bytes: RefCell::default(),
                room,
                free: None,
                cut_fails: false,
                syncs: Cell::new(0),
            }
        }

        /// A file-size limit of `room` on a filesystem with space to spare.
        fn with_limit(room: usize) -> Disk {
            Disk {
                free: Some(u64::MAX),
                ..Disk::with_room(room)
            }
        }

        fn bytes(&self) -> Vec<u8> {
            self.bytes.borrow().clone()
        }
    }

    impl AppendFile for Disk {
        fn free_bytes(&self) -> std::io::Result<u64> {
            let used = self.bytes.borrow().len();
            Ok(self.free.unwrap_or(self.room.saturating_sub(used) as u64))
        }
        fn write_bytes_at(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
            let offset = offset as usize;
            let fits = bytes.len().min(self.room.saturating_sub(offset));
            let mut file = self.bytes.borrow_mut();
            if file.len() < offset + fits {
                file.resize(offset + fits, 0);
            }
            file[offset..offset + fits].copy_from_slice(&bytes[..fits]);
            if fits < bytes.len() {
                return Err(Error::from(ErrorKind::StorageFull));
            }
            Ok(())
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.syncs.set(self.syncs.get() + 1);
            Ok(())
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            if self.cut_fails {
                return Err(Error::from(ErrorKind::PermissionDenied));
            }
            self.bytes.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    /// A segment's extent, for [`append_or_cut`] on a [`Disk`].
    struct Ends {
        len: u64,
        allocated: u64,
        preallocate: bool,
        limit: u64,
    }

    impl Ends {
        fn new() -> Ends {
            Ends {
                len: 0,
                allocated: 0,
                preallocate: true,
                limit: 64 << 20,
            }
        }

        fn append(&mut self, disk: &Disk, bytes: &[u8]) -> Result<(), (Error, bool)> {
            let at = Extent {
                len: &mut self.len,
                allocated: &mut self.allocated,
                preallocate: &mut self.preallocate,
                limit: self.limit,
            };
            append_or_cut(disk, at, bytes)
        }

        fn at(&self) -> (u64, u64) {
            (self.len, self.allocated)
        }
    }

    const P: u64 = PREALLOCATE;

    #[test]
    fn records_are_written_over_zeros_extended_ahead_of_them() {
        let disk = Disk::with_room(usize::MAX);
        let mut ends = Ends::new();
        ends.append(&disk, b"first line\n").unwrap();
        assert_eq!(ends.at(), (11, 11 + P));
        ends.append(&disk, b"second line\n").unwrap();
        assert_eq!(ends.at(), (23, 11 + P), "no second extension");
        assert_eq!(
            disk.syncs.get(),
            2,
            "one sync per batch, extension included"
        );
        let bytes = disk.bytes();
        assert_eq!(bytes.len() as u64, 11 + P);
        assert_eq!(&bytes[..records_end(&bytes)], b"first line\nsecond line\n");
        assert!(bytes[23..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_batch_that_reaches_the_end_of_the_zeros_extends_them_again() {
        let disk = Disk::with_room(usize::MAX);
        let mut ends = Ends::new();
        ends.append(&disk, b"a\n").unwrap();
        let rest = vec![b'x'; P as usize];
        ends.append(&disk, &rest).unwrap();
        let len = 2 + P;
        assert_eq!(ends.at(), (len, len + P), "zeros still follow");
        assert_eq!(records_end(&disk.bytes()), len as usize);
    }

    #[test]
    fn the_zeros_stop_at_the_segment_s_limit() {
        let disk = Disk::with_room(usize::MAX);
        let mut ends = Ends::new();
        ends.limit = 100;
        ends.append(&disk, b"a\n").unwrap();
        assert_eq!(ends.at(), (2, 100));
        ends.append(&disk, &[b'x'; 120]).unwrap();
        assert_eq!(ends.at(), (122, 122), "past the limit: appended as it came");
    }

    #[test]
    fn on_a_nearly_full_disk_records_are_appended_as_they_come() {
        let disk = Disk::with_room(P as usize + KEEP_FREE as usize);
        let mut ends = Ends::new();
        ends.append(&disk, b"first line\n").unwrap();
        assert_eq!(
            ends.at(),
            (11, 11),
            "no zeros: they would leave too little free"
        );
        assert!(!ends.preallocate);
        ends.append(&disk, b"second\n").unwrap();
        assert_eq!(ends.at(), (18, 18));
        assert_eq!(disk.bytes(), b"first line\nsecond\n");
    }

    #[test]
    fn zeros_that_do_not_fit_leave_the_batch_to_go_alone_as_do_the_next() {
        let disk = Disk::with_limit(11 + P as usize / 2);
        let mut ends = Ends::new();
        ends.append(&disk, b"first line\n")
            .expect("it fits without the zeros");
        assert_eq!(ends.at(), (11, 11));
        assert!(!ends.preallocate);
        ends.append(&disk, b"second\n").unwrap();
        assert_eq!(ends.at(), (18, 18), "appended as it came");
        assert_eq!(disk.bytes(), b"first line\nsecond\n");
    }

    #[test]
    fn a_write_that_fails_partway_is_cut_back_out() {
        let disk = Disk::with_limit(20);
        let mut ends = Ends::new();
        ends.append(&disk, b"first line\n").unwrap();
        let (e, cut) = ends.append(&disk, b"second line\n").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert!(cut);
        assert_eq!(ends.at(), (11, 11), "the durable length stays");
        assert_eq!(disk.bytes(), b"first line\n");
    }

    #[test]
    fn a_cut_that_fails_says_so() {
        let mut disk = Disk::with_limit(4);
        disk.cut_fails = true;
        let mut ends = Ends::new();
        let (_, cut) = ends.append(&disk, b"a line\n").unwrap_err();
        assert!(!cut);
        assert_eq!(ends.len, 0);
    }

    #[test]
    fn a_sealed_segment_ends_with_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut segment = Segment::create(dir.path(), 1).unwrap();
        segment.append(b"{\"seq\":0}\n", 64 << 20).unwrap();
        segment.append(b"{\"seq\":1}\n", 64 << 20).unwrap();
        let size = || std::fs::metadata(&segment.path).unwrap().len();
        assert_eq!(size(), 10 + PREALLOCATE, "zeros after the first record");
        segment.seal().unwrap();
        assert_eq!(
            std::fs::read(&segment.path).unwrap(),
            b"{\"seq\":0}\n{\"seq\":1}\n"
        );
    }
}
