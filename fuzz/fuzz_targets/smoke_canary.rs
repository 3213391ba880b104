//! Not a fuzz target of signetd: the smoke step's self-check (`scripts/fuzz.sh`). It
//! panics on exactly one input, the seed in `fuzz/corpus/smoke_canary/`, so running it as
//! the smoke step runs a target must fail the run and leave that input as the crash
//! artifact. Proves that a crash in a real target would fail CI. Nothing else is ever
//! fuzzed with it.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The input that crashes: the whole of `fuzz/corpus/smoke_canary/panic`.
const CANARY: &[u8] = b"signetd fuzz smoke canary: this input panics\n";

fuzz_target!(|data: &[u8]| {
    if data == CANARY {
        panic!("the smoke canary's input: this crash is expected");
    }
});
