//! Group fsync of an SQLite store's write-ahead log, for single uses.
//!
//! A single use commits on a connection with `synchronous = NORMAL`, so its commit is
//! written to the WAL file but not fsynced; [`WalSync::sync`] then makes it durable
//! with one `fdatasync` of the WAL, which the caller runs at the same time as the
//! fsync of the use's audit record. Before, the commit itself fsynced (`FULL`) and the
//! record was fsynced after it: two syncs one after the other. SQLite's own rules keep
//! this sound (<https://sqlite.org/pragma.html#pragma_synchronous>):
//!
//! - In WAL mode a commit is durable once its frames are on disk, and a `NORMAL`
//!   commit has written them (`write`) before it returns: an `fdatasync` of the WAL
//!   file started afterwards, through any descriptor, puts them there. Checksums
//!   end recovery at the last whole commit, so nothing is torn.
//! - A checkpoint syncs the WAL before it copies frames into the database file, also
//!   under `NORMAL`, and SQLite resets or deletes the WAL only after a checkpoint that
//!   copied every frame and synced the database file: a commit checkpointed before its
//!   sync is durable already, and a WAL that is gone (every connection closed) has
//!   nothing left to sync.
//! - SQLite names the WAL after the database file with symlinks resolved, so the path
//!   synced here is the canonical one, found when the store opens.
//!
//! Concurrent uses share syncs: one runs at a time, and it covers every commit counted
//! before it started, so a caller whose commit it covered returns without another. The
//! turn is held by the sync itself, not its caller, so a caller that gives up (its
//! deadline) does not let a second sync start beside one that hangs. A sync that fails
//! fails every later one, until the daemon restarts: after a failed `fdatasync` the
//! kernel may have dropped the pages and cleared the error, so a retry that succeeds
//! proves nothing (single use then answers `503 state_unavailable`, failing closed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// The WAL of one SQLite database, synced on demand.
#[derive(Debug)]
pub struct WalSync {
    /// `DB-wal`, beside the database file, symlinks resolved.
    wal: PathBuf,
    /// One sync at a time, in the order asked (tokio's mutex is fair).
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Commits counted so far (each caller counts its own, after it committed).
    committed: AtomicU64,
    /// Commits the last finished sync covered.
    synced: AtomicU64,
    /// Why a sync failed, if one did: every later one fails too.
    failed: std::sync::Mutex<Option<String>>,
    /// Syncs done, for tests.
    syncs: AtomicU64,
}

impl WalSync {
    /// The syncer of the database file `db`, which exists.
    pub fn new(db: &Path) -> Result<Arc<WalSync>, StoreError> {
        let db = std::fs::canonicalize(db)
            .map_err(|e| StoreError(format!("cannot resolve {}: {e}", db.display())))?;
        let mut wal = db.into_os_string();
        wal.push("-wal");
        Ok(Arc::new(WalSync {
            wal: PathBuf::from(wal),
            turn: Arc::new(tokio::sync::Mutex::new(())),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            failed: std::sync::Mutex::new(None),
            syncs: AtomicU64::new(0),
        }))
    }

    /// Returns once a commit this caller made (before calling) is on disk.
    pub async fn sync(self: Arc<Self>) -> Result<(), StoreError> {
        let mine = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let turn = Arc::clone(&self.turn).lock_owned().await;
        if let Some(why) = self.failure() {
            return Err(StoreError(why));
        }
        if self.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        let this = Arc::clone(&self);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            // Every commit counted by now was written before it was counted.
            let covers = this.committed.load(Ordering::Acquire);
            match std::fs::File::open(&this.wal).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Checkpointed into the database file (synced) and deleted.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    let why = format!(
                        "syncing the state store's WAL {} failed ({e}): single use is refused until the daemon restarts",
                        this.wal.display()
                    );
                    *this.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                    return Err(StoreError(why));
                }
            }
            this.syncs.fetch_add(1, Ordering::Relaxed);
            this.synced.fetch_max(covers, Ordering::AcqRel);
            Ok(())
        })
        .await
        .map_err(|e| StoreError(format!("syncing the state store's WAL: {e}")))?
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The WAL file this syncs.
    #[cfg(test)]
    pub fn wal(&self) -> &Path {
        &self.wal
    }

    /// How many syncs ran.
    #[cfg(test)]
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Callers who counted their commits while a sync was waiting its turn share the
    /// next one; a caller after it gets a sync of its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_commits_share_one_sync_and_a_later_one_gets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::write(dir.path().join("s.db-wal"), b"frames").unwrap();
        let sync = WalSync::new(&db).unwrap();
        let held = sync.turn.lock().await;
        let waiting: Vec<_> = (0..8)
            .map(|_| tokio::spawn(Arc::clone(&sync).sync()))
            .collect();
        while sync.committed.load(Ordering::Acquire) < 8 {
            tokio::task::yield_now().await;
        }
        drop(held);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(sync.syncs(), 1);
        Arc::clone(&sync).sync().await.unwrap();
        assert_eq!(sync.syncs(), 2);
    }

    #[tokio::test]
    async fn a_wal_that_is_gone_was_checkpointed_and_a_failure_is_final() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        std::fs::write(&db, b"").unwrap();
        let sync = WalSync::new(&db).unwrap();
        Arc::clone(&sync).sync().await.unwrap();
        // A WAL that cannot be opened: the use is not promised durable, and neither is
        // any later one, even once the WAL can be opened again.
        let wal = dir.path().join("s.db-wal");
        std::os::unix::fs::symlink(&wal, &wal).unwrap();
        let e = Arc::clone(&sync).sync().await.unwrap_err();
        assert!(e.0.contains("s.db-wal"), "{e}");
        std::fs::remove_file(&wal).unwrap();
        std::fs::write(&wal, b"frames").unwrap();
        let again = Arc::clone(&sync).sync().await.unwrap_err();
        assert!(again.0.contains("until the daemon restarts"), "{again}");
    }

    /// SQLite puts the WAL beside the file a symlinked database resolves to.
    #[test]
    fn the_wal_of_a_symlinked_database_is_beside_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("s.db"), b"").unwrap();
        let link = dir.path().join("s.db");
        std::os::unix::fs::symlink(target.join("s.db"), &link).unwrap();
        let sync = WalSync::new(&link).unwrap();
        assert_eq!(
            sync.wal(),
            std::fs::canonicalize(&target).unwrap().join("s.db-wal")
        );
    }
}
