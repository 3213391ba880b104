//! Signed-note checkpoints: each is checked against the tree the verifier builds from
//! the lines; a checkpoint kept elsewhere is checked against the whole log
//! ([`against`]).
//!
//! No consistency proof is checked between a log's own checkpoints: each one's root is
//! recomputed from the records, so each extends the one before it by construction, and
//! a proof made from those same records could not fail. Proofs are for whoever holds
//! checkpoints but not the records (`audit prove`).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Chain, NoteCheckpoint, Summary, audit_key, field};
use crate::attest;
use crate::audit::note::{self, TreeHead};
use crate::audit::tree::VerifiedTree;

/// Ed25519's algorithm identifier (RFC 8410).
const ED25519_OID: &str = "1.3.101.112";

impl Chain<'_> {
    /// A checkpoint record (`note`, `kid`, `x5c`) at `seq`: signed by an attested audit
    /// key, stating this log's tree of the `seq` records before it. Returns whether it
    /// binds the records: only when the log was given from its genesis record can its
    /// tree be computed.
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
        if !self.summary.note_verifier_keys.contains(&verifier_key) {
            self.summary.note_verifier_keys.push(verifier_key.clone());
        }
        let checkpoint = NoteCheckpoint {
            seq,
            note: text.to_string(),
            verifier_key,
        };
        if self.tree.stored().is_some() {
            self.summary.notes.push(checkpoint.clone());
        }
        self.summary.last_note = Some(checkpoint);
        Ok(true)
    }

    /// Checks that `head` is the tree of the records read so far.
    fn matches_tree(&self, head: &TreeHead) -> Result<(), String> {
        let root = self.tree.root();
        if head.root != root {
            return Err(format!(
                "the signed checkpoint states root {} for {} records, but the records before it hash to {root}: records before it were altered",
                head.root, head.size
            ));
        }
        Ok(())
    }
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
/// states. `tree` must have kept the root at the size the checkpoint states
/// ([`crate::audit::tree::Keep`]; [`kept_size`] reads it).
pub fn against(summary: &Summary, tree: &VerifiedTree, text: &[u8]) -> Result<TreeHead, String> {
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
    let records = tree.size();
    if head.size > records {
        return Err(format!(
            "the checkpoint covers {} records, but the log holds {records}: it was cut back",
            head.size
        ));
    }
    let root = tree.root_at(head.size).ok_or_else(|| {
        format!(
            "the tree's root at {} records was not kept while verifying",
            head.size
        )
    })?;
    if root != head.root {
        return Err(format!(
            "the log's first {} records hash to {root}, not to the checkpoint's {}: they were rewritten",
            head.size, head.root
        ));
    }
    Ok(head)
}

/// The tree size signed checkpoint `text` states, read before anything is checked: what
/// to keep the root of while verifying the log it is checked against ([`against`]
/// checks the signature).
pub fn kept_size(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    TreeHead::parse(note::text_of(text))
        .ok()
        .map(|head| head.size)
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;
    use crate::audit::tree::Keep;

    /// A checkpoint of log `log_id` at `size` with `root`, signed by `key`.
    fn signed(key: &SigningKey, log_id: &str, size: u64, root: tlog_tiles::Hash) -> String {
        let origin = note::origin(log_id);
        let text = TreeHead {
            origin: origin.clone(),
            size,
            root,
        }
        .text();
        let public = key.verifying_key().to_bytes();
        // A note's Ed25519 signature is over its text.
        let signature = key.sign(text.as_bytes()).to_bytes().to_vec();
        note::signed(&text, &origin, &public, signature)
    }

    fn tree(keep: Keep, lines: &[&str]) -> VerifiedTree {
        let mut tree = VerifiedTree::new(keep);
        for line in lines {
            tree.append(line.as_bytes());
        }
        tree
    }

    /// The verifier keeps only the edge and the roots asked for; a checkpoint kept
    /// elsewhere is checked the same against either kind of tree.
    #[test]
    fn a_kept_checkpoint_is_checked_against_the_root_kept_at_its_size() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let log = ["a", "b", "c", "d", "e"];
        let old = signed(&key, "log", 3, tree(Keep::Everything, &log[..3]).root());
        let verifier_key =
            note::verifier_key(&note::origin("log"), &key.verifying_key().to_bytes());
        let summary = Summary {
            log_id: "log".into(),
            from_genesis: true,
            note_verifier_keys: vec![verifier_key],
            ..Summary::default()
        };
        assert_eq!(kept_size(old.as_bytes()), Some(3));
        for keep in [Keep::Roots([3].into()), Keep::Everything] {
            let head = against(&summary, &tree(keep, &log), old.as_bytes()).unwrap();
            assert_eq!(head.size, 3);
        }
        // Asked for another size: the root it needs was not kept, and it says so.
        let missing = against(
            &summary,
            &tree(Keep::Roots([4].into()), &log),
            old.as_bytes(),
        );
        assert!(missing.unwrap_err().contains("not kept"));
        // A log rewritten behind the checkpoint, and one cut back before it.
        let rewritten = ["a", "B", "c", "d", "e"];
        for keep in [Keep::Roots([3].into()), Keep::Everything] {
            let err = against(&summary, &tree(keep.clone(), &rewritten), old.as_bytes());
            assert!(err.unwrap_err().contains("were rewritten"));
            let cut = tree(keep, &log[..2]);
            let err = against(&summary, &cut, old.as_bytes()).unwrap_err();
            assert!(err.contains("cut back"), "{err}");
        }
        // Signed by a key the log does not name.
        let other = signed(
            &SigningKey::from_bytes(&[8; 32]),
            "log",
            3,
            tree(Keep::Everything, &log[..3]).root(),
        );
        let tree = tree(Keep::Roots([3].into()), &log);
        assert!(
            against(&summary, &tree, other.as_bytes())
                .unwrap_err()
                .contains("not signed")
        );
    }
}
