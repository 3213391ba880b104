//! Signed-note checkpoints: each is checked against the tree the verifier builds from
//! the lines, and against the checkpoint before it (a consistency proof); a checkpoint
//! kept elsewhere is checked against the whole log ([`against`]).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tlog_tiles::{check_tree, prove_tree, tree_hash};

use super::{Chain, NoteCheckpoint, Summary, audit_key, field};
use crate::attest;
use crate::audit::note::{self, TreeHead};
use crate::audit::tree::StoredHashes;

/// Ed25519's algorithm identifier (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

impl Chain<'_> {
    /// A checkpoint record (`note`, `kid`, `x5c`) at `seq`: signed by an attested audit
    /// key, stating this log's tree of the `seq` records before it, consistent with the
    /// checkpoint before it. Returns whether it binds the records: only when the log
    /// was given from its genesis record can its tree be computed.
    pub(super) fn note_checkpoint(&mut self, record: &Value, seq: u64) -> Result<bool, String> {
        let text = field(record, "note").ok_or("the checkpoint's note is not a string")?;
        let chain = record
            .get("x5c")
            .and_then(Value::as_array)
            .filter(|certs| !certs.is_empty())
            .ok_or("the checkpoint carries no x5c")?
            .iter()
            .map(|c| c.as_str().and_then(|c| STANDARD.decode(c).ok()))
            .collect::<Option<Vec<Vec<u8>>>>()
            .ok_or("the checkpoint's x5c is not base64 certificates")?;
        // Certificates are checked as of the record's time, which the next checkpoint
        // covers.
        let at = field(record, "time")
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .map(SystemTime::from)
            .ok_or("the checkpoint record has no RFC 3339 time")?;
        let root = self.root;
        let signer = self
            .signers
            .entry(chain[0].clone())
            .or_insert_with(|| audit_key(&chain, root, at))
            .clone()?;
        if field(record, "kid") != Some(signer.as_str()) {
            return Err(format!(
                "the checkpoint's kid is not the audit key {signer} whose certificate it carries"
            ));
        }
        let log_id = self.log_id.as_deref().unwrap_or_default();
        let origin = note::origin(log_id);
        let verifier_key = note::verifier_key(&origin, &ed25519_key(&chain[0])?);
        let head = note::open(text.as_bytes(), &verifier_key)
            .map_err(|e| format!("checkpoint note: {e}"))?;
        if head.origin != origin {
            return Err(format!(
                "the checkpoint was signed for log {:?}, not this one ({origin})",
                head.origin
            ));
        }
        if head.size != seq {
            return Err(format!(
                "the checkpoint states a tree of {} records at seq {seq}: records before it were removed or added",
                head.size
            ));
        }
        if !self.summary.from_genesis {
            self.summary.unbound_checkpoints += 1;
            return Ok(false);
        }
        self.matches_tree(&head)?;
        if !self.summary.audit_keys.contains(&signer) {
            self.summary.audit_keys.push(signer);
        }
        self.summary.notes.push(NoteCheckpoint {
            seq,
            note: text.to_string(),
            verifier_key,
        });
        Ok(true)
    }

    /// Checks that `head` is the tree of the records read so far, and proves it
    /// consistent with the last checkpoint before it.
    fn matches_tree(&self, head: &TreeHead) -> Result<(), String> {
        let root = self.tree.frontier().root();
        if head.root != root {
            return Err(format!(
                "the signed checkpoint states root {} for {} records, but the records before it hash to {root}: records before it were altered",
                head.root, head.size
            ));
        }
        if let Some(before) = self.summary.notes.last() {
            let old = TreeHead::parse(note::text_of(&before.note))?;
            if old.size > 0 {
                consistent(&self.tree, &old, head)?;
            }
        }
        Ok(())
    }
}

/// Proves, from `tree`, that `new` extends `old`, and checks the proof.
fn consistent(tree: &StoredHashes, old: &TreeHead, new: &TreeHead) -> Result<(), String> {
    let proof = prove_tree(new.size, old.size, tree)
        .map_err(|e| format!("proving checkpoint {} from {}: {e}", new.size, old.size))?;
    check_tree(&proof, new.size, new.root, old.size, old.root).map_err(|e| {
        format!(
            "the checkpoint of {} records is not consistent with the one of {}: {e}",
            new.size, old.size
        )
    })
}

/// The raw Ed25519 public key of certificate `der`.
fn ed25519_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let cert = attest::verify::parse(der)?;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid.to_string() != ED25519_OID {
        return Err(format!(
            "the audit key's certificate holds a {} key, not Ed25519",
            spki.algorithm.oid
        ));
    }
    Ok(spki.subject_public_key.raw_bytes().to_vec())
}

/// Checks signed checkpoint `text`, kept elsewhere (a monitor's or a witness's copy),
/// against a verified log: signed by an audit key this log's checkpoints name, for this
/// log, and stating the tree that the log's first records form. A log cut back or
/// rewritten behind it fails, even when it is consistent in itself. Returns what it
/// states.
pub fn against(summary: &Summary, tree: &StoredHashes, text: &[u8]) -> Result<TreeHead, String> {
    if !summary.from_genesis {
        return Err(
            "the log given does not start at its genesis record: a checkpoint covers the log from its first record"
                .into(),
        );
    }
    let head = summary
        .verifier_keys()
        .into_iter()
        .find_map(|vkey| note::open(text, vkey).ok())
        .ok_or("the checkpoint is not signed by any audit key whose checkpoints are in this log")?;
    let origin = note::origin(&summary.log_id);
    if head.origin != origin {
        return Err(format!(
            "the checkpoint is of log {:?}, not of this one ({origin})",
            head.origin
        ));
    }
    let records = tree.frontier().size();
    if head.size > records {
        return Err(format!(
            "the checkpoint covers {} records, but the log holds {records}: it was cut back",
            head.size
        ));
    }
    let root = tree_hash(head.size, tree).map_err(|e| e.to_string())?;
    if root != head.root {
        return Err(format!(
            "the log's first {} records hash to {root}, not to the checkpoint's {}: they were rewritten",
            head.size, head.root
        ));
    }
    Ok(head)
}
