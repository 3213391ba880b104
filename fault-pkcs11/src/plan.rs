//! The fault plan: rules read from the file named by `SIGNETD_FAULT_PLAN`, re-read
//! whenever that file changes (its mtime, size or inode; write a new file and rename it
//! over the old one to change the plan atomically). No file, no faults.
//!
//! One rule per line; `#` starts a comment. Words are `key=value` or a bare flag:
//!
//! ```text
//! function=C_Sign rv=CKR_DEVICE_ERROR every=3     # every third C_Sign fails
//! function=C_Sign rv=CKR_SESSION_HANDLE_INVALID count=1
//! function=* rv=CKR_TOKEN_NOT_PRESENT for_ms=2000 # every call, for 2 s after loading
//! function=C_FindObjects rv=CKR_GENERAL_ERROR probability=0.5
//! function=C_Sign delay_ms=500                    # slow, then forwarded
//! function=C_Sign hang                            # blocks until the rule is removed
//! ```
//!
//! Selectors (`every`, `count`, `probability`, `for_ms`) all have to agree for a rule to
//! fire; the first rule that fires decides. Counters start again when the plan is re-read.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cryptoki_sys::*;

/// What to do with one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Forward to the real module.
    Forward,
    /// Return this value without forwarding.
    Fail(CK_RV),
}

/// One line of the plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    function: String,
    rv: Option<CK_RV>,
    every: Option<u64>,
    count: Option<u64>,
    probability: Option<f64>,
    for_ms: Option<u64>,
    delay_ms: Option<u64>,
    hang: bool,
    /// Matching calls seen, and how many times the rule fired.
    seen: u64,
    fired: u64,
}

/// The return values a rule may name.
const RVS: &[(&str, CK_RV)] = &[
    ("CKR_DEVICE_ERROR", CKR_DEVICE_ERROR),
    ("CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY),
    ("CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED),
    ("CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT),
    ("CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID),
    ("CKR_SESSION_CLOSED", CKR_SESSION_CLOSED),
    ("CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN),
    ("CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID),
    ("CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID),
    ("CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE),
    ("CKR_GENERAL_ERROR", CKR_GENERAL_ERROR),
    ("CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED),
    ("CKR_ACTION_PROHIBITED", CKR_ACTION_PROHIBITED),
];

/// Parses one non-empty line.
pub fn parse_rule(line: &str) -> Result<Rule, String> {
    let mut rule = Rule::default();
    for word in line.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key}={value:?} is not a number"))
        };
        match key {
            "function" => rule.function = value.to_string(),
            "rv" => {
                let rv = RVS.iter().find(|(name, _)| *name == value);
                rule.rv = Some(rv.ok_or(format!("unknown rv {value:?}"))?.1);
            }
            "every" => rule.every = Some(number()?.max(1)),
            "count" => rule.count = Some(number()?),
            "for_ms" => rule.for_ms = Some(number()?),
            "delay_ms" => rule.delay_ms = Some(number()?),
            "probability" => {
                let p: f64 = value
                    .parse()
                    .map_err(|_| format!("bad probability {value:?}"))?;
                rule.probability = Some(p.clamp(0.0, 1.0));
            }
            "hang" => rule.hang = true,
            other => return Err(format!("unknown word {other:?}")),
        }
    }
    if rule.function.is_empty() {
        return Err("a rule needs function=NAME (or function=*)".to_string());
    }
    if rule.rv.is_none() && rule.delay_ms.is_none() && !rule.hang {
        return Err("a rule needs rv=, delay_ms= or hang".to_string());
    }
    Ok(rule)
}

/// Parses a whole plan; bad lines are reported on stderr and skipped.
pub fn parse(text: &str) -> Vec<Rule> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            parse_rule(l)
                .map_err(|e| eprintln!("fault-pkcs11: ignoring plan line {l:?}: {e}"))
                .ok()
        })
        .collect()
}

/// The plan as last read, and what identified the file then.
struct State {
    file: Option<(SystemTime, u64, u64)>,
    loaded_at: Instant,
    rules: Vec<Rule>,
    rng: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn plan_path() -> Option<PathBuf> {
    std::env::var_os("SIGNETD_FAULT_PLAN").map(PathBuf::from)
}

/// Re-reads the plan if its file changed since the last call.
fn refresh(state: &mut State) {
    use std::os::unix::fs::MetadataExt;
    let meta = plan_path().and_then(|p| std::fs::metadata(&p).ok().map(|m| (p, m)));
    let file = meta
        .as_ref()
        .map(|(_, m)| (m.modified().unwrap_or(UNIX_EPOCH), m.len(), m.ino()));
    if file == state.file {
        return;
    }
    let text = meta
        .and_then(|(p, _)| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    state.rules = parse(&text);
    state.file = file;
    state.loaded_at = Instant::now();
}

/// A cheap pseudo-random number in [0, 1) (xorshift); test faults need no better.
fn next_random(state: &mut State) -> f64 {
    state.rng ^= state.rng << 13;
    state.rng ^= state.rng >> 7;
    state.rng ^= state.rng << 17;
    (state.rng >> 11) as f64 / (1u64 << 53) as f64
}

/// Runs `f` on the current plan, re-read first if it changed.
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let state = guard.get_or_insert_with(|| State {
        file: None,
        loaded_at: Instant::now(),
        rules: Vec::new(),
        rng: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 | 1),
    });
    refresh(state);
    f(state)
}

/// The rule that fires for this call of `function`, if any, with its counters advanced.
fn firing(state: &mut State, function: &str) -> Option<Rule> {
    let elapsed = state.loaded_at.elapsed();
    for i in 0..state.rules.len() {
        let rule = &state.rules[i];
        if rule.function != "*" && rule.function != function {
            continue;
        }
        let in_window = rule
            .for_ms
            .is_none_or(|ms| elapsed < Duration::from_millis(ms));
        let under_count = rule.count.is_none_or(|n| rule.fired < n);
        if !in_window || !under_count {
            continue;
        }
        let rule = &mut state.rules[i];
        rule.seen += 1;
        let on_turn = rule.every.is_none_or(|n| rule.seen.is_multiple_of(n));
        let probability = rule.probability;
        let lucky = probability.is_none_or(|p| next_random(state) < p);
        let rule = &mut state.rules[i];
        if on_turn && lucky {
            rule.fired += 1;
            return Some(rule.clone());
        }
    }
    None
}

/// Decides what to do with one call of `function`: sleeps for a delay, blocks while a
/// `hang` rule for it is in the plan, and says whether to fail or forward.
pub fn decide(function: &str) -> Action {
    let Some(rule) = with_state(|s| firing(s, function)) else {
        return Action::Forward;
    };
    if let Some(ms) = rule.delay_ms {
        thread::sleep(Duration::from_millis(ms));
    }
    if rule.hang {
        // Blocks until the plan no longer holds a hang rule for this function, so a test
        // ends a hang by rewriting the plan.
        let hangs = |s: &mut State| {
            s.rules
                .iter()
                .any(|r| r.hang && (r.function == "*" || r.function == function))
        };
        while with_state(hangs) {
            thread::sleep(Duration::from_millis(20));
        }
    }
    rule.rv.map_or(Action::Forward, Action::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_bad_lines_are_skipped() {
        let rules = parse(
            "# comment\nfunction=C_Sign rv=CKR_DEVICE_ERROR every=3\nfunction=C_Sign hang\n\
             rv=CKR_DEVICE_ERROR\nfunction=C_Sign rv=CKR_NOPE\nfunction=* delay_ms=5 probability=0.5\n",
        );
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].rv, Some(CKR_DEVICE_ERROR));
        assert_eq!(rules[0].every, Some(3));
        assert!(rules[1].hang);
        assert_eq!(rules[2].probability, Some(0.5));
    }

    fn state(text: &str) -> State {
        State {
            file: None,
            loaded_at: Instant::now(),
            rules: parse(text),
            rng: 7,
        }
    }

    #[test]
    fn every_and_count_select_calls() {
        let mut s = state("function=C_Sign rv=CKR_DEVICE_ERROR every=2 count=2");
        let fired: Vec<bool> = (0..8).map(|_| firing(&mut s, "C_Sign").is_some()).collect();
        assert_eq!(
            fired,
            [false, true, false, true, false, false, false, false]
        );
        assert!(firing(&mut s, "C_Login").is_none());
    }

    #[test]
    fn a_window_ends() {
        let mut s = state("function=* rv=CKR_TOKEN_NOT_PRESENT for_ms=0");
        assert!(firing(&mut s, "C_Sign").is_none());
    }
}
