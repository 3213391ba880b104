//! The bench's own tools, which its target (no test harness) cannot test itself.

// The options are the bench's to pass; the parser is what is tested here.
#[allow(dead_code)]
#[path = "../benches/throughput/callgrind.rs"]
mod callgrind;

use callgrind::Dump;

/// A dump in callgrind's compressed form: the first `cfn=` of C_Sign names it, the
/// second refers to it by id; a call to another function is not counted as C_Sign's.
/// Its `summary:` has wrapped below zero, as callgrind's can: `totals:` is the count.
#[test]
fn reads_inclusive_costs_of_calls_by_name() {
    let text = "\
version: 1
events: Ir
fl=(1) a.rs
fn=(1) caller
10 5
cfl=(2) libsofthsm2.so
cfn=(2) C_Sign
calls=1 0
11 1000
cfn=(3) C_SignInit
calls=2 0
12 700
fn=(4) other
cfn=(2)
calls=1 0
+2 300
cfn=(1)
calls=1 0
* 50
fn=(2)
0 1300
summary: 18446744073635304589
totals: 2055
";
    let dump = Dump::parse(text);
    assert_eq!(dump.total, 2055);
    assert_eq!(dump.calls_to("C_Sign"), 1300);
    assert_eq!(dump.calls_to("C_SignInit"), 700);
    assert_eq!(dump.calls_to("caller"), 50);
    assert_eq!(dump.calls_to("missing"), 0);
    assert!(dump.consistent(&["C_Sign", "C_SignInit", "caller"]));
}

/// A dump without `totals:` was cut short: refused.
#[test]
#[should_panic(expected = "without totals")]
fn a_dump_without_totals_is_refused() {
    Dump::parse("events: Ir\nfn=(1) f\n1 7\nsummary: 7\n");
}

/// A function that runs code of its own but was called before counting started has no
/// call record: its count is not consistent. One called in the dump is, and so is one
/// that did not run.
#[test]
fn a_call_begun_before_the_count_is_caught() {
    let text = "positions: line\nevents: Ir\nfn=(1) key_pairs\n5 40\ncfn=(2) C_FindObjects\n\
                calls=1 0\n6 500\nfn=(3) tick\n+1 10\ntotals: 550\n";
    let dump = Dump::parse(text);
    assert!(!dump.consistent(&["key_pairs"]));
    assert!(dump.consistent(&["C_FindObjects"]));
    assert!(!dump.consistent(&["tick"]));
    assert!(dump.consistent(&["absent"]));
}

/// Uncompressed names that begin with a parenthesis are names, not ids.
#[test]
fn a_parenthesised_name_is_not_an_id() {
    let text = "events: Ir\nfn=(1) caller\n1 1\ncfn=(anonymous namespace)::f()\ncalls=1 0\n2 9\n\
                totals: 10\n";
    assert_eq!(Dump::parse(text).calls_to("(anonymous namespace)::f()"), 9);
}

/// A call record that counts more than the whole dump (a cost below zero, written
/// wrapped) makes the dump inconsistent for that function, not for others, and summing
/// it does not overflow.
#[test]
fn a_wrapped_call_cost_is_caught() {
    let text = "events: Ir\nfn=(1) f\n1 10\ncfn=(2) g\ncalls=1 0\n2 18446744073709551610\n\
                cfn=(2)\ncalls=1 0\n3 20\ncfn=(3) h\ncalls=1 0\n4 20\ntotals: 30\n";
    let dump = Dump::parse(text);
    assert!(!dump.consistent(&["g"]));
    assert!(!dump.consistent(&["h", "g"]));
    assert!(dump.consistent(&["h", "missing"]));
    assert_eq!(dump.calls_to("g"), u64::MAX);
    assert_eq!(dump.calls_to("h"), 20);
}
