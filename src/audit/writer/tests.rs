//! The writer's glue driven without a token or a disk: a store that fails on demand and
//! a signer that signs with a string.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::store::WriteFailed;
use super::*;
use crate::audit::checkpoint::SignedCheckpoint;
use crate::audit::note::TreeHead;
use crate::audit::record::{GENESIS_PREV, Record, line_hash};
use crate::audit::tree::{Frontier, StoredHashes};

/// How the next append fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// After this many bytes reached the file; they are cut back out.
    Partway(usize),
    /// After this many bytes, and the cut fails too: they stay.
    Uncut(usize),
}

#[derive(Debug, Default)]
struct Disk {
    bytes: Vec<u8>,
    /// The tree file.
    hashes: Vec<u8>,
    writes: usize,
    /// How many mint records each write held.
    mints_per_write: Vec<usize>,
    fault: Option<Fault>,
    /// How many times the segment was sealed.
    seals: usize,
}

struct FakeStore(Arc<Mutex<Disk>>);

impl Store for FakeStore {
    fn fresh_segment(&self) -> Option<u64> {
        self.0.lock().unwrap().bytes.is_empty().then_some(1)
    }

    fn roll_if_full(&mut self) -> Result<(), AuditError> {
        Ok(())
    }

    fn append_hashes(&mut self, hashes: &[u8]) -> bool {
        self.0.lock().unwrap().hashes.extend_from_slice(hashes);
        true
    }

    fn seal(&mut self) -> Result<(), AuditError> {
        self.0.lock().unwrap().seals += 1;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), WriteFailed> {
        let mut disk = self.0.lock().unwrap();
        let len = disk.bytes.len();
        match disk.fault.take() {
            None => {
                disk.bytes.extend_from_slice(bytes);
                disk.writes += 1;
                let text = std::str::from_utf8(bytes).unwrap();
                let mints = text.matches("\"event\":\"mint\"").count();
                disk.mints_per_write.push(mints);
                Ok(())
            }
            Some(Fault::Partway(n)) => {
                disk.bytes.extend_from_slice(&bytes[..n]);
                disk.bytes.truncate(len);
                Err(WriteFailed {
                    error: "No space left on device".into(),
                    cut: true,
                })
            }
            Some(Fault::Uncut(n)) => {
                disk.bytes.extend_from_slice(&bytes[..n]);
                Err(WriteFailed {
                    error: "Input/output error".into(),
                    cut: false,
                })
            }
        }
    }

    fn path(&self) -> &Path {
        Path::new("segment-000001.jsonl")
    }
}

#[derive(Debug, Default)]
struct Signatures {
    signed: Vec<TreeHead>,
    /// Fail every signature.
    fail: bool,
    /// The first signature generates this key.
    generate: Option<String>,
    /// The first signature retires this key.
    retire: Option<String>,
    forgotten: usize,
}

struct FakeSigner(Arc<Mutex<Signatures>>);

impl CheckpointSigning for FakeSigner {
    fn sign(&mut self, head: &TreeHead) -> Result<SignedCheckpoint, AuditError> {
        let mut log = self.0.lock().unwrap();
        if log.fail {
            return Err(AuditError::NoKey("the token is gone".into()));
        }
        log.signed.push(head.clone());
        Ok(SignedCheckpoint {
            note: fake_note(head),
            kid: "signetd-audit-k".into(),
            verifier_key: "k+00000000+AQ==".into(),
            x5c: vec!["cert".into()],
            generated: log.generate.take(),
            retired: log.retire.take(),
        })
    }

    fn forget_key(&mut self) {
        self.0.lock().unwrap().forgotten += 1;
    }
}

fn fake_note(head: &TreeHead) -> String {
    format!("{}\n\n\u{2014} fake", head.text())
}

struct Rig {
    writer: Writer,
    disk: Arc<Mutex<Disk>>,
    signatures: Arc<Mutex<Signatures>>,
    shared: Arc<Shared>,
}

fn rig(every: u64) -> Rig {
    let disk = Arc::new(Mutex::new(Disk::default()));
    let signatures = Arc::new(Mutex::new(Signatures::default()));
    let shared = Arc::new(Shared {
        healthy: AtomicBool::new(true),
        ..Shared::default()
    });
    let writer = Writer::new(Parts {
        store: Box::new(FakeStore(disk.clone())),
        chain: Chain::new("L".into(), Frontier::new(), GENESIS_PREV.into(), Vec::new()),
        cadence: Cadence {
            every,
            period: Duration::from_secs(3600),
        },
        signer: Box::new(FakeSigner(signatures.clone())),
        shared: shared.clone(),
    });
    Rig {
        writer,
        disk,
        signatures,
        shared,
    }
}

type Answer = oneshot::Receiver<Result<u64, AuditError>>;

/// Appends of mint records `subs`, and where their answers arrive.
fn appends(subs: &[&str]) -> (Vec<(String, Reply)>, Vec<Answer>) {
    subs.iter()
        .map(|sub| {
            let (reply, answer) = oneshot::channel();
            (
                (Entry::new(Event::Mint).detail(sub).members(), reply),
                answer,
            )
        })
        .unzip()
}

/// Each answer's seq, or `None` for a refusal (`Unavailable`).
fn answers(answers: Vec<Answer>) -> Vec<Option<u64>> {
    answers
        .into_iter()
        .map(|mut a| match a.try_recv().expect("answered") {
            Ok(seq) => Some(seq),
            Err(AuditError::Unavailable) => None,
            Err(e) => panic!("{e}"),
        })
        .collect()
}

impl Rig {
    fn commit(&mut self, subs: &[&str], asked: bool) -> Vec<Option<u64>> {
        let (appends, waiting) = appends(subs);
        let _ = self.writer.commit(appends, asked);
        answers(waiting)
    }

    fn fail_next(&self, fault: Fault) {
        self.disk.lock().unwrap().fault = Some(fault);
    }

    /// The records on disk, each checked to chain onto the one before.
    fn records(&self) -> Vec<Record> {
        let disk = self.disk.lock().unwrap();
        let text = std::str::from_utf8(&disk.bytes).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        let mut prev = GENESIS_PREV.to_string();
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let record: Record = serde_json::from_str(line).unwrap();
            assert_eq!((record.seq, &record.prev), (i as u64, &prev), "{line}");
            prev = line_hash(line.as_bytes());
            records.push(record);
        }
        records
    }

    fn events(&self) -> Vec<Event> {
        self.records().iter().map(|r| r.entry.event).collect()
    }

    fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }
}

#[test]
fn a_batch_is_one_durable_write_answered_after_it() {
    let mut rig = rig(1000);
    let seqs = rig.commit(&["a", "b", "c"], false);
    assert_eq!(seqs, [Some(1), Some(2), Some(3)]);
    assert_eq!(rig.disk.lock().unwrap().writes, 1);
    assert_eq!(
        rig.events(),
        [Event::Genesis, Event::Mint, Event::Mint, Event::Mint]
    );
    assert_eq!(
        rig.writer.shared.records.load(Ordering::Relaxed),
        4,
        "genesis counts"
    );
    assert!(rig.healthy());
}

#[test]
fn a_torn_batch_is_cut_back_and_the_chain_does_not_advance() {
    let mut rig = rig(3);
    rig.commit(&["a"], false);
    let before = rig.disk.lock().unwrap().bytes.clone();
    let signed = rig.signatures.lock().unwrap().signed.len();

    // Three records make a checkpoint due: it is signed into the batch, then lost.
    rig.fail_next(Fault::Partway(100));
    let results = rig.commit(&["b", "c", "d"], false);
    assert_eq!(results, [None, None, None]);
    assert_eq!(rig.disk.lock().unwrap().bytes, before, "cut back");
    assert_eq!(rig.signatures.lock().unwrap().signed.len(), signed + 1);
    assert_eq!(rig.writer.chain.next_seq(), 3);
    assert!(!rig.healthy());

    // The next batch continues the durable chain (`records` checks every seq and
    // prev): the report first, where the lost batch began.
    let results = rig.commit(&["e"], false);
    let records = rig.records();
    assert_eq!(records[3].entry.event, Event::Resumed);
    let detail = records[3].entry.detail.as_deref().unwrap();
    assert!(detail.contains("(3 records refused)"), "{detail}");
    assert!(detail.contains("No space left"), "{detail}");
    assert_eq!(results, [Some(4)]);
    assert!(rig.healthy());
    assert_eq!(
        rig.events(),
        [
            Event::Genesis,
            Event::Mint,
            Event::Checkpoint,
            Event::Resumed,
            Event::Mint
        ]
    );
    assert_eq!(
        rig.writer.chain.unsigned(),
        2,
        "the lost batch's checkpoint and records do not count"
    );
}

#[test]
fn an_outage_retries_on_its_own_and_counts_every_refusal() {
    let mut rig = rig(1000);
    rig.commit(&["a"], false);
    let period = Instant::now() + Duration::from_secs(60);
    assert!(
        rig.writer.next_wake().unwrap() > period,
        "only a checkpoint is due"
    );

    rig.fail_next(Fault::Partway(0));
    assert_eq!(rig.commit(&["b", "c"], false), [None, None]);
    let wake = rig.writer.next_wake().expect("a retry is due");
    assert!(wake <= Instant::now() + Duration::from_secs(1));
    // The timer's retry fails too: it refuses nobody, and the count stays.
    rig.fail_next(Fault::Partway(0));
    let _ = rig.writer.commit(Vec::new(), false);
    rig.fail_next(Fault::Partway(0));
    assert_eq!(rig.commit(&["d"], false), [None]);
    assert!(!rig.healthy());

    // The timer's retry succeeds: the outage ends without traffic.
    rig.writer.commit(Vec::new(), false).unwrap();
    assert!(rig.healthy());
    let records = rig.records();
    let last = records.last().unwrap();
    assert_eq!(last.entry.event, Event::Resumed);
    assert!(
        last.entry
            .detail
            .as_deref()
            .unwrap()
            .contains("(3 records refused)")
    );
    // Only once.
    assert_eq!(rig.commit(&["e"], false), [Some(3)]);
    assert_eq!(rig.events()[3..], [Event::Mint]);
    assert!(rig.writer.next_wake().unwrap() > period, "no more retries");
}

#[test]
fn a_failed_cut_refuses_everything_until_restart() {
    let mut rig = rig(1000);
    rig.commit(&["a"], false);
    rig.fail_next(Fault::Uncut(10));
    assert_eq!(rig.commit(&["b"], false), [None]);
    let writes = rig.disk.lock().unwrap().writes;
    assert_eq!(rig.commit(&["c"], false), [None]);
    assert_eq!(rig.disk.lock().unwrap().writes, writes, "no more writes");
    assert!(!rig.healthy());
    assert_eq!(rig.writer.next_wake(), None, "no retries");
    let disk = rig.disk.clone();
    rig.writer.finish();
    assert_eq!(
        disk.lock().unwrap().seals,
        0,
        "the file's end is unknown: recovery keeps what is after the records"
    );
}

#[test]
fn checkpoints_sign_the_head_they_follow_every_so_many_records() {
    let mut rig = rig(3);
    rig.commit(&["a", "b", "c", "d", "e", "f", "g", "h"], false);
    let records = rig.records();
    let signed = rig.signatures.lock().unwrap().signed.clone();
    let checkpoints: Vec<&Record> = records
        .iter()
        .filter(|r| r.entry.event == Event::Checkpoint)
        .collect();
    // The restart's count, genesis and a; b c d; e f g; h waits.
    assert_eq!(checkpoints.len(), 3);
    assert_eq!(signed.len(), 3);
    assert_eq!(
        checkpoints.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 6, 10]
    );
    // Each states the tree of every record before it, as a verifier computes it from
    // the lines.
    let disk = rig.disk.lock().unwrap();
    let lines: Vec<&[u8]> = disk.bytes.split(|b| *b == b'\n').collect();
    let mut tree = StoredHashes::default();
    let mut roots = vec![tree.frontier().root()];
    for line in &lines[..records.len()] {
        tree.append(line);
        roots.push(tree.frontier().root());
    }
    for (record, head) in checkpoints.iter().zip(&signed) {
        assert_eq!(head.size, record.seq);
        assert_eq!(head.root, roots[record.seq as usize]);
        assert_eq!(head.origin, "signetd-audit/L");
        assert_eq!(record.note.as_deref(), Some(fake_note(head).as_str()));
        assert_eq!(record.entry.kid.as_deref(), Some("signetd-audit-k"));
        assert_eq!(record.x5c.as_deref(), Some(&["cert".to_string()][..]));
    }
    assert_eq!(rig.writer.chain.unsigned(), 1);
}

#[test]
fn the_tree_file_gets_the_stored_hashes_of_durable_batches_only() {
    let mut rig = rig(3);
    rig.commit(&["a", "b"], false);
    rig.fail_next(Fault::Partway(5));
    assert_eq!(rig.commit(&["lost"], false), [None]);
    rig.commit(&["c", "d", "e"], false);
    let records = rig.records();
    let disk = rig.disk.lock().unwrap();
    let mut tree = StoredHashes::default();
    let mut expected = Vec::new();
    let mut frontier = Frontier::new();
    for line in disk.bytes.split(|b| *b == b'\n').take(records.len()) {
        tree.append(line);
        frontier.append(line, &mut expected);
    }
    assert_eq!(disk.hashes, expected);
    assert_eq!(records.len() as u64, tree.frontier().size());
}

#[test]
fn an_asked_checkpoint_answers_with_its_seq_or_the_signers_error() {
    let mut rig = rig(1000);
    let written = rig.writer.commit(Vec::new(), true);
    assert_eq!(rig.events(), [Event::Genesis, Event::Checkpoint]);
    assert_eq!(rig.writer.checkpoint_result(&written).ok(), Some(1));
    // Nothing new: nothing to sign, and the answer is the last checkpoint.
    let written = rig.writer.commit(Vec::new(), true);
    assert_eq!(rig.writer.checkpoint_result(&written).ok(), Some(1));
    assert_eq!(rig.signatures.lock().unwrap().signed.len(), 1);

    rig.signatures.lock().unwrap().fail = true;
    rig.commit(&["a"], false);
    let written = rig.writer.commit(Vec::new(), true);
    assert!(matches!(
        rig.writer.checkpoint_result(&written),
        Err(AuditError::NoKey(_))
    ));
}

#[test]
fn a_generated_audit_key_is_recorded_before_the_checkpoint_and_survives_a_lost_batch() {
    let mut rig = rig(1000);
    rig.commit(&["a"], false);
    rig.signatures.lock().unwrap().generate = Some("signetd-audit-1".into());
    rig.fail_next(Fault::Partway(5));
    let written = rig.writer.commit(Vec::new(), true);
    assert!(written.is_err());
    assert_eq!(rig.events(), [Event::Genesis, Event::Mint]);

    // The key exists in the token now: its record goes first in the next batch.
    rig.writer.commit(Vec::new(), true).unwrap();
    let records = rig.records();
    let events: Vec<Event> = records.iter().map(|r| r.entry.event).collect();
    assert_eq!(
        events[2..],
        [Event::KeyGenerate, Event::Resumed, Event::Checkpoint]
    );
    assert_eq!(records[2].entry.kid.as_deref(), Some("signetd-audit-1"));
}

#[test]
fn an_es256_audit_key_retired_for_an_ed25519_one_is_recorded_before_the_checkpoint() {
    let mut rig = rig(1000);
    {
        let mut signatures = rig.signatures.lock().unwrap();
        signatures.retire = Some("signetd-audit-old".into());
        signatures.generate = Some("signetd-audit-new".into());
    }
    rig.writer.commit(Vec::new(), true).unwrap();
    let records = rig.records();
    let events: Vec<Event> = records.iter().map(|r| r.entry.event).collect();
    assert_eq!(
        events,
        [
            Event::Genesis,
            Event::KeyRetire,
            Event::KeyGenerate,
            Event::Checkpoint
        ]
    );
    assert_eq!(records[1].entry.kid.as_deref(), Some("signetd-audit-old"));
    assert!(
        records[1]
            .entry
            .detail
            .as_deref()
            .unwrap()
            .ends_with("now retired")
    );
    let signed = rig.signatures.lock().unwrap().signed.clone();
    assert_eq!(signed.last().unwrap().size, 3, "the checkpoint covers both");
}

#[test]
fn the_thread_answers_appends_forgets_keys_and_closes_with_a_checkpoint() {
    let rig = rig(1000);
    let (inbox, receiver) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || rig.writer.run(receiver));
    let (reply, answer) = oneshot::channel();
    let members = Entry::new(Event::Start).members();
    inbox.send(Message::Append(members, None, reply)).unwrap();
    assert_eq!(answer.blocking_recv().unwrap().ok(), Some(1));
    inbox.send(Message::ForgetKey).unwrap();
    let (reply, answer) = oneshot::channel();
    let members = Entry::new(Event::Stop).members();
    inbox.send(Message::Close(members, reply)).unwrap();
    assert_eq!(answer.blocking_recv().unwrap().ok(), Some(2));
    thread.join().unwrap();
    assert!(!rig.shared.healthy.load(Ordering::SeqCst), "closed");
    assert_eq!(rig.signatures.lock().unwrap().forgotten, 1);
    let disk = rig.disk.lock().unwrap();
    let last = std::str::from_utf8(&disk.bytes).unwrap().lines().last();
    assert!(last.unwrap().contains("\"event\":\"checkpoint\""));
    assert_eq!(disk.seals, 1, "the segment ends with its last record");
}

fn mint(sub: &str) -> String {
    Entry::new(Event::Mint).detail(sub).members()
}

#[test]
fn a_lone_record_is_written_by_its_callers_thread_and_durable_when_answered() {
    let rig = rig(1000);
    let disk = rig.disk.clone();
    let desk = Desk::new(rig.writer);
    let first = desk.write_alone(mint("a")).expect("idle: written here");
    assert_eq!(first.result.ok(), Some(1), "after the genesis record");
    assert!(
        first.wake_thread,
        "records are now unsigned: the thread must wake for the period's checkpoint"
    );
    {
        // What the thread does when woken: plan its next wake.
        let mut guard = desk.lock();
        let writer = guard.as_mut().unwrap();
        writer.thread_wakes_at = writer.next_wake();
    }
    let second = desk.write_alone(mint("b")).expect("written here");
    assert_eq!(second.result.ok(), Some(2));
    let disk = disk.lock().unwrap();
    assert_eq!(disk.writes, 2, "one write each");
    let text = String::from_utf8(disk.bytes.clone()).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.lines().last().unwrap().contains("\"detail\":\"b\""));
    assert!(!second.wake_thread, "the thread's plan still holds");
}

#[test]
fn a_lone_record_goes_to_the_thread_when_the_writer_is_busy_or_a_checkpoint_is_due() {
    let rig = rig(4);
    let signatures = rig.signatures.clone();
    let desk = Desk::new(rig.writer);
    {
        let _thread = desk.lock();
        assert_eq!(
            desk.write_alone(mint("held")).err().as_deref(),
            Some(mint("held").as_str()),
            "the thread holds the writer: the record comes back to be queued"
        );
    }
    // A fresh chain counts one unsigned record; genesis and a record fit under
    // `every = 4`, the next would reach it, and only the thread signs checkpoints.
    assert!(desk.write_alone(mint("a")).is_ok());
    assert!(desk.write_alone(mint("b")).is_err(), "its batch would sign");
    assert!(signatures.lock().unwrap().signed.is_empty());
}

#[test]
fn a_lone_record_during_an_outage_goes_to_the_thread() {
    let rig = rig(1000);
    rig.disk.lock().unwrap().fault = Some(Fault::Partway(10));
    let desk = Desk::new(rig.writer);
    let failed = desk
        .write_alone(mint("a"))
        .expect("healthy until it failed");
    assert!(matches!(failed.result, Err(AuditError::Unavailable)));
    assert!(failed.wake_thread, "the thread retries the disk");
    assert!(
        desk.write_alone(mint("b")).is_err(),
        "the outage is the thread's"
    );
    assert!(!rig.shared.healthy.load(Ordering::SeqCst));
}

#[test]
fn a_lone_record_that_would_sign_a_checkpoint_leaves_it_to_the_thread() {
    // `may_write_alone` is conservative; if a checkpoint still comes due in a lone
    // write, it is deferred, not signed on the caller's thread.
    let mut rig = rig(1000);
    rig.writer.alone = true;
    rig.writer.checkpoint();
    assert!(rig.writer.checkpoint_deferred);
    assert!(rig.signatures.lock().unwrap().signed.is_empty());
}

/// Announces a record, as a request does before it signs.
fn announce(shared: &Arc<Shared>) -> Expected {
    shared.expected.fetch_add(1, Ordering::SeqCst);
    Expected {
        shared: shared.clone(),
    }
}

/// An append of a mint record `sub`, made durable under `expected`, and its answer.
fn append_announced(sub: &str, expected: Expected) -> (Message, Answer) {
    let (reply, answer) = oneshot::channel();
    (Message::Append(mint(sub), Some(expected), reply), answer)
}

/// How many mint records each write held.
fn mints_per_write(rig: &Rig) -> Vec<usize> {
    rig.disk.lock().unwrap().mints_per_write.clone()
}

/// Waits at most `bound` for `done`, in small steps.
fn wait_for(bound: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + bound;
    while !done() {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// A writer whose batches wait as `gap`, `short` and `loaded` say.
fn gathering(gap: Duration, short: Duration, loaded: Duration) -> Rig {
    let mut rig = rig(1000);
    rig.writer.gathering = Gathering { gap, short, loaded };
    rig
}

const LONG: Duration = Duration::from_secs(60);

/// Sends `(sub, expected)` appends from a thread, each `after` the one before; the last
/// only once the first batch is written if `last_after_a_write` (or after 10 s: then the
/// writer was still waiting for it). Returns whether it waited for a write, and the
/// answers.
fn send_paced(
    rig: &Rig,
    inbox: std::sync::mpsc::Sender<Message>,
    records: Vec<(&'static str, Expected)>,
    after: Duration,
    last_after_a_write: bool,
) -> std::thread::JoinHandle<(bool, Vec<Answer>)> {
    let disk = rig.disk.clone();
    std::thread::spawn(move || {
        let (mut written, mut answers) = (false, Vec::new());
        let count = records.len();
        for (i, (sub, expected)) in records.into_iter().enumerate() {
            if i + 1 == count && last_after_a_write {
                written = wait_for(Duration::from_secs(10), || disk.lock().unwrap().writes > 0);
            } else if i > 0 {
                std::thread::sleep(after);
            }
            let (message, answer) = append_announced(sub, expected);
            inbox.send(message).unwrap();
            answers.push(answer);
        }
        (written, answers)
    })
}

/// Runs batches until `count` records are answered.
fn batches(rig: &mut Rig, receiver: &Receiver<Message>, count: usize) {
    while mints_per_write(rig).iter().sum::<usize>() < count {
        let first = receiver.recv().unwrap();
        assert!(rig.writer.batch(first, receiver).is_none());
    }
}

#[test]
fn announced_records_join_one_batch_written_once_the_last_is_in() {
    let mut rig = gathering(LONG, LONG, LONG);
    let records = ["a", "b", "c"].map(|sub| (sub, announce(&rig.shared)));
    let (inbox, receiver) = std::sync::mpsc::channel();
    let (later, disk, shared) = (inbox.clone(), rig.disk.clone(), rig.shared.clone());
    let sender = send_paced(&rig, inbox, records.into(), Duration::from_millis(5), false);
    // A fourth record, announced and sent once the first batch is written (or after
    // 10 s if the writer still waits then: it would join that batch).
    let late = std::thread::spawn(move || {
        let written = wait_for(Duration::from_secs(10), || disk.lock().unwrap().writes > 0);
        let (message, answer) = append_announced("d", announce(&shared));
        later.send(message).unwrap();
        (written, answer)
    });
    batches(&mut rig, &receiver, 4);
    let (_, mut waiting) = sender.join().unwrap();
    let (written, last) = late.join().unwrap();
    waiting.push(last);
    assert!(
        written,
        "expected: the first batch written as soon as nothing more was announced"
    );
    assert_eq!(mints_per_write(&rig), [3, 1]);
    assert_eq!(answers(waiting), [Some(1), Some(2), Some(3), Some(4)]);
}

/// Announces a record for each of `subs` and sends them one `after` another, the last
/// only once a batch is written (or after 10 s: then the writer was still waiting for
/// it). Checks that the last was not waited for (`why`), and how many records each
/// write held.
fn check_gathered(
    mut rig: Rig,
    subs: &[&'static str],
    after: Duration,
    why: &str,
    per_write: &[usize],
) {
    let records = subs
        .iter()
        .map(|&sub| (sub, announce(&rig.shared)))
        .collect();
    let (inbox, receiver) = std::sync::mpsc::channel();
    let sender = send_paced(&rig, inbox, records, after, true);
    batches(&mut rig, &receiver, subs.len());
    let (written, waiting) = sender.join().unwrap();
    assert!(written, "expected: {why}");
    assert_eq!(mints_per_write(&rig), per_write);
    let seqs: Vec<_> = (1..=subs.len() as u64).map(Some).collect();
    assert_eq!(answers(waiting), seqs);
}

#[test]
fn a_slow_announced_record_does_not_hold_the_batch_past_the_gap() {
    check_gathered(
        gathering(Duration::from_millis(10), LONG, LONG),
        &["fast", "slow"],
        Duration::ZERO,
        "the first batch written without the slow record",
        &[1, 1],
    );
}

#[test]
fn without_load_behind_it_a_batch_waits_only_the_short_time() {
    // Three announced: after the first, more are announced than the batch holds (load:
    // it waits for the second); after the second, no longer (it is written without
    // waiting for the third: short is zero).
    check_gathered(
        gathering(LONG, Duration::ZERO, LONG),
        &["a", "b", "c"],
        Duration::from_millis(5),
        "the first batch written without waiting for the third record",
        &[2, 1],
    );
}

#[test]
fn a_batch_holding_as_many_as_are_still_announced_is_not_under_load() {
    // One held, one announced: not more announced than held, so the short time (zero)
    // applies, not the long one for load.
    check_gathered(
        gathering(LONG, Duration::ZERO, LONG),
        &["a", "b"],
        Duration::ZERO,
        "the first batch written without waiting for the second record",
        &[1, 1],
    );
}

#[test]
fn under_load_a_batch_stops_gathering_at_its_limit_while_records_keep_coming() {
    let mut rig = gathering(LONG, LONG, Duration::from_millis(20));
    let shared = rig.shared.clone();
    let disk = rig.disk.clone();
    let (inbox, receiver) = std::sync::mpsc::channel();
    // 1,000 announced, one sent every millisecond until the first batch is written. If
    // the limit did not cut it, the batch would wait for all of them.
    let sender = std::thread::spawn(move || {
        let pool: Vec<Expected> = (0..1000).map(|_| announce(&shared)).collect();
        let mut answers = Vec::new();
        for expected in pool {
            if disk.lock().unwrap().writes > 0 {
                return (true, answers);
            }
            let (message, answer) = append_announced("steady", expected);
            inbox.send(message).unwrap();
            answers.push(answer);
            std::thread::sleep(Duration::from_millis(1));
        }
        (false, answers)
    });
    let first = receiver.recv().unwrap();
    assert!(rig.writer.batch(first, &receiver).is_none());
    let (cut, answers) = sender.join().unwrap();
    assert!(
        cut,
        "expected: the batch written while records were still announced"
    );
    let written = mints_per_write(&rig);
    assert_eq!(written.len(), 1);
    // At a record a millisecond, 20 ms hold about 20; far fewer than the 1,000 that
    // were announced.
    assert!((1..=answers.len()).contains(&written[0]) && written[0] < 500);
}
