//! Reading a callgrind dump: the whole count, the inclusive count of the calls to each
//! function by name, and which functions ran. Written here rather than taken from a
//! crate: no maintained crate reads the format, and the bench needs a few numbers from
//! it. (Tested by `tests/bench_tools.rs`, since a bench without the test harness runs
//! no tests.)
//!
//! It reads what valgrind writes with the options the bench passes
//! ([`VALGRIND_OPTIONS`]): one event, line positions, compressed names, one file per
//! dump. It refuses other layouts rather than misread them.

use std::collections::{HashMap, HashSet};

/// The callgrind options the parser relies on, passed explicitly so that a
/// `~/.valgrindrc` or `VALGRIND_OPTS` cannot change the layout under it.
pub const VALGRIND_OPTIONS: [&str; 7] = [
    "--dump-instr=no",
    "--dump-line=yes",
    "--separate-threads=no",
    "--combine-dumps=no",
    "--compress-strings=yes",
    "--cache-sim=no",
    "--branch-sim=no",
];

/// What the bench reads from one callgrind dump.
#[derive(Debug, Default, PartialEq)]
pub struct Dump {
    /// The dump's number (`part:`): 1 for the first one a process writes.
    pub part: Option<u64>,
    /// Every instruction counted.
    pub total: u64,
    /// Inclusive instructions of the calls to each function, by name: their sum, and
    /// the largest of one call record.
    calls: HashMap<String, (u64, u64)>,
    /// The functions that ran code of their own in this dump.
    ran: HashSet<String>,
}

impl Dump {
    /// Reads callgrind's format (valgrind's "Callgrind Format Specification"): function
    /// names are compressed to `(id)` after their first use, by `fn=` or `cfn=` alike;
    /// a `calls=` line is followed by one cost line, `position cost`, the inclusive cost
    /// of those calls; any other cost line is the current function's own; `totals:` is
    /// the whole count. Panics on a layout other than the one [`VALGRIND_OPTIONS`] asks
    /// for, or a dump cut short.
    pub fn parse(text: &str) -> Dump {
        let mut names: HashMap<&str, &str> = HashMap::new();
        let mut dump = Dump::default();
        let mut current: Option<&str> = None;
        let mut callee: Option<&str> = None;
        let mut calling: Option<&str> = None;
        let mut totals = None;
        for line in text.lines() {
            if let Some(called) = calling.take() {
                let inclusive = cost(line)
                    .unwrap_or_else(|| panic!("no cost line after a calls= line: {line:?}"));
                let (sum, largest) = dump.calls.entry(called.to_string()).or_default();
                *sum = sum.saturating_add(inclusive);
                *largest = (*largest).max(inclusive);
            } else if let Some(spec) = line.strip_prefix("cfn=") {
                callee = Some(name(spec, &mut names));
            } else if let Some(spec) = line.strip_prefix("fn=") {
                current = Some(name(spec, &mut names));
            } else if line.starts_with("calls=") {
                calling = callee;
            } else if let Some(count) = line.strip_prefix("totals:") {
                totals = count.split_whitespace().next().and_then(|c| c.parse().ok());
            } else if let Some(part) = line.strip_prefix("part:") {
                dump.part = part.trim().parse().ok();
            } else if let Some(layout) = line.strip_prefix("positions:") {
                assert_eq!(layout.trim(), "line", "callgrind positions: {layout}");
            } else if let Some(events) = line.strip_prefix("events:") {
                assert_eq!(events.trim(), "Ir", "callgrind events: {events}");
            } else if let Some(function) = current
                && cost(line).is_some_and(|c| c > 0)
            {
                dump.ran.insert(function.to_string());
            }
        }
        // `summary:` is not read: with instrumentation switched on and off it can come
        // out wrapped below zero (seen with valgrind 3.19), while `totals:` is the sum
        // of the cost lines themselves.
        dump.total = totals.unwrap_or_else(|| panic!("a callgrind dump without totals:"));
        dump
    }

    /// Whether the counts of `functions` can be used: no call record to one counts more
    /// than the whole dump, and none ran without a call to it being recorded.
    ///
    /// A call still running when counting stops can be given a cost below zero, written
    /// wrapped. And a call already running when counting starts has no call record
    /// (turning instrumentation on forgets the call stacks): what it runs afterwards is
    /// in the total, but in no call to it. Either way the function's share is wrong.
    pub fn consistent(&self, functions: &[&str]) -> bool {
        functions.iter().all(|&f| match self.calls.get(f) {
            Some(&(_, largest)) => largest <= self.total,
            None => !self.ran.contains(f),
        })
    }

    pub fn calls_to(&self, function: &str) -> u64 {
        self.calls.get(function).map_or(0, |&(sum, _)| sum)
    }
}

/// The cost on a cost line, `position cost`: a position is one token (`12`, `+2`, `-1`,
/// `*`), and a line without a cost counts zero. `None` for a line that is not a cost
/// line.
fn cost(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    let position = fields.next()?;
    let first = position.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*')) {
        return None;
    }
    match fields.next() {
        Some(count) => count.parse().ok(),
        None => Some(0),
    }
}

/// The name a `fn=`/`cfn=` spec names: `(id) name` defines `id`, `(id)` refers to it; a
/// name that does not start with `(` and a digit is not compressed.
fn name<'a>(spec: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
    let compressed =
        spec.starts_with('(') && spec.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
    if !compressed {
        return spec;
    }
    match spec.split_once(") ") {
        Some((id, name)) => {
            names.insert(&id[1..], name);
            name
        }
        None => {
            let id = spec
                .trim_end()
                .trim_start_matches('(')
                .trim_end_matches(')');
            names.get(id).copied().unwrap_or(spec)
        }
    }
}
