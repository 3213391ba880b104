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
//! - A checkpoint that copies the frames into the database file first syncs the WAL,
//!   and syncs the database file after, also under `NORMAL`: a commit checkpointed
//!   before its sync is durable already, and a WAL missing (every connection closed,
//!   SQLite checkpointed and deleted it) has nothing left to sync.
//!
//! Concurrent uses share syncs: one runs at a time, and it covers every commit counted
//! before it started, so a caller whose commit it covered returns without another.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// The WAL of one SQLite database, synced on demand.
#[derive(Debug)]
pub struct WalSync {
    /// `DB-wal`, beside the database file.
    wal: PathBuf,
    /// One sync at a time, in the order asked (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
    /// Commits counted so far (each caller counts its own, after it committed).
    committed: AtomicU64,
    /// Commits the last finished sync covered.
    synced: AtomicU64,
    /// Syncs done, for tests.
    syncs: AtomicU64,
}

impl WalSync {
    /// The syncer of the database file `db`.
    pub fn new(db: &std::path::Path) -> Arc<WalSync> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Arc::new(WalSync {
            wal: PathBuf::from(wal),
            turn: tokio::sync::Mutex::new(()),
            committed: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        })
    }

    /// Returns once a commit this caller made (before calling) is on disk.
    pub async fn sync(self: Arc<Self>) -> Result<(), StoreError> {
        let mine = self.committed.fetch_add(1, Ordering::AcqRel) + 1;
        let _turn = self.turn.lock().await;
        if self.synced.load(Ordering::Acquire) >= mine {
            return Ok(());
        }
        // Every commit counted by now was written before it was counted.
        let covers = self.committed.load(Ordering::Acquire);
        let wal = self.wal.clone();
        tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            Ok(file) => file.sync_data(),
            // Checkpointed into the database file (synced) and deleted.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| StoreError(format!("syncing the state store's WAL: {e}")))?
        .map_err(|e| {
            StoreError(format!(
                "syncing the state store's WAL {}: {e}",
                self.wal.display()
            ))
        })?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(covers, Ordering::AcqRel);
        Ok(())
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
        std::fs::write(dir.path().join("s.db-wal"), b"frames").unwrap();
        let sync = WalSync::new(&db);
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
    async fn a_wal_that_is_gone_was_checkpointed_and_a_bad_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        WalSync::new(&dir.path().join("none.db"))
            .sync()
            .await
            .unwrap();
        // A WAL that cannot be opened: the use is not promised durable.
        let blocked = dir.path().join("blocked.db-wal");
        std::os::unix::fs::symlink(&blocked, &blocked).unwrap();
        let e = WalSync::new(&dir.path().join("blocked.db"))
            .sync()
            .await
            .unwrap_err();
        assert!(e.0.contains("blocked.db-wal"), "{e}");
    }
}
