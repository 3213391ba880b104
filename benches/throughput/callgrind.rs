//! Reading a callgrind dump: the whole count, and the inclusive count of the calls to
//! each function by name. Written here rather than taken from a crate: no maintained
//! crate reads the format, and the bench needs two numbers from it. (Tested by
//! `tests/bench_tools.rs`, since a bench without the test harness runs no tests.)

use std::collections::HashMap;

/// What the bench reads from one callgrind dump.
#[derive(Debug, Default, PartialEq)]
pub struct Dump {
    /// Every instruction counted.
    pub total: u64,
    /// Inclusive instructions of the calls to each function, by name: their sum, and
    /// the largest of one call record.
    calls: HashMap<String, (u64, u64)>,
}

impl Dump {
    /// Reads callgrind's format (valgrind's "Callgrind Format Specification"): function
    /// names are compressed to `(id)` after their first use, by `fn=` or `cfn=` alike;
    /// a `calls=` line is followed by one cost line, `position cost`, the inclusive cost
    /// of those calls; `totals:` is the whole count.
    pub fn parse(text: &str) -> Dump {
        let mut names: HashMap<&str, &str> = HashMap::new();
        let mut dump = Dump::default();
        let mut callee: Option<&str> = None;
        let mut calling: Option<&str> = None;
        // `totals:` is what this dump holds. A dump taken while several threads run can
        // carry a `summary:` that has wrapped below zero (seen with valgrind 3.19), so it
        // is read only when `totals:` is missing.
        let (mut totals, mut summary) = (None, None);
        for line in text.lines() {
            if let Some(called) = calling.take() {
                let inclusive = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no cost after a calls= line: {line:?}"));
                let (sum, largest) = dump.calls.entry(called.to_string()).or_default();
                *sum = sum.saturating_add(inclusive);
                *largest = (*largest).max(inclusive);
            } else if let Some(spec) = line.strip_prefix("cfn=") {
                callee = Some(name(spec, &mut names));
            } else if let Some(spec) = line.strip_prefix("fn=") {
                name(spec, &mut names);
            } else if line.starts_with("calls=") {
                calling = callee;
            } else if let Some(total) = line.strip_prefix("totals:") {
                totals = total.trim().parse().ok();
            } else if let Some(total) = line.strip_prefix("summary:") {
                summary = total.trim().parse().ok();
            }
        }
        dump.total = totals
            .or(summary)
            .unwrap_or_else(|| panic!("a callgrind dump without totals: or summary:"));
        dump
    }

    /// Whether no call record to any of `functions` counts more than the whole dump. A
    /// call still running when callgrind dumps (every thread's own loop, a tick's token
    /// read caught half-way) can be given a cost below zero, written wrapped (seen with
    /// valgrind 3.19, like the `summary:` above): such a count cannot be used.
    pub fn consistent(&self, functions: &[&str]) -> bool {
        functions.iter().all(|f| {
            self.calls
                .get(*f)
                .is_none_or(|&(_, largest)| largest <= self.total)
        })
    }

    pub fn calls_to(&self, function: &str) -> u64 {
        self.calls.get(function).map_or(0, |&(sum, _)| sum)
    }
}

/// The name a `fn=`/`cfn=` spec names: `(id) name` defines `id`, `(id)` refers to it.
fn name<'a>(spec: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
    match spec.split_once(") ") {
        Some((id, name)) if spec.starts_with('(') => {
            names.insert(&id[1..], name);
            name
        }
        _ => match spec.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
            Some(id) => names.get(id).copied().unwrap_or(spec),
            None => spec,
        },
    }
}
