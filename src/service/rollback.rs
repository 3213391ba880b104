//! Rollback detection: state that went backwards (a state store or token restored from
//! an older backup) is rolled forward from the audit log, loudly, and never served.
//!
//! Key states only move forward (pending → active → retired → archived, and any of them
//! → revoked), so a key the state store shows behind a state the daemon once recorded
//! can only mean the store was put back. The daemon's own audit log is the witness: it
//! is append-only, kept apart from the token and the store, and every key change the
//! daemon made or saw is in it (`key_*` records say `now STATE`, `key_observed` records
//! say what changed outside the daemon, and every `start` record lists each key's
//! state). At start the log is read once into a [`Witness`]; from then on every state
//! the daemon records or reads raises it, so a store restored under a running daemon is
//! caught at the next reload too.
//!
//! A key found behind is moved forward in the store (`actor` `audit-log`), with an
//! error line, a `state_rollback` audit record and `signetd_state_rollbacks_total`. A
//! move the store refuses leaves the daemon refusing to start (or keeping its last good
//! view at a reload): the key is never served in the earlier state. Token revocations
//! the log records that the store lacks are put back the same way, and those the store
//! holds that the log lacks (revoked with the CLI while no daemon ran) are recorded
//! first, so a later restore cannot drop them ([`unrecorded`]). Single uses the log
//! records that the store has forgotten are put back too (from `verify` records that
//! say until when the use is remembered; earlier versions' do not), so a restored store
//! cannot accept a consumed single-use token again; they are then held in memory until
//! each expires (checked before the store), as a store may lose one again. Revocations
//! and single uses are put back at start (or, if the log could not be read then, at a
//! reload, tried once a minute until it succeeds); key states are checked at every
//! reload. What this cannot catch (the audit log restored along with the store) is in
//! docs/operations.md.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Deserialize;

use crate::audit::{CallerRecord, Entry, Event, Outcome};
use crate::keys::state::KeyState;
use crate::store::{
    KeyMetadata, KeyWriteError, ReplayStore, RevocationStore, RevokedToken, StateMove, StoreError,
    UsedJti,
};

/// The `actor` of the store's history entries this module writes.
pub const ACTOR: &str = "audit-log";

/// The `detail` of a record of a key the daemon moved to (or generated in) `state`.
pub fn changed_detail(state: KeyState) -> String {
    format!("now {state}")
}

/// The `detail` of a `key_observed` record: a key that changed state outside the
/// daemon. (Versions before 0.2 also wrote `new key, STATE, made outside the daemon`
/// for a key that appeared; the rollback check still reads it.)
pub fn observed_detail(before: Option<KeyState>, state: KeyState) -> String {
    match before {
        Some(before) => format!("{before} -> {state} outside the daemon"),
        None => format!("new key, {state}, made outside the daemon"),
    }
}

/// The `detail` of a `key_generate` or `key_rotate` record of a key that appeared
/// outside the daemon, made by `made` (an actor and a time).
pub fn generated_detail(made: &str, state: KeyState) -> String {
    format!(
        "generated outside the daemon by {made}, {}",
        changed_detail(state)
    )
}

/// The `detail` of an accepted single use's `verify` record: until when the store
/// remembers its jti (the token's `exp` plus the verifiers' leeway), which is what
/// lets a restored store be given the use back.
pub fn used_detail(until: u64) -> String {
    format!("{USED_UNTIL}{until}")
}

/// What comes before the time in [`used_detail`].
const USED_UNTIL: &str = "used once, remembered until ";

/// How long after a failed [`catch_up_tokens`] a reload tries it again: each try reads
/// the whole audit log.
pub const RETRY_SECONDS: u64 = 60;

/// What comes before the key states in a `start` record's `detail`.
pub const START_KEYS: &str = "; keys: ";

/// How far along its life a key is; a store that shows less than a recorded state was
/// put back.
fn progress(state: KeyState) -> u8 {
    match state {
        KeyState::Pending => 0,
        KeyState::Active => 1,
        KeyState::Retired => 2,
        KeyState::Archived => 3,
        KeyState::Revoked => 4,
    }
}

/// A key's furthest state on record, and where it was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The state.
    pub state: KeyState,
    /// Where: `audit seq N` or `this run`.
    pub source: String,
}

/// A token revocation on record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRevocation {
    /// The token's jti.
    pub jti: String,
    /// Until when it is listed.
    pub exp: u64,
    /// The record's sequence number.
    pub seq: u64,
}

/// A single use on record, still remembered when the log was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedUse {
    /// The use, as the store keeps it.
    pub used: UsedJti,
    /// The record's sequence number.
    pub seq: u64,
}

/// The furthest state of every key the daemon has recorded or seen, and the token
/// revocations and unexpired single uses the audit log records.
#[derive(Debug, Default)]
pub struct Witness {
    keys: Mutex<HashMap<String, Seen>>,
    revocations: Mutex<Vec<RecordedRevocation>>,
    /// Only those still remembered when the log was read (at most the longest token
    /// lifetime's worth, never the whole log's), and only until they are put back.
    uses: Mutex<Vec<RecordedUse>>,
    /// The same uses once put back, by jti, until when each is remembered: refused in
    /// memory as well until then ([`Witness::used`]), so a store that loses one again
    /// after it was put back does not accept its token twice. Forgotten as they expire
    /// ([`Witness::forget_expired_uses`]), so this never outgrows one token lifetime's
    /// uses from before the start, and empties within it.
    used: Mutex<HashMap<String, u64>>,
    /// Whether the audit log has been read (it may not be readable at start).
    log_read: AtomicBool,
    /// Whether [`catch_up_tokens`] has succeeded: until it has, reloads try it again.
    caught_up: AtomicBool,
    /// When a reload may try [`catch_up_tokens`] again, seconds since the epoch.
    retry_at: AtomicU64,
}

/// The fields of an audit line this module reads.
#[derive(Deserialize)]
struct Line {
    seq: u64,
    event: Event,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    detail: Option<String>,
}

/// A state by its name (`revoked`).
fn parse_state(word: &str) -> Option<KeyState> {
    serde_json::from_value(serde_json::Value::String(word.trim().to_string())).ok()
}

/// The state a `detail` written by [`changed_detail`] or [`observed_detail`] names.
fn state_in(detail: &str) -> Option<KeyState> {
    let word = if let Some((_, rest)) = detail.rsplit_once("now ") {
        rest
    } else if let Some(rest) = detail.strip_prefix("new key, ") {
        rest.split(',').next()?
    } else {
        detail
            .strip_suffix(" outside the daemon")?
            .rsplit(" -> ")
            .next()?
    };
    parse_state(word)
}

impl Witness {
    /// A witness of the audit log in `dir`: every segment read. Lines that do not parse (a torn
    /// tail, a record of a later version) are skipped: the log's integrity is `audit
    /// verify`'s concern, and a line that cannot be read witnesses nothing.
    pub fn from_log(dir: &Path) -> Result<Witness, String> {
        let witness = Witness::default();
        witness.read_log(dir)?;
        Ok(witness)
    }

    /// Whether [`Witness::read_log`] has succeeded.
    pub fn has_read_log(&self) -> bool {
        self.log_read.load(Ordering::Acquire)
    }

    /// Whether [`catch_up_tokens`] has succeeded: from then on only keys are checked.
    pub fn has_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Whether [`catch_up_tokens`] is to be tried (again) at `now`: it has not
    /// succeeded, and was last tried [`RETRY_SECONDS`] ago or more (see
    /// [`Witness::tried_at`]). Read the log again before trying.
    pub fn retry_due(&self, now: u64) -> bool {
        !self.has_caught_up() && now >= self.retry_at.load(Ordering::Acquire)
    }

    /// Notes a try at `now` (reading the log, then [`catch_up_tokens`]): the next is
    /// due [`RETRY_SECONDS`] later, whatever fails, as each reads the whole log.
    pub fn tried_at(&self, now: u64) {
        self.retry_at
            .store(now.saturating_add(RETRY_SECONDS), Ordering::Release);
    }

    /// Takes in a fresh reading of the log (a [`Witness::from_log`] made off the
    /// runtime): key states only move forward; the revocations and single uses are
    /// replaced, so those recorded since the last reading are known.
    pub fn absorb(&self, read: Witness) {
        let keys = read.keys.into_inner().unwrap_or_else(|p| p.into_inner());
        for (kid, seen) in keys {
            self.raise(&kid, seen.state, &seen.source);
        }
        *self.revocations.lock().unwrap_or_else(|p| p.into_inner()) = read
            .revocations
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        *self.uses.lock().unwrap_or_else(|p| p.into_inner()) =
            read.uses.into_inner().unwrap_or_else(|p| p.into_inner());
        self.log_read.store(true, Ordering::Release);
    }

    /// Reads every segment of the audit log in `dir` into this witness (see
    /// [`Witness::from_log`]).
    pub fn read_log(&self, dir: &Path) -> Result<(), String> {
        if !dir.exists() {
            self.log_read.store(true, Ordering::Release);
            return Ok(());
        }
        let mut found = Found {
            now: crate::util::unix_now(),
            ..Found::default()
        };
        for path in crate::audit::verify::segment_paths(&[dir.to_path_buf()])? {
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for line in std::io::BufReader::new(file).split(b'\n') {
                let line = line.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                // Most lines are mints; only these events are parsed.
                if !(contains(&line, b"\"event\":\"key_")
                    || contains(&line, b"\"event\":\"start\"")
                    || contains(&line, b"\"event\":\"token_revoke\"")
                    || (contains(&line, b"\"event\":\"verify\"")
                        && contains(&line, USED_UNTIL.as_bytes())))
                {
                    continue;
                }
                let Ok(line) = serde_json::from_slice::<Line>(&line) else {
                    continue;
                };
                self.read_line(line, &mut found);
            }
        }
        *self.revocations.lock().unwrap_or_else(|p| p.into_inner()) = found.revocations;
        *self.uses.lock().unwrap_or_else(|p| p.into_inner()) = found.uses;
        self.log_read.store(true, Ordering::Release);
        Ok(())
    }

    fn read_line(&self, line: Line, found: &mut Found) {
        let source = format!("audit seq {}", line.seq);
        let detail = line.detail.unwrap_or_default();
        match line.event {
            Event::Start => {
                let Some((_, keys)) = detail.split_once(START_KEYS) else {
                    return;
                };
                for pair in keys.split_whitespace() {
                    if let Some((kid, state)) = pair.split_once('=')
                        && let Some(state) = parse_state(state)
                    {
                        self.raise(kid, state, &source);
                    }
                }
            }
            Event::TokenRevoke if line.outcome == Some(Outcome::Ok) => {
                // `listed until EXP`, maybe followed by how it was learned.
                let exp = detail
                    .strip_prefix("listed until ")
                    .and_then(|e| e.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
                if let (Some(jti), Some(exp)) = (line.jti, exp) {
                    found.revocations.push(RecordedRevocation {
                        jti,
                        exp,
                        seq: line.seq,
                    });
                }
            }
            Event::Verify if line.outcome == Some(Outcome::Ok) => {
                let until = detail
                    .strip_prefix(USED_UNTIL)
                    .and_then(|u| u.parse::<u64>().ok());
                if let (Some(jti), Some(until)) = (line.jti, until)
                    && until >= found.now
                {
                    found.uses.push(RecordedUse {
                        used: UsedJti { jti, until },
                        seq: line.seq,
                    });
                }
            }
            Event::KeyGenerate
            | Event::KeyRotate
            | Event::KeyActivate
            | Event::KeyRetire
            | Event::KeyArchive
            | Event::KeyRevoke
            | Event::KeyObserved
                if line.outcome == Some(Outcome::Ok) =>
            {
                if let (Some(kid), Some(state)) = (line.kid, state_in(&detail)) {
                    self.raise(&kid, state, &source);
                }
            }
            _ => {}
        }
    }

    /// Notes that key `kid` reached `state`; keeps the furthest.
    pub fn raise(&self, kid: &str, state: KeyState, source: &str) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        match keys.get(kid) {
            Some(seen) if progress(seen.state) >= progress(state) => {}
            _ => {
                keys.insert(
                    kid.to_string(),
                    Seen {
                        state,
                        source: source.to_string(),
                    },
                );
            }
        }
    }

    /// The furthest state on record for `kid`.
    pub fn seen(&self, kid: &str) -> Option<Seen> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(kid)
            .cloned()
    }

    /// The keys the store shows behind their furthest recorded state: (kid, issuer,
    /// state in the store, furthest seen).
    pub async fn behind(&self, meta: &dyn KeyMetadata) -> Result<Vec<Behind>, StoreError> {
        let rows = meta.keys().await?;
        Ok(self.behind_of(rows.into_iter().map(|row| (row.kid, row.issuer, row.state))))
    }

    /// Those of `keys` (kid, issuer, state) behind their furthest recorded state, in
    /// the order they are to be moved in. [`Witness::behind`] asks the store; a reading
    /// made after it is asked again, as the store may have been put back in between.
    pub fn behind_of(
        &self,
        keys: impl IntoIterator<Item = (String, String, KeyState)>,
    ) -> Vec<Behind> {
        let mut behind: Vec<Behind> = keys
            .into_iter()
            .filter_map(|(kid, issuer, stored)| {
                let seen = self.seen(&kid)?;
                (progress(stored) < progress(seen.state)).then_some(Behind {
                    kid,
                    issuer,
                    stored,
                    seen,
                })
            })
            .collect();
        // Keys leave service before any key enters it: an issuer's retired key is
        // retired in the store before its successor becomes active there.
        behind.sort_by_key(|b| (b.seen.state == KeyState::Active, b.kid.clone()));
        behind
    }

    /// The token revocations the log records, still listed at `now`, that `listed`
    /// (the store's revocations) lacks.
    pub fn missing_revocations(
        &self,
        listed: &[RevokedToken],
        now: u64,
    ) -> Vec<RecordedRevocation> {
        let listed: std::collections::HashSet<&str> =
            listed.iter().map(|r| r.jti.as_str()).collect();
        let mut missing = self.revocations_since(now);
        missing.retain(|r| !listed.contains(r.jti.as_str()));
        missing
    }

    /// The token revocations the log records that expire at or after `expired_before`.
    pub fn revocations_since(&self, expired_before: u64) -> Vec<RecordedRevocation> {
        self.revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.exp >= expired_before)
            .cloned()
            .collect()
    }

    /// Whether the log recorded a single use of `jti` before the start that is still
    /// remembered at `now` (once the uses were put back into the store).
    pub fn used(&self, jti: &str, now: u64) -> bool {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(jti)
            .is_some_and(|&until| until >= now)
    }

    /// Forgets the uses [`Witness::used`] holds that are no longer remembered at `now`.
    pub fn forget_expired_uses(&self, now: u64) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until >= now);
    }

    /// The latest `exp` the log records a revocation of each jti with.
    fn recorded_revocations(&self) -> HashMap<String, u64> {
        let mut latest = HashMap::new();
        for r in self
            .revocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let exp = latest.entry(r.jti.clone()).or_insert(r.exp);
            *exp = (*exp).max(r.exp);
        }
        latest
    }
}

/// What [`Witness::read_log`] gathers besides key states.
#[derive(Default)]
struct Found {
    /// When the log is read: uses remembered until before it are left out.
    now: u64,
    revocations: Vec<RecordedRevocation>,
    uses: Vec<RecordedUse>,
}

fn contains(line: &[u8], needle: &[u8]) -> bool {
    line.windows(needle.len()).any(|w| w == needle)
}

/// A key the store shows behind the furthest state on record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behind {
    /// The key.
    pub kid: String,
    /// Its issuer.
    pub issuer: String,
    /// Its state in the store.
    pub stored: KeyState,
    /// The furthest state on record.
    pub seen: Seen,
}

impl std::fmt::Display for Behind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} (was {}, {})",
            self.kid, self.stored, self.seen.state, self.seen.source
        )
    }
}

/// The states a key moves through from `from` to `to`, each a move
/// [`KeyState::may_become`] allows.
fn steps(from: KeyState, to: KeyState) -> Vec<KeyState> {
    if from.may_become(to) {
        return vec![to];
    }
    // Only archiving is ever more than one step away: pending or active → retired →
    // archived.
    let mut path = vec![KeyState::Retired];
    if KeyState::Retired.may_become(to) && from.may_become(KeyState::Retired) {
        path.push(to);
        return path;
    }
    Vec::new()
}

/// Moves every key in `behind` forward to its recorded state in `meta`, all in one
/// transaction (in `behind`'s order: keys leave service before any enters it), so a
/// failure or a crash moves none and never leaves an issuer between two keys. Returns
/// the audit records to write (the caller writes them once it can).
pub async fn roll_forward(
    meta: &dyn KeyMetadata,
    behind: &[Behind],
    now: u64,
) -> Result<Vec<Entry>, String> {
    let mut moves = Vec::new();
    for key in behind {
        let path = steps(key.stored, key.seen.state);
        if path.is_empty() {
            return Err(format!(
                "key {} is {} in the state store but was {} ({}), and cannot be moved there",
                key.kid, key.stored, key.seen.state, key.seen.source
            ));
        }
        let mut from = key.stored;
        for to in path {
            moves.push(StateMove {
                kid: &key.kid,
                from,
                to,
            });
            from = to;
        }
    }
    meta.set_states(&moves, now, ACTOR)
        .await
        .map_err(|e: KeyWriteError| {
            let keys: Vec<String> = behind.iter().map(ToString::to_string).collect();
            format!(
                "keys behind their recorded state in the state store: {}; moving them forward failed, and none was moved: {e}",
                keys.join(", ")
            )
        })?;
    let mut records = Vec::new();
    for key in behind {
        let detail = format!(
            "the state store had key {} {}, behind {} ({}): the store went backwards (restored from an older backup?); moved forward to {}",
            key.kid, key.stored, key.seen.state, key.seen.source, key.seen.state
        );
        tracing::error!(kid = %key.kid, issuer = %key.issuer, stored = %key.stored, recorded = %key.seen.state, source = %key.seen.source, "state rollback: a key was behind its recorded state in the state store; moved forward, it is served as {}", key.seen.state);
        crate::telemetry::state_rollback("key");
        records.push(
            Entry::new(Event::StateRollback)
                .caller(CallerRecord::internal("daemon"))
                .issuer(&key.issuer)
                .kid(&key.kid)
                .ok()
                .detail(detail),
        );
    }
    Ok(records)
}

/// Puts back the token revocations in `missing`, pushing the audit record of each onto
/// `records` once it is back (a failure part way leaves those of the ones put back).
pub async fn restore_revocations(
    store: &dyn RevocationStore,
    missing: &[RecordedRevocation],
    now: u64,
    records: &mut Vec<Entry>,
) -> Result<(), String> {
    for recorded in missing {
        let revoked = RevokedToken {
            jti: recorded.jti.clone(),
            exp: recorded.exp,
            revoked_at: now,
        };
        store.revoke(&revoked).await.map_err(|e| {
            format!(
                "token revocation {:?} (audit seq {}) is missing from the state store and could not be put back: {e}",
                recorded.jti, recorded.seq
            )
        })?;
        tracing::error!(jti = %recorded.jti, source = %format!("audit seq {}", recorded.seq), "state rollback: a token revocation the audit log records was missing from the state store; put back");
        crate::telemetry::state_rollback("token_revocation");
        let mut entry = Entry::new(Event::StateRollback)
            .caller(CallerRecord::internal("daemon"))
            .ok()
            .detail(format!(
                "token revocation missing from the state store, recorded at audit seq {}: put back, listed until {}",
                recorded.seq, recorded.exp
            ));
        entry.jti = Some(recorded.jti.clone());
        records.push(entry);
    }
    Ok(())
}

/// Most jtis a `state_rollback` record of single uses names; the rest are counted.
const USES_NAMED: usize = 16;

/// Puts back the single uses the log records that `replay` has forgotten, and pushes
/// the audit record of those put back onto `records`: one for all of them, since a
/// restore may lose a token lifetime's uses, and a record each would be a synced write
/// each before serving. A failure part way still pushes the record of those put back.
pub async fn restore_uses(
    replay: &dyn ReplayStore,
    witness: &Witness,
    now: u64,
    records: &mut Vec<Entry>,
) -> Result<(), String> {
    let recorded = witness
        .uses
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let used: Vec<UsedJti> = recorded.iter().map(|r| r.used.clone()).collect();
    let mut put_back = Vec::new();
    let result = replay.put_back(&used, now, &mut put_back).await;
    records.extend(uses_record(&recorded, &put_back));
    result.map_err(|e| {
        format!("single uses the audit log records could not be put back into the state store: {e}")
    })?;
    // Put back once; from then on held only as the in-memory backstop, each until it
    // expires, so a daemon does not hold a token lifetime's uses for good.
    let recorded = std::mem::take(&mut *witness.uses.lock().unwrap_or_else(|p| p.into_inner()));
    let mut used = witness.used.lock().unwrap_or_else(|p| p.into_inner());
    for r in recorded {
        let until = used.entry(r.used.jti).or_insert(r.used.until);
        *until = (*until).max(r.used.until);
    }
    Ok(())
}

/// The `state_rollback` record of the uses in `recorded` whose jtis are in `put_back`,
/// with its error line and metric; `None` if none was.
fn uses_record(recorded: &[RecordedUse], put_back: &[String]) -> Option<Entry> {
    if put_back.is_empty() {
        return None;
    }
    let put_back: std::collections::HashSet<&str> = put_back.iter().map(String::as_str).collect();
    // Each jti put back once, at its first record (a jti may have been used again
    // after its first use expired).
    let mut named = std::collections::HashSet::new();
    let witnessed: Vec<&RecordedUse> = recorded
        .iter()
        .filter(|r| put_back.contains(r.used.jti.as_str()) && named.insert(r.used.jti.as_str()))
        .collect();
    let count = witnessed.len();
    let seqs = |r: Option<&&RecordedUse>| r.map_or(0, |r| r.seq);
    let (first, last) = (seqs(witnessed.first()), seqs(witnessed.last()));
    let mut jtis: Vec<&str> = witnessed
        .iter()
        .take(USES_NAMED)
        .map(|r| r.used.jti.as_str())
        .collect();
    let more = count - jtis.len();
    tracing::error!(
        count,
        first_seq = first,
        last_seq = last,
        "state rollback: single uses the audit log records were missing from the state store; put back"
    );
    crate::telemetry::state_rollbacks("single_use", count as u64);
    let mut listed = jtis.join(", ");
    if more > 0 {
        listed.push_str(&format!(" and {more} more"));
    }
    let mut entry = Entry::new(Event::StateRollback)
        .caller(CallerRecord::internal("daemon"))
        .ok()
        .detail(format!(
            "{count} single use(s) missing from the state store, recorded from audit seq {first} to {last}: put back, each remembered until its token expires: {listed}"
        ));
    entry.count = Some(count as u64);
    if count == 1 {
        entry.jti = jtis.pop().map(str::to_string);
    }
    Some(entry)
}

/// Each key's state as the audit log last recorded it, the starting point from which
/// the first reload records what changed while the daemon was stopped: a key the log
/// never named gets its `key_generate` (or `key_rotate`) record, one whose state moved a
/// `key_observed`. A log that names no key at all (a new one) records nothing of the
/// kind: every key is taken as it is.
pub fn recorded_at_start(
    witness: &Witness,
    registry: &crate::keys::KeyRegistry,
) -> HashMap<String, KeyState> {
    let log_names_keys = witness.has_read_log()
        && !witness
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
    registry
        .all()
        .iter()
        .filter_map(|k| {
            if !log_names_keys {
                return Some((k.kid.clone(), k.state));
            }
            witness.seen(&k.kid).map(|seen| (k.kid.clone(), seen.state))
        })
        .collect()
}

/// Everything [`Witness`] checks, at start: [`catch_up_keys`], then
/// [`catch_up_tokens`]. The audit records to write are pushed onto `records` as they
/// are made, so a failure part way still leaves those of what was done.
pub async fn catch_up(
    witness: &Witness,
    keys: &dyn KeyMetadata,
    revocations: &dyn RevocationStore,
    replay: &dyn ReplayStore,
    now: u64,
    records: &mut Vec<Entry>,
) -> Result<(), String> {
    catch_up_keys(witness, keys, now, records).await?;
    catch_up_tokens(witness, revocations, replay, now, u64::MAX, records).await
}

/// Moves every key the store shows behind the `witness` forward (all in one
/// transaction, or none), pushing the records onto `records`.
pub async fn catch_up_keys(
    witness: &Witness,
    keys: &dyn KeyMetadata,
    now: u64,
    records: &mut Vec<Entry>,
) -> Result<(), String> {
    let behind = witness.behind(keys).await.map_err(|e| e.to_string())?;
    records.extend(roll_forward(keys, &behind, now).await?);
    Ok(())
}

/// Puts back the token revocations and single uses the store lost, and records the
/// revocations made before `unrecorded_before` that the log lacks ([`unrecorded`]),
/// pushing the records onto `records`; on success the witness
/// [`has caught up`](Witness::has_caught_up). A failure part way leaves a retry nothing
/// to repeat: each record pushed before it is of a change to the store, which the
/// retry finds made. A retry reads the log again first, so that what was recorded
/// since is known; and passes the daemon's start as `unrecorded_before`, as a running
/// daemon records the revocations made since itself.
pub async fn catch_up_tokens(
    witness: &Witness,
    revocations: &dyn RevocationStore,
    replay: &dyn ReplayStore,
    now: u64,
    unrecorded_before: u64,
    records: &mut Vec<Entry>,
) -> Result<(), String> {
    // Listed once for both directions: the store may hold many revocations.
    let listed = revocations.list().await.map_err(|e| e.to_string())?;
    let missing = witness.missing_revocations(&listed, now);
    restore_revocations(revocations, &missing, now, records).await?;
    restore_uses(replay, witness, now, records).await?;
    // Last, as it cannot fail. What was put back is in the log already, so it is not
    // among these.
    let before: Vec<RevokedToken> = listed
        .into_iter()
        .filter(|r| r.revoked_at < unrecorded_before)
        .collect();
    records.extend(unrecorded::records(witness, before, now));
    witness.caught_up.store(true, Ordering::Release);
    Ok(())
}

pub mod unrecorded;

#[cfg(test)]
mod tests;
