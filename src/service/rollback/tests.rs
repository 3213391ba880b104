//! Reading the witness from audit lines as the daemon writes them, and rolling a store
//! forward from it (on an SQLite store of the test's own).

use std::io::Write;

use super::*;
use crate::algorithm::{Algorithm, KeyPurpose};
use crate::store::test_db::{Engine, TestDb};
use crate::store::{KeyRow, SqlStore};

/// [`catch_up`] on `store` (in every role), which must succeed: the records it made.
async fn caught_up(witness: &Witness, store: &SqlStore, now: u64) -> Vec<Entry> {
    let mut records = Vec::new();
    catch_up(witness, store, store, store, now, &mut records)
        .await
        .unwrap();
    assert!(witness.has_caught_up());
    records
}

/// A log directory holding one segment with `lines`.
fn log(lines: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("segment-000001.jsonl")).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
    dir
}

/// An audit line as the writer assembles it from `entry`.
fn line(seq: u64, entry: Entry) -> String {
    let mut value = serde_json::to_value(&entry).unwrap();
    value["seq"] = seq.into();
    value.to_string()
}

fn key_change(seq: u64, event: Event, kid: &str, state: KeyState) -> String {
    line(
        seq,
        Entry::new(event)
            .issuer("a")
            .kid(kid)
            .ok()
            .detail(changed_detail(state)),
    )
}

#[test]
fn every_detail_the_daemon_writes_names_its_state() {
    use KeyState::*;
    for state in [Pending, Active, Retired, Archived, Revoked] {
        assert_eq!(state_in(&changed_detail(state)), Some(state));
        assert_eq!(state_in(&observed_detail(None, state)), Some(state));
        assert_eq!(
            state_in(&observed_detail(Some(Pending), state)),
            Some(state)
        );
        let made = "cli uid 0 at 2026-12-01T00:00:00Z";
        assert_eq!(state_in(&generated_detail(made, state)), Some(state));
    }
    assert_eq!(state_in("the token came back"), None);
}

#[test]
fn the_furthest_state_wins_whatever_the_order_of_records() {
    let dir = log(&[
        line(
            1,
            Entry::new(Event::Start).detail(format!(
                "signetd 0 pid 1, token \"t\" serial 1{START_KEYS}a-1=active a-2=pending"
            )),
        ),
        key_change(2, Event::KeyRevoke, "a-1", KeyState::Revoked),
        key_change(3, Event::KeyActivate, "a-2", KeyState::Active),
        // A later start after the store went back lists the earlier state again.
        line(
            4,
            Entry::new(Event::Start).detail(format!("x{START_KEYS}a-1=active a-2=active")),
        ),
        line(
            5,
            Entry::new(Event::KeyObserved)
                .kid("a-3")
                .ok()
                .detail(observed_detail(None, KeyState::Pending)),
        ),
        // Refused and unparsable lines witness nothing.
        line(
            6,
            Entry::new(Event::KeyRetire)
                .kid("a-3")
                .refused("conflict", "no")
                .detail(changed_detail(KeyState::Retired)),
        ),
        "{\"seq\":7,\"event\":\"key_revoke\",\"kid\":".to_string(),
    ]);
    let witness = Witness::from_log(dir.path()).unwrap();
    let state = |kid: &str| witness.seen(kid).map(|s| s.state);
    assert_eq!(state("a-1"), Some(KeyState::Revoked));
    assert_eq!(witness.seen("a-1").unwrap().source, "audit seq 2");
    assert_eq!(state("a-2"), Some(KeyState::Active));
    assert_eq!(state("a-3"), Some(KeyState::Pending));
    witness.raise("a-1", KeyState::Active, "this run");
    assert_eq!(state("a-1"), Some(KeyState::Revoked));
}

#[test]
fn archiving_from_service_takes_two_moves_and_nothing_moves_back() {
    use KeyState::*;
    assert_eq!(steps(Active, Archived), vec![Retired, Archived]);
    assert_eq!(steps(Pending, Active), vec![Active]);
    assert_eq!(steps(Retired, Revoked), vec![Revoked]);
    assert!(steps(Revoked, Active).is_empty());
}

fn row(kid: &str, state: KeyState) -> KeyRow {
    KeyRow {
        kid: kid.to_string(),
        issuer: "a".to_string(),
        algorithm: Algorithm::Es256,
        purpose: KeyPurpose::Jwt,
        token_id: kid.as_bytes().to_vec(),
        state,
        created_at: 10,
        updated_at: 10,
        certificate: vec![0x30, 0x03, 1, 2, 3],
    }
}

/// A fresh SQLite store holding `keys` of issuer `a` (the database lives as long as the
/// [`TestDb`]).
async fn store_with(keys: &[(&str, KeyState)]) -> (TestDb, SqlStore) {
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    for &(kid, state) in keys {
        store
            .add_key(&row(kid, state), "test", false)
            .await
            .unwrap();
    }
    (db, store)
}

#[tokio::test]
async fn a_store_put_back_before_a_rotation_and_a_revocation_is_moved_forward() {
    // The store as a backup had it: a-1 signing, a-2 pending, a-0 retired.
    let (_db, store) = store_with(&[
        ("a-0", KeyState::Retired),
        ("a-1", KeyState::Active),
        ("a-2", KeyState::Pending),
    ])
    .await;
    // What the log saw after the backup: a-2 active, a-1 retired, a-0 revoked.
    let dir = log(&[
        key_change(1, Event::KeyActivate, "a-2", KeyState::Active),
        key_change(2, Event::KeyRetire, "a-1", KeyState::Retired),
        key_change(3, Event::KeyRevoke, "a-0", KeyState::Revoked),
    ]);
    let witness = Witness::from_log(dir.path()).unwrap();
    let behind = witness.behind(&store).await.unwrap();
    let order: Vec<&str> = behind.iter().map(|b| b.kid.as_str()).collect();
    assert_eq!(order, ["a-0", "a-1", "a-2"], "activations come last");
    let records = roll_forward(&store, &behind, 50).await.unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.event == Event::StateRollback));
    let states: Vec<(String, KeyState)> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.kid, k.state))
        .collect();
    assert_eq!(
        states,
        [
            ("a-0".to_string(), KeyState::Revoked),
            ("a-1".to_string(), KeyState::Retired),
            ("a-2".to_string(), KeyState::Active),
        ]
    );
    let history = store.history("a-0").await.unwrap();
    assert_eq!(history.last().unwrap().actor, ACTOR);
    assert!(witness.behind(&store).await.unwrap().is_empty());
}

/// A reading made after the store was checked is checked again by the same rule: a key
/// read behind what this run saw is named, with both states and where the later one was
/// seen; keys at or past their recorded state, and keys never seen, are not.
#[test]
fn a_reading_behind_the_witness_names_each_key_behind() {
    let witness = Witness::default();
    witness.raise("a-1", KeyState::Revoked, "this run");
    witness.raise("a-2", KeyState::Active, "this run");
    witness.raise("a-3", KeyState::Retired, "this run");
    let read = [
        ("a-1", KeyState::Active),
        ("a-2", KeyState::Retired),
        ("a-3", KeyState::Pending),
        ("a-4", KeyState::Pending),
    ]
    .map(|(kid, state)| (kid.to_string(), "a".to_string(), state));
    let behind = witness.behind_of(read);
    let named: Vec<String> = behind.iter().map(ToString::to_string).collect();
    assert_eq!(
        named,
        [
            "a-1 active (was revoked, this run)",
            "a-3 pending (was retired, this run)"
        ]
    );
}

/// The moves are one transaction: when the store refuses one (here another process
/// revoked the key the log saw activated), none is made, and no issuer is left
/// between two keys.
#[tokio::test]
async fn a_refused_move_moves_no_key() {
    let (_db, store) = store_with(&[("a-1", KeyState::Active), ("a-2", KeyState::Pending)]).await;
    let dir = log(&[
        key_change(1, Event::KeyActivate, "a-2", KeyState::Active),
        key_change(2, Event::KeyRetire, "a-1", KeyState::Retired),
    ]);
    let witness = Witness::from_log(dir.path()).unwrap();
    let behind = witness.behind(&store).await.unwrap();
    assert_eq!(behind.len(), 2);
    store
        .set_state("a-2", KeyState::Pending, KeyState::Revoked, 40, "cli")
        .await
        .unwrap();
    let refused = roll_forward(&store, &behind, 50).await.unwrap_err();
    assert!(
        refused.contains("none was moved") && refused.contains("a-2"),
        "{refused}"
    );
    let active: Vec<String> = store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.state == KeyState::Active)
        .map(|k| k.kid)
        .collect();
    assert_eq!(active, ["a-1"], "the retirement was rolled back");
}

#[tokio::test]
async fn a_token_revocation_the_store_lost_is_put_back_until_it_expires() {
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    let revoke = |seq: u64, jti: &str, exp: u64| {
        let mut entry = Entry::new(Event::TokenRevoke)
            .ok()
            .detail(format!("listed until {exp}"));
        entry.jti = Some(jti.to_string());
        line(seq, entry)
    };
    let mut learned = Entry::new(Event::TokenRevoke)
        .ok()
        .detail("listed until 2000; revoked at 5 outside this daemon (signetd token revoke)");
    learned.jti = Some("learned".to_string());
    let dir = log(&[
        revoke(1, "lost", 1000),
        revoke(2, "expired", 10),
        line(3, learned),
    ]);
    let witness = Witness::from_log(dir.path()).unwrap();
    let missing = witness.missing_revocations(&store.list().await.unwrap(), 100);
    let jtis: Vec<&str> = missing.iter().map(|r| r.jti.as_str()).collect();
    assert_eq!(jtis, ["lost", "learned"]);
    let mut records = Vec::new();
    restore_revocations(&store, &missing, 100, &mut records)
        .await
        .unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    let mut listed: Vec<(String, u64)> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.jti, r.exp))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("learned".to_string(), 2000), ("lost".to_string(), 1000)]
    );
    assert!(
        witness
            .missing_revocations(&store.list().await.unwrap(), 100)
            .is_empty()
    );
}

/// A revocation written into the store while no daemon ran is recorded at the next
/// start, in the form the witness reads back: so a store restored later, from a backup
/// older than the revocation, gets it put back.
#[tokio::test]
async fn a_revocation_the_log_lacks_is_recorded_at_start_and_then_survives_a_restore() {
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    let revoked = |jti: &str, exp: u64| RevokedToken {
        jti: jti.to_string(),
        exp,
        revoked_at: 5,
    };
    for r in [
        revoked("while-stopped", 1000),
        revoked("logged", 1000),
        revoked("expired", 10),
    ] {
        store.revoke(&r).await.unwrap();
    }
    let mut logged = Entry::new(Event::TokenRevoke)
        .ok()
        .detail("listed until 1000");
    logged.jti = Some("logged".to_string());
    let witness = Witness::from_log(log(&[line(1, logged.clone())]).path()).unwrap();
    let records = caught_up(&witness, &store, 100).await;
    let jtis: Vec<_> = records.iter().map(|r| r.jti.clone().unwrap()).collect();
    assert_eq!(jtis, ["while-stopped"], "{records:?}");
    assert_eq!(records[0].event, Event::TokenRevoke);
    assert_eq!(records[0].caller, Some(CallerRecord::internal("store")));

    // The store restored from before the revocation: the log now witnesses it.
    let older = TestDb::new(Engine::Sqlite).await.unwrap();
    let older = SqlStore::open(older.location()).await.unwrap();
    older.revoke(&revoked("logged", 1000)).await.unwrap();
    let dir = log(&[line(1, logged), line(2, records[0].clone())]);
    let witness = Witness::from_log(dir.path()).unwrap();
    let records = caught_up(&witness, &older, 100).await;
    assert_eq!(records.len(), 1, "one put back, nothing new: {records:?}");
    assert_eq!(records[0].event, Event::StateRollback);
    let listed = older.list().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r.jti == "while-stopped" && r.exp == 1000),
        "{listed:?}"
    );
}

/// A store restored from before a single use forgets it; the use's `verify` record puts
/// it back, so the token is refused as replayed rather than accepted a second time.
#[tokio::test]
async fn a_single_use_the_store_lost_is_put_back_from_its_verify_record() {
    let now = crate::util::unix_now();
    let verify = |jti: &str, entry: Entry| {
        let mut entry = entry;
        entry.jti = Some(jti.to_string());
        entry
    };
    let used = |jti: &str, until: u64| {
        verify(
            jti,
            Entry::new(Event::Verify).ok().detail(used_detail(until)),
        )
    };
    let dir = log(&[
        line(1, used("lost", now + 1000)),
        line(2, used("kept", now + 1000)),
        // Remembered no longer: its token cannot verify.
        line(3, used("expired", now - 10)),
        // Refused, even if it said a time.
        line(4, {
            let mut refused = verify(
                "refused",
                Entry::new(Event::Verify).refused("replayed", "x"),
            );
            refused.detail = Some(used_detail(now + 1000));
            refused
        }),
        // Written before records said until when (nothing to put it back with).
        line(5, verify("unsaid", Entry::new(Event::Verify).ok())),
    ]);
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    let use_once = |jti: &'static str| {
        let store = &store;
        async move {
            match store.use_once(jti, now + 900, now, 100).await {
                Ok(durable) => durable.await.map_err(|e| e.to_string()),
                Err(refusal) => Err(format!("{refusal:?}")),
            }
        }
    };
    use_once("kept").await.unwrap();

    let witness = Witness::from_log(dir.path()).unwrap();
    let records = caught_up(&witness, &store, now).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].event, Event::StateRollback);
    assert_eq!(records[0].jti.as_deref(), Some("lost"));
    assert_eq!(records[0].count, Some(1));
    let detail = records[0].detail.clone().unwrap();
    assert!(
        detail.starts_with("1 single use(s)") && detail.contains("audit seq 1 to 1: put back"),
        "{detail}"
    );
    assert_eq!(use_once("lost").await, Err("Replayed".to_string()));
    for jti in ["expired", "refused", "unsaid"] {
        assert_eq!(use_once(jti).await, Ok(()), "{jti} was not put back");
    }
    // Held in memory too, each until it expires, whether the store had lost it or not,
    // so a store that loses one again does not accept it.
    assert!(witness.used("lost", now) && witness.used("kept", now));
    for jti in ["expired", "refused", "unsaid"] {
        assert!(!witness.used(jti, now), "{jti}");
    }
    assert!(!witness.used("lost", now + 1001));
    witness.forget_expired_uses(now + 1000);
    assert!(witness.used("lost", now + 1000));
    witness.forget_expired_uses(now + 1001);
    assert!(!witness.used("lost", now));
    // Once put back, nothing is missing, even to a new reading of the log.
    let witness = Witness::from_log(dir.path()).unwrap();
    let again = caught_up(&witness, &store, now).await;
    assert!(again.is_empty(), "{again:?}");
}

/// Many uses put back make one record, naming the first few and counting the rest.
#[tokio::test]
async fn single_uses_put_back_make_one_record() {
    let now = crate::util::unix_now();
    let lines: Vec<String> = (1..=20)
        .map(|seq| {
            let mut entry = Entry::new(Event::Verify)
                .ok()
                .detail(used_detail(now + 1000));
            entry.jti = Some(format!("jti-{seq:02}"));
            line(seq, entry)
        })
        .collect();
    let dir = log(&lines);
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    let records = caught_up(&Witness::from_log(dir.path()).unwrap(), &store, now).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        (records[0].count, records[0].jti.as_deref()),
        (Some(20), None)
    );
    let detail = records[0].detail.clone().unwrap();
    assert!(
        detail.starts_with("20 single use(s)")
            && detail.contains("audit seq 1 to 20")
            && detail.ends_with("jti-01, jti-02, jti-03, jti-04, jti-05, jti-06, jti-07, jti-08, jti-09, jti-10, jti-11, jti-12, jti-13, jti-14, jti-15, jti-16 and 4 more"),
        "{detail}"
    );
}

/// A replay store whose first `put_back` puts back only the first use and then fails,
/// as a store that becomes unreachable part way.
struct FailsOnce<'a> {
    store: &'a SqlStore,
    failed: std::sync::atomic::AtomicBool,
}

impl ReplayStore for FailsOnce<'_> {
    fn use_once<'a>(
        &'a self,
        jti: &'a str,
        exp: u64,
        now: u64,
        leeway: u64,
    ) -> crate::util::BoxFuture<'a, Result<crate::store::Durable, crate::store::ReplayRefusal>>
    {
        self.store.use_once(jti, exp, now, leeway)
    }

    fn live(&self, now: u64) -> crate::util::BoxFuture<'_, Result<u64, StoreError>> {
        self.store.live(now)
    }

    fn put_back<'a>(
        &'a self,
        used: &'a [UsedJti],
        now: u64,
        put_back: &'a mut Vec<String>,
    ) -> crate::util::BoxFuture<'a, Result<(), StoreError>> {
        if self.failed.swap(true, Ordering::SeqCst) {
            return self.store.put_back(used, now, put_back);
        }
        Box::pin(async move {
            self.store.put_back(&used[..1], now, put_back).await?;
            Err(StoreError("unreachable".into()))
        })
    }
}

/// A catch-up that fails part way keeps the records of what it did (the single use put
/// back before the failure too), is not taken as done, waits before it is tried again,
/// and the retry, with the log read again as a reload does, finishes the job without
/// repeating a record: not even of a revocation recorded in between.
#[tokio::test]
async fn a_failed_catch_up_keeps_its_records_and_a_retry_finishes_it() {
    let now = crate::util::unix_now();
    let revoke = |seq: u64, jti: &str| {
        let mut entry = Entry::new(Event::TokenRevoke)
            .ok()
            .detail(format!("listed until {}", now + 1000));
        entry.jti = Some(jti.to_string());
        line(seq, entry)
    };
    let use_ = |seq: u64, jti: &str| {
        let mut entry = Entry::new(Event::Verify)
            .ok()
            .detail(used_detail(now + 1000));
        entry.jti = Some(jti.to_string());
        line(seq, entry)
    };
    let mut lines = vec![revoke(1, "revoked"), use_(2, "used-a"), use_(3, "used-b")];
    let dir = log(&lines);
    let witness = Witness::from_log(dir.path()).unwrap();
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let store = SqlStore::open(db.location()).await.unwrap();
    let replay = FailsOnce {
        store: &store,
        failed: Default::default(),
    };
    let jtis = |records: &[Entry]| -> Vec<Option<String>> {
        records.iter().map(|r| r.jti.clone()).collect()
    };

    let mut records = Vec::new();
    let failed = catch_up(&witness, &store, &store, &replay, now, &mut records).await;
    assert!(failed.unwrap_err().contains("unreachable"));
    assert!(!witness.has_caught_up() && witness.retry_due(now));
    assert_eq!(
        jtis(&records),
        [Some("revoked".to_string()), Some("used-a".to_string())],
        "{records:?}"
    );

    // Meanwhile: the running daemon (started at `now`) revokes a token, whose record
    // the log has and the store (restored again?) does not; an admin's revocation is in
    // the store with its record still to come (between its two writes); and the store
    // holds one from before the start that no log records.
    lines.push(revoke(4, "later"));
    let dir = log(&lines);
    for (jti, revoked_at) in [("being-recorded", now), ("before-start", now - 10)] {
        let revoked = RevokedToken {
            jti: jti.to_string(),
            exp: now + 1000,
            revoked_at,
        };
        store.revoke(&revoked).await.unwrap();
    }
    // A reload's retry: the log read afresh, then the tokens' half.
    witness.tried_at(now);
    assert!(!witness.retry_due(now) && witness.retry_due(now + RETRY_SECONDS));
    witness.absorb(Witness::from_log(dir.path()).unwrap());
    let mut records = Vec::new();
    catch_up_tokens(&witness, &store, &replay, now, now, &mut records)
        .await
        .unwrap();
    assert!(witness.has_caught_up() && !witness.retry_due(now + RETRY_SECONDS));
    let expected = ["later", "used-b", "before-start"].map(|j| Some(j.to_string()));
    assert_eq!(jtis(&records), expected, "{records:?}");
    assert_eq!(records[2].event, Event::TokenRevoke);
}
