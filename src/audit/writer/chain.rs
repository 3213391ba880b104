//! The chain and the batch being formatted onto it: records in, line bytes, sequence
//! numbers and the Merkle tree's new hashes out. No I/O and no clock: the writer passes
//! the batch's time in, writes the bytes, and only then says [`Chain::written`].
//!
//! A batch extends a copy of the chain's end, so a batch that never becomes durable
//! leaves nothing behind: the next one starts from the same `seq` and `prev`.

use crate::audit::checkpoint::SignedCheckpoint;
use crate::audit::note::{self, TreeHead};
use crate::audit::record::{self, Entry, Event, Extras, line_hash};
use crate::audit::tree::Frontier;

/// Above this, a batch's buffer is not kept for the next batch: one burst should not pin
/// megabytes for the daemon's lifetime.
const KEEP_CAPACITY: usize = 1 << 20;

/// A place in the chain: what the next record continues from.
#[derive(Clone, Debug, Default, PartialEq)]
struct End {
    next_seq: u64,
    /// The hash of the last line.
    head: String,
    /// Records after the last checkpoint.
    unsigned: u64,
    /// The Merkle tree of every record so far (`next_seq` leaves).
    tree: Frontier,
}

/// The chain as written, and the batch being formatted after it.
#[derive(Debug)]
pub(in crate::audit) struct Chain {
    log_id: String,
    /// The replica named in every record, if any (`[replica] name`).
    replica: Option<String>,
    /// The end of what is durable.
    durable: End,
    /// The end of the batch being formatted.
    pending: End,
    /// The batch's lines, each with its newline. Reused from batch to batch.
    bytes: String,
    /// The tree's stored hashes the batch adds (see [`crate::audit::tree`]).
    hashes: Vec<u8>,
    /// The time every record of the batch carries: when the writer wrote it.
    time: String,
    /// Records that must be written before anything else (recovery reports, the audit
    /// key's generation). Kept until a batch holding them is durable.
    notes: Vec<Entry>,
}

impl Chain {
    /// A chain continuing after a line hashing to `head`, over the tree `tree` of the
    /// records so far, with `notes` to write first.
    pub fn new(log_id: String, tree: Frontier, head: String, notes: Vec<Entry>) -> Self {
        let durable = End {
            next_seq: tree.size(),
            head,
            // Whatever came before the restart is covered by the next checkpoint; a new
            // log's genesis is too.
            unsigned: 1,
            tree,
        };
        Chain {
            log_id,
            replica: None,
            pending: durable.clone(),
            durable,
            bytes: String::new(),
            hashes: Vec::new(),
            time: String::new(),
            notes,
        }
    }

    /// The seq the next durable record gets.
    pub fn next_seq(&self) -> u64 {
        self.durable.next_seq
    }

    /// Durable records that no durable checkpoint covers.
    pub fn unsigned(&self) -> u64 {
        self.durable.unsigned
    }

    /// Records of the durable chain plus the batch that no checkpoint covers.
    pub fn pending_unsigned(&self) -> u64 {
        self.pending.unsigned
    }

    /// Starts a batch written at `time`: the first record of segment `segment` when it
    /// is a new one (genesis for the log's first), then the notes.
    pub fn begin(&mut self, time: &str, segment: Option<u64>) {
        if self.bytes.capacity() > KEEP_CAPACITY {
            self.bytes = String::new();
        }
        self.bytes.clear();
        self.hashes.clear();
        self.time.clear();
        self.time.push_str(time);
        self.pending.clone_from(&self.durable);
        if let Some(number) = segment {
            self.push_header(number);
        }
        for i in 0..self.notes.len() {
            let members = self.notes[i].members();
            self.push(&members);
        }
    }

    /// Names `replica` in every record from now on.
    pub fn of_replica(mut self, replica: Option<String>) -> Self {
        self.replica = replica;
        self
    }

    /// Formats a record with `members` (an [`Entry::members`]) onto the batch. Returns
    /// its seq.
    pub fn push(&mut self, members: &str) -> u64 {
        let seq = self.pending.next_seq;
        let start = self.bytes.len();
        record::line(
            &mut self.bytes,
            seq,
            &self.time,
            self.replica.as_deref(),
            members,
            &self.pending.head,
        );
        let line = &self.bytes.as_bytes()[start..];
        self.pending.head = line_hash(line);
        self.pending.tree.append(line, &mut self.hashes);
        self.pending.next_seq += 1;
        self.pending.unsigned += 1;
        self.bytes.push('\n');
        seq
    }

    /// Formats `entry` onto the batch. Returns its seq.
    pub fn push_entry(&mut self, entry: &Entry) -> u64 {
        self.push(&entry.members())
    }

    /// Formats `entry` onto the batch and keeps it as a note until it is durable: a
    /// record that must not be lost if this batch is.
    pub fn push_note(&mut self, entry: Entry) -> u64 {
        let seq = self.push_entry(&entry);
        self.notes.push(entry);
        seq
    }

    /// The first record of a segment: genesis for the first, a link for later ones.
    fn push_header(&mut self, number: u64) {
        let event = if self.pending.next_seq == 0 {
            Event::Genesis
        } else {
            Event::SegmentStart
        };
        let extras = Extras {
            log_id: Some(&self.log_id),
            segment: Some(number),
            ..Extras::default()
        };
        let members = Entry::new(event).members() + &extras.members();
        self.push(&members);
    }

    /// What a checkpoint after the batch so far states: the tree of every record
    /// before it.
    pub fn tree_head(&self) -> TreeHead {
        TreeHead {
            origin: note::origin(&self.log_id),
            size: self.pending.tree.size(),
            root: self.pending.tree.root(),
        }
    }

    /// Formats a checkpoint record carrying `signed` (a note of [`Chain::tree_head`]); it
    /// covers everything before it. Returns its seq.
    pub fn push_checkpoint(&mut self, signed: &SignedCheckpoint) -> u64 {
        let extras = Extras {
            note: Some(&signed.note),
            x5c: Some(&signed.x5c),
            ..Extras::default()
        };
        let entry = Entry::new(Event::Checkpoint).kid(&signed.kid);
        let seq = self.push(&(entry.members() + &extras.members()));
        self.pending.unsigned = 0;
        seq
    }

    /// The batch's bytes: whole lines, each ending in a newline.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_bytes()
    }

    /// The tree's stored hashes for the batch's records, to append to the hash file
    /// once the batch is durable.
    pub fn hashes(&self) -> &[u8] {
        &self.hashes
    }

    /// The batch is durable: the chain continues after it. Returns how many records it
    /// held. [`Chain::hashes`] still holds its hashes until the next batch begins.
    pub fn written(&mut self) -> u64 {
        let records = self.pending.next_seq - self.durable.next_seq;
        std::mem::swap(&mut self.durable, &mut self.pending);
        self.notes.clear();
        self.bytes.clear();
        records
    }

    /// The batch was not written: the chain stays where it was, the notes stay queued.
    pub fn discard(&mut self) {
        self.pending.clone_from(&self.durable);
        self.bytes.clear();
        self.hashes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{CallerRecord, GENESIS_PREV, Record};

    /// A tree of `size` leaves (their contents do not matter here).
    fn tree(size: u64) -> Frontier {
        let mut tree = Frontier::new();
        for _ in 0..size {
            tree.append(b"x", &mut Vec::new());
        }
        tree
    }

    fn signed(head: &TreeHead) -> SignedCheckpoint {
        SignedCheckpoint {
            note: head.text() + "\n\u{2014} k sig\n",
            kid: "k".into(),
            verifier_key: "k+00000000+AQ==".into(),
            x5c: Vec::new(),
            generated: None,
            retired: None,
        }
    }

    fn records(bytes: &[u8]) -> Vec<(Record, String)> {
        let text = std::str::from_utf8(bytes).unwrap();
        assert!(text.ends_with('\n'), "whole lines only: {text:?}");
        text.lines()
            .map(|l| (serde_json::from_str(l).unwrap(), line_hash(l.as_bytes())))
            .collect()
    }

    fn mint(sub: &str) -> String {
        Entry::new(Event::Mint).detail(sub).members()
    }

    #[test]
    fn a_new_log_starts_with_genesis_and_every_prev_hashes_the_line_before() {
        let mut chain = Chain::new("L".into(), tree(0), GENESIS_PREV.into(), Vec::new());
        chain.begin("T", Some(1));
        assert_eq!(chain.push(&mint("a")), 1);
        assert_eq!(chain.push(&mint("b")), 2);
        let lines = records(chain.bytes());
        assert_eq!(lines.len(), 3);
        let (genesis, _) = &lines[0];
        assert_eq!(genesis.entry.event, Event::Genesis);
        assert_eq!(
            (genesis.seq, genesis.log_id.as_deref(), genesis.segment),
            (0, Some("L"), Some(1))
        );
        assert_eq!(genesis.prev, GENESIS_PREV);
        for pair in lines.windows(2) {
            assert_eq!(pair[1].0.prev, pair[0].1);
            assert_eq!(pair[1].0.seq, pair[0].0.seq + 1);
            assert_eq!(pair[1].0.time, "T");
        }
        assert_eq!(chain.written(), 3);
        assert_eq!(chain.next_seq(), 3);
        assert_eq!(chain.unsigned(), 4, "one for the restart, three written");
    }

    #[test]
    fn a_later_segment_starts_with_a_link_and_notes_come_first() {
        let note = Entry::new(Event::Recovered).caller(CallerRecord::internal("audit"));
        let mut chain = Chain::new("L".into(), tree(40), "h".repeat(64), vec![note]);
        chain.begin("T", Some(3));
        chain.push(&mint("a"));
        let lines = records(chain.bytes());
        let events: Vec<_> = lines.iter().map(|(r, _)| r.entry.event).collect();
        assert_eq!(events, [Event::SegmentStart, Event::Recovered, Event::Mint]);
        assert_eq!(lines[0].0.seq, 40);
        assert_eq!(lines[0].0.prev, "h".repeat(64));
        assert_eq!(lines[0].0.segment, Some(3));
    }

    #[test]
    fn a_discarded_batch_leaves_the_chain_and_its_notes_as_they_were() {
        let note = Entry::new(Event::Recovered);
        let mut chain = Chain::new("L".into(), tree(5), "h".repeat(64), vec![note]);
        chain.begin("T1", None);
        chain.push(&mint("lost"));
        chain.push_note(Entry::new(Event::KeyGenerate));
        let head = chain.tree_head();
        chain.push_checkpoint(&signed(&head));
        assert_eq!(chain.pending_unsigned(), 0);
        chain.discard();
        assert_eq!((chain.next_seq(), chain.unsigned()), (5, 1));
        assert!(chain.bytes().is_empty());

        chain.begin("T2", None);
        let seq = chain.push(&mint("kept"));
        let lines = records(chain.bytes());
        let events: Vec<_> = lines.iter().map(|(r, _)| r.entry.event).collect();
        assert_eq!(events, [Event::Recovered, Event::KeyGenerate, Event::Mint]);
        assert_eq!((lines[0].0.seq, &*lines[0].0.prev), (5, &*"h".repeat(64)));
        assert_eq!(seq, 7);
        // The same position as before, but other bytes: the old head does not fit.
        assert_ne!(chain.tree_head(), head);
        chain.written();
        chain.begin("T3", None);
        assert!(chain.bytes().is_empty(), "written notes are not repeated");
    }

    #[test]
    fn a_checkpoint_states_the_tree_before_it_and_resets_the_unsigned_count() {
        let mut chain = Chain::new("L".into(), tree(0), GENESIS_PREV.into(), Vec::new());
        chain.begin("T", Some(1));
        chain.push(&mint("a"));
        assert_eq!(chain.pending_unsigned(), 3);
        let head = chain.tree_head();
        let seq = chain.push_checkpoint(&signed(&head));
        assert_eq!(
            (head.origin.as_str(), head.size, seq),
            ("signetd-audit/L", 2, 2)
        );
        chain.push(&mint("b"));
        assert_eq!(chain.pending_unsigned(), 1);
        let lines = records(chain.bytes());
        let (checkpoint, _) = &lines[2];
        assert_eq!(checkpoint.entry.event, Event::Checkpoint);
        assert_eq!(
            checkpoint.note.as_deref(),
            Some(signed(&head).note.as_str())
        );
        assert_eq!(checkpoint.entry.kid.as_deref(), Some("k"));
        // The root over the two lines before it, as a verifier computes it.
        let mut expected = Frontier::new();
        for line in chain.bytes().split(|b| *b == b'\n').take(2) {
            expected.append(line, &mut Vec::new());
        }
        assert_eq!(head.root, expected.root());
        chain.written();
        assert_eq!(chain.unsigned(), 1);
    }
}
