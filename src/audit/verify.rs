//! Offline verification of a log: every hash link across segments, every sequence
//! number, the Merkle tree, every checkpoint's signature and root, and the audit key's
//! attestation chain. The first break is reported with its segment, line and sequence
//! number. Segments are read a line at a time, and the tree is kept as the caller asks
//! ([`Keep`]): its right edge only unless proofs are wanted. So a log verifies in
//! memory that grows with its checkpoints (8 bytes each), not with its records.
//!
//! What it proves: with the chain intact and the last record covered by a checkpoint,
//! no record up to that checkpoint was edited, removed, inserted or reordered since it
//! was written, unless the audit key (which never leaves the token) signed the change.
//! Records after the last checkpoint are chained but not yet signed; the summary says
//! how many. A checkpoint kept elsewhere ([`against`]) also shows a log cut back or
//! rewritten behind it, which the log alone cannot.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use der::Encode;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::checkpoint::AUDIT_ISSUER;
use super::record::{CHECKPOINT_TYP, CheckpointClaims, GENESIS_PREV, line_hash};
use super::segment;
use super::tree::{Keep, VerifiedTree};
use crate::attest::{self, signed};

mod notes;

pub use notes::{against, kept_size};

/// Where in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The segment file.
    pub segment: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// The record's sequence number, if it has one.
    pub seq: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} line {}", self.segment.display(), self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        Ok(())
    }
}

/// The first thing wrong with a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// Where.
    pub at: Location,
    /// What.
    pub reason: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.reason)
    }
}

/// What a successful verification covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The log's id.
    pub log_id: String,
    /// Segments checked.
    pub segments: usize,
    /// Records checked.
    pub records: u64,
    /// Whether the first segment starts at the genesis record (else earlier segments
    /// were not given, and the chain before them is unchecked).
    pub from_genesis: bool,
    /// The first and last sequence numbers.
    pub seqs: (u64, u64),
    /// Sequence numbers of the verified checkpoints.
    pub checkpoints: Vec<u64>,
    /// The last verified checkpoint that is a signed note (all but those of logs
    /// written before signetd 0.2 are).
    pub last_note: Option<NoteCheckpoint>,
    /// Every verified signed-note checkpoint, in order, kept only when the tree was
    /// kept for proofs ([`Keep::Everything`], which an inclusion proof's covering
    /// checkpoint needs); otherwise empty, so that verifying takes memory per
    /// checkpoint of 8 bytes ([`Summary::checkpoints`]), not a whole note.
    pub notes: Vec<NoteCheckpoint>,
    /// The note verifier keys of the audit keys whose checkpoints were verified, each
    /// once, in the order they first sign.
    pub note_verifier_keys: Vec<String>,
    /// Kids of the audit keys that signed them.
    pub audit_keys: Vec<String>,
    /// The replica names the records carry (`[replica] name`), in order of first
    /// appearance: one for a replica's log, none for a daemon without a name.
    pub replicas: Vec<String>,
    /// Records after the last checkpoint: chained, not yet signed.
    pub unsigned_tail: u64,
    /// Signed-note checkpoints whose signature checked out but whose tree could not be
    /// checked, because the log was given without its first records: they cover
    /// nothing here.
    pub unbound_checkpoints: u64,
    /// `refused` records: refusals recorded one by one.
    pub refusals: u64,
    /// `refused_aggregate` records: refusals of unnamed callers, folded per interval.
    pub refusal_aggregates: u64,
    /// The refusals those aggregate records count, together.
    pub refusals_folded: u64,
}

/// A verified signed-note checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteCheckpoint {
    /// The checkpoint record's seq, which is also the tree size it states.
    pub seq: u64,
    /// The signed note, exactly as recorded.
    pub note: String,
    /// The note verifier key of the audit key that signed it.
    pub verifier_key: String,
}

impl Summary {
    /// The verifier keys of the signed-note checkpoints, each once, in the order they
    /// first sign.
    pub fn verifier_keys(&self) -> Vec<&str> {
        self.note_verifier_keys.iter().map(String::as_str).collect()
    }

    /// The first signed-note checkpoint after `seq`, which covers it. Needs
    /// [`Summary::notes`]: verify with [`Keep::Everything`].
    pub fn covering_note(&self, seq: u64) -> Option<&NoteCheckpoint> {
        self.notes.iter().find(|n| n.seq > seq)
    }

    /// The first checkpoint after `seq`, which covers it.
    pub fn covering_checkpoint(&self, seq: u64) -> Option<u64> {
        self.checkpoints.iter().copied().find(|&c| c > seq)
    }
}

/// The segment files named by `inputs`: a directory stands for all its segments in
/// order; files are taken as given.
pub fn segment_paths(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut paths = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let segments = segment::list(input)
                .map_err(|e| format!("cannot list {}: {e}", input.display()))?;
            if segments.is_empty() {
                return Err(format!("{} holds no audit segments", input.display()));
            }
            paths.extend(segments.into_iter().map(|(_, p)| p));
        } else {
            paths.push(input.clone());
        }
    }
    if paths.is_empty() {
        return Err("no audit segments given".to_string());
    }
    Ok(paths)
}

/// The chain as checked so far.
struct Chain<'a> {
    root: &'a [u8],
    log_id: Option<String>,
    segment: u64,
    next_seq: Option<u64>,
    head: String,
    /// Audit key certificates already checked, by DER: their kid or why not.
    signers: HashMap<Vec<u8>, Result<String, String>>,
    /// The Merkle tree of the records so far.
    tree: VerifiedTree,
    summary: Summary,
}

fn field<'v>(record: &'v Value, name: &str) -> Option<&'v str> {
    record.get(name).and_then(Value::as_str)
}

impl Chain<'_> {
    /// Checks one line (newline excluded) at `at`; `first` when it opens a segment.
    fn line(&mut self, line: &[u8], first: bool, at: &mut Location) -> Result<Value, String> {
        let record: Value = serde_json::from_slice(line)
            .ok()
            .filter(Value::is_object)
            .ok_or("not a JSON record")?;
        let seq = record
            .get("seq")
            .and_then(Value::as_u64)
            .ok_or("the record has no seq")?;
        at.seq = Some(seq);
        // No record can follow the largest seq, and the checks below add one to it.
        if seq == u64::MAX {
            return Err(format!("seq {seq} is past the end of any log"));
        }
        let prev = field(&record, "prev").ok_or("the record has no prev")?;
        let event = field(&record, "event").ok_or("the record has no event")?;
        let starts = matches!(event, "genesis" | "segment_start");
        if first != starts {
            return Err(if first {
                format!("a segment must begin with genesis or segment_start, not {event}")
            } else {
                format!("{event} in the middle of a segment")
            });
        }
        if starts {
            self.segment_header(&record, event, seq, prev)?;
        }
        if let Some(expected) = self.next_seq {
            if seq > expected {
                return Err(format!(
                    "seq jumps from {} to {seq}: {} record(s) missing or out of order",
                    expected - 1,
                    seq - expected
                ));
            }
            if seq < expected {
                return Err(format!(
                    "seq {seq} after seq {}: records reordered or repeated",
                    expected - 1
                ));
            }
            if prev != self.head {
                return Err(format!(
                    "prev does not match the hash of the record before it (seq {}): one of them was altered",
                    expected - 1
                ));
            }
        }
        if let Some(replica) = record.get("replica") {
            let replica = replica.as_str().ok_or("a replica that is not a string")?;
            if !self.summary.replicas.iter().any(|r| r == replica) {
                self.summary.replicas.push(replica.to_string());
            }
        }
        match event {
            "refused" => self.summary.refusals += 1,
            "refused_aggregate" => {
                let count = record
                    .get("count")
                    .and_then(Value::as_u64)
                    .filter(|&n| n > 0)
                    .ok_or("a refused_aggregate record without a positive count")?;
                self.summary.refusal_aggregates += 1;
                self.summary.refusals_folded = self.summary.refusals_folded.saturating_add(count);
            }
            _ => {}
        }
        let binds = if event == "checkpoint" {
            if record.get("note").is_some() {
                self.note_checkpoint(&record, seq)?
            } else {
                self.checkpoint(&record, seq, prev)?;
                true
            }
        } else {
            false
        };
        if binds {
            self.summary.checkpoints.push(seq);
            self.summary.unsigned_tail = 0;
        } else {
            // A note checkpoint of a log given without its first records is signed, but
            // the records it states cannot be checked: it vouches for nothing here.
            self.summary.unsigned_tail += 1;
        }
        if self.next_seq.is_none() {
            self.summary.seqs.0 = seq;
        }
        self.summary.seqs.1 = seq;
        self.summary.records += 1;
        self.next_seq = Some(seq + 1);
        self.head = line_hash(line);
        self.tree.append(line);
        Ok(record)
    }

    fn segment_header(
        &mut self,
        record: &Value,
        event: &str,
        seq: u64,
        prev: &str,
    ) -> Result<(), String> {
        let log_id = field(record, "log_id").ok_or("the segment's first record has no log_id")?;
        if event == "segment_start" && seq == 0 {
            return Err("a segment_start at seq 0: a log's first record is its genesis".into());
        }
        let number = record
            .get("segment")
            .and_then(Value::as_u64)
            .ok_or("the segment's first record has no segment number")?;
        match &self.log_id {
            None => {
                if event == "genesis" && (seq != 0 || prev != GENESIS_PREV || number != 1) {
                    return Err(
                        "a genesis record must have seq 0, segment 1 and a zero prev".to_string(),
                    );
                }
                self.summary.from_genesis = event == "genesis";
                self.log_id = Some(log_id.to_string());
                self.summary.log_id = log_id.to_string();
            }
            Some(ours) => {
                if event == "genesis" {
                    return Err(
                        "a second genesis record: this segment starts another log".to_string()
                    );
                }
                if log_id != ours {
                    return Err(format!(
                        "this segment belongs to log {log_id}, not to log {ours}"
                    ));
                }
                if number != self.segment + 1 {
                    return Err(format!(
                        "segment {number} follows segment {}: a segment is missing or out of order",
                        self.segment
                    ));
                }
            }
        }
        self.segment = number;
        self.summary.segments += 1;
        Ok(())
    }

    /// A checkpoint of a log written before signetd 0.2: a JWS over the chain's head.
    fn checkpoint(&mut self, record: &Value, seq: u64, prev: &str) -> Result<(), String> {
        let jws = field(record, "checkpoint")
            .and_then(signed::JwsParts::from_compact)
            .ok_or("the checkpoint has no compact JWS")?;
        // Certificates are checked as of the time inside the signed payload (read here
        // unverified; a changed time fails the signature below).
        let at = crate::util::unb64(&jws.payload)
            .and_then(|p| serde_json::from_slice::<CheckpointClaims>(&p).ok())
            .and_then(|c| OffsetDateTime::parse(&c.time, &Rfc3339).ok())
            .map(SystemTime::from)
            .ok_or("the checkpoint's payload has no RFC 3339 time")?;
        let verified = signed::verify(&jws, CHECKPOINT_TYP, self.root, at)
            .map_err(|e| format!("checkpoint signature: {e}"))?;
        let leaf = verified.chain[0].clone();
        let root = self.root;
        let signer = self
            .signers
            .entry(leaf)
            .or_insert_with(|| audit_key(&verified.chain, root, at))
            .clone()?;
        if verified.header["kid"] != signer.as_str() {
            return Err(format!(
                "the checkpoint's kid is not the audit key {signer} whose certificate it carries"
            ));
        }
        if !self.summary.audit_keys.contains(&signer) {
            self.summary.audit_keys.push(signer);
        }
        let claims: CheckpointClaims = serde_json::from_slice(&verified.payload)
            .map_err(|e| format!("the checkpoint's payload is not a checkpoint: {e}"))?;
        if Some(&claims.log_id) != self.log_id.as_ref() {
            return Err(format!(
                "the checkpoint was signed for log {}, not this one",
                claims.log_id
            ));
        }
        // checked_add: the signed seq is still a number someone chose.
        if claims.seq.checked_add(1) != Some(seq) || claims.head != prev {
            return Err(format!(
                "the signed checkpoint covers seq {} with head {}, but the chain before it ends at seq {} with head {prev}: records before it were altered",
                claims.seq,
                claims.head,
                seq.saturating_sub(1)
            ));
        }
        Ok(())
    }
}

/// Checks that `chain` certifies an audit key under `root`: an attested, hardware-bound
/// key whose certificate names the reserved audit issuer. Returns its kid.
fn audit_key(chain: &[Vec<u8>], root: &[u8], at: SystemTime) -> Result<String, String> {
    let verdict = attest::verify::verify_key_attestation(chain, root, None, at);
    if let Some(failure) = verdict.first_failure() {
        return Err(format!(
            "the checkpoint key's attestation fails: {}: {}",
            failure.name, failure.detail
        ));
    }
    let attestation = verdict
        .attestation
        .ok_or("the checkpoint key carries no attestation")?;
    let kid = String::from_utf8(attestation.key_id.as_bytes().to_vec())
        .map_err(|_| "the attested key id is not text")?;
    let leaf = attest::verify::parse(&chain[0])?;
    let expected = attest::profile::name(&[("CN", &kid), ("OU", AUDIT_ISSUER), ("O", "signetd")]);
    if leaf.tbs_certificate.subject.to_der().ok() != expected.to_der().ok() {
        return Err(format!(
            "the checkpoint was signed by {}, which is not an audit key ({AUDIT_ISSUER})",
            leaf.tbs_certificate.subject
        ));
    }
    Ok(kid)
}

/// Verifies the segments at `paths`, in order, against the operator's root certificate
/// (DER). `visit` sees every record that checked out, with its place and exact line.
///
/// A log must contain a signed checkpoint, and its last record must be one: records
/// after the last checkpoint are chained but unsigned, so whoever can write the files
/// could have rewritten them. `allow_unsigned_tail` accepts such a tail (a log still
/// being written, or one whose final checkpoint could not be written); the summary
/// says how long it is.
pub fn verify(
    paths: &[PathBuf],
    root_der: &[u8],
    allow_unsigned_tail: bool,
    visit: &mut dyn FnMut(&Location, &Value, &[u8]),
) -> Result<Summary, Break> {
    let keep = Keep::Roots(Default::default());
    verify_tree(paths, root_der, allow_unsigned_tail, keep, visit).map(|(summary, _)| summary)
}

/// [`verify`], also returning the Merkle tree of the records checked, with what `keep`
/// asks of it: roots at given sizes, or every stored hash for proofs. Its leaf 0 is the
/// first record given (the genesis record if `from_genesis`).
pub fn verify_tree(
    paths: &[PathBuf],
    root_der: &[u8],
    allow_unsigned_tail: bool,
    keep: Keep,
    visit: &mut dyn FnMut(&Location, &Value, &[u8]),
) -> Result<(Summary, VerifiedTree), Break> {
    let mut chain = Chain {
        root: root_der,
        log_id: None,
        segment: 0,
        next_seq: None,
        head: String::new(),
        signers: HashMap::new(),
        tree: VerifiedTree::new(keep),
        summary: Summary::default(),
    };
    let mut end = None;
    for path in paths {
        end = Some(verify_segment(path, &mut chain, visit)?);
    }
    let Chain { summary, tree, .. } = chain;
    let Some(at) = end else {
        return Err(Break {
            at: Location {
                segment: PathBuf::new(),
                line: 0,
                seq: None,
            },
            reason: "no audit segments given".to_string(),
        });
    };
    if summary.checkpoints.is_empty() && !allow_unsigned_tail {
        return Err(Break {
            at,
            reason: "the log holds no signed checkpoint: none of it is signed".to_string(),
        });
    }
    if summary.unsigned_tail > 0 && !allow_unsigned_tail {
        let last = summary.checkpoints.last().map_or_else(
            || "the start".to_string(),
            |seq| format!("the last checkpoint (seq {seq})"),
        );
        return Err(Break {
            at,
            reason: format!(
                "the log ends with {} record(s) after {last} that no checkpoint signs: they could have been rewritten (a log still being written is verified without --require-signed)",
                summary.unsigned_tail
            ),
        });
    }
    Ok((summary, tree))
}

/// The longest line `verify` reads as a record. Records are a few hundred bytes (a
/// checkpoint with its certificates, a few kilobytes); a longer line is not one, and
/// reading it whole would let a planted file take the verifier's memory.
const MAX_LINE: u64 = 16 << 20;

/// Checks one segment, read a line at a time (memory: one line, not the segment);
/// returns the place of its last record.
fn verify_segment(
    path: &Path,
    chain: &mut Chain<'_>,
    visit: &mut dyn FnMut(&Location, &Value, &[u8]),
) -> Result<Location, Break> {
    let mut at = Location {
        segment: path.to_path_buf(),
        line: 0,
        seq: None,
    };
    let unreadable = |at: &Location, e: std::io::Error| Break {
        at: at.clone(),
        reason: format!("cannot read: {e}"),
    };
    let file = File::open(path).map_err(|e| unreadable(&at, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut empty = true;
    // Anything but zeros after the first zero: the break, at the line they start on.
    let damaged = |mut at: Location, records_end: u64| {
        at.line += 1;
        at.seq = None;
        Break {
            at,
            reason: format!(
                "bytes after the zeros at offset {records_end}: a segment holds records, \
                 then (while it is written) zeros only (if the daemon was writing this \
                 segment as it was read, verify again)"
            ),
        }
    };
    loop {
        let next = reader.fill_buf().map_err(|e| unreadable(&at, e))?;
        let Some(&first) = next.first() else {
            break;
        };
        empty = false;
        if first == 0 {
            // The zeros the segment being written runs ahead with, after its last
            // record: nothing but zeros may follow them.
            if rest_is_not_zeros(&mut reader).map_err(|e| unreadable(&at, e))? {
                return Err(damaged(at, offset));
            }
            break;
        }
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| unreadable(&at, e))?;
        if let Some(zero) = line.iter().position(|&b| b == 0) {
            // A record cut short where the zeros begin.
            if line[zero..].iter().any(|&b| b != 0)
                || rest_is_not_zeros(&mut reader).map_err(|e| unreadable(&at, e))?
            {
                return Err(damaged(at, offset + zero as u64));
            }
            at.line += 1;
            at.seq = None;
            return Err(incomplete(at));
        }
        at.line += 1;
        at.seq = None;
        let Some(record) = line.strip_suffix(b"\n") else {
            if read as u64 > MAX_LINE {
                return Err(Break {
                    at,
                    reason: format!("a line longer than {MAX_LINE} bytes is not a record"),
                });
            }
            return Err(incomplete(at));
        };
        match chain.line(record, at.line == 1, &mut at) {
            Ok(value) => visit(&at, &value, record),
            Err(reason) => return Err(Break { at, reason }),
        }
        offset += read as u64;
    }
    if at.line == 0 {
        let reason = if empty {
            "the segment is empty"
        } else {
            "the segment holds no record"
        };
        return Err(Break {
            at,
            reason: reason.to_string(),
        });
    }
    Ok(at)
}

/// The break of a last line cut before its newline.
fn incomplete(at: Location) -> Break {
    Break {
        at,
        reason: "the last line is incomplete (no newline): the segment was cut mid-record"
            .to_string(),
    }
}

/// Whether anything but zeros is left in `reader`.
fn rest_is_not_zeros(reader: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(false);
        }
        if chunk.iter().any(|&b| b != 0) {
            return Ok(true);
        }
        let n = chunk.len();
        reader.consume(n);
    }
}

#[cfg(test)]
mod tests;
