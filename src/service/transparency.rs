//! The audit log as a transparency log over the API: the latest signed checkpoint (to
//! anyone) and the tree's tiles and entry bundles (to auditors), as C2SP tlog-tiles.

use super::Service;
use crate::audit::tiles::{self, TileError, TilePath};
use crate::error::Error;
use crate::identity::Principal;
use crate::policy::Action;

impl Service {
    /// The latest durable signed checkpoint (a C2SP signed note). Public: it names no
    /// caller, and witnesses and monitors start from it.
    pub fn audit_checkpoint(&self) -> Result<String, Error> {
        self.audit
            .published()
            .map(|p| p.note)
            .ok_or(Error::NoCheckpoint)
    }

    /// The note verifier key of the audit key that signed the latest checkpoint. Public,
    /// like the checkpoint; its attestation chain is at `/v1/keys/{kid}/attestation`.
    pub fn audit_verifier_key(&self) -> Result<String, Error> {
        self.audit
            .published()
            .map(|p| p.verifier_key)
            .ok_or(Error::NoCheckpoint)
    }

    /// Tile `path` (after `tile/`) of the tree the latest checkpoint covers, for an
    /// auditor: records name callers, issuers and token hashes.
    pub async fn audit_tile(&self, caller: &Principal, path: &str) -> Result<Vec<u8>, Error> {
        self.policy().decide(caller, Action::ReadAudit)?;
        let tile = TilePath::parse(path).ok_or_else(|| {
            Error::NoSuchTile(format!(
                "tile/{path} is not a tile path: tile/L/N[.p/W] or tile/entries/N[.p/W] (C2SP tlog-tiles)"
            ))
        })?;
        let published = self.audit.published().ok_or(Error::NoCheckpoint)?;
        // File reads, and for entry bundles a scan of one segment: off the runtime.
        let read = tokio::task::spawn_blocking(move || tiles::read(&published, &tile))
            .await
            .map_err(|e| Error::Internal(format!("the tile reader stopped: {e}")))?;
        read.map_err(|e| match e {
            TileError::NotFound(why) => Error::NoSuchTile(format!("tile/{path}: {why}")),
            TileError::Io(e) => Error::Internal(format!("reading tile/{path}: {e}")),
        })
    }
}
