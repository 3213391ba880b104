#!/usr/bin/env bash
# Build and run signetd's fuzz targets (fuzz/, cargo-fuzz + libFuzzer) on one core.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
CARGO_FUZZ_VERSION=0.13.2
TARGETS=(request_bodies jws_verify config_parse audit_segment pkcs11_uri transparency)
# Not a target: it panics on its one seed, so the self-check can show that a crash
# fails the smoke runs (fuzz/fuzz_targets/smoke_canary.rs).
CANARY=smoke_canary

usage() {
    cat <<EOF
Usage: scripts/$PROG smoke [SECONDS]
       scripts/$PROG run TARGET SECONDS [LOG]
       scripts/$PROG runs SECONDS TARGET...
       scripts/$PROG self-check
       scripts/$PROG build

  smoke       build every target, run the self-check, then run each target for
              SECONDS (default 20) from its seed corpus; fails if any target
              crashes, times out or runs out of memory.
              'scripts/test.sh --fuzz-smoke' runs this.
  run         run one target for SECONDS, with a scratch corpus under
              target/fuzz-corpus/TARGET seeded from fuzz/corpus/TARGET, the libFuzzer
              output going to LOG (default target/fuzz-logs/TARGET.log).
  runs        what smoke does after the build and the self-check: each TARGET for
              SECONDS, logs in target/fuzz-logs/smoke-TARGET.log; stops at the first
              crash, with status 1.
  self-check  build, then show that a crash fails the smoke runs: 'runs' (this
              script, in a process of its own, as smoke runs it) on $CANARY, which
              panics on its seed, must exit non-zero, name it as crashed, and leave
              that seed as its crash artifact.
  build       build every target (and $CANARY).

Targets: ${TARGETS[*]}
Installs cargo-fuzz $CARGO_FUZZ_VERSION (cargo install --locked) if it is missing.
Everything runs on one core: one libFuzzer process with one thread (no -jobs or
-workers, which would also move its output into fuzz-N.log files), and the build
with CARGO_BUILD_JOBS=1 unless set.

Environment:
  FUZZ_SANITIZER  cargo fuzz's sanitizer (default: none; see docs/reliability.md)
EOF
}

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

# A LOG given relative to where the script was called from.
absolute() { [[ $1 == /* ]] && printf '%s' "$1" || printf '%s/%s' "$PWD" "$1"; }
if [[ ${1:-} == run && -n ${4:-} ]]; then
    set -- "$1" "$2" "$3" "$(absolute "$4")"
fi
cd "$REPO_ROOT/fuzz"
# cargo-fuzz passes -Z flags (sanitizer coverage) that stable rustc takes only from a
# toolchain that believes it is bootstrapping; no nightly can be fetched here.
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
SANITIZER=${FUZZ_SANITIZER:-none}

ensure_cargo_fuzz() {
    if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
        cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" ||
            die "cargo install cargo-fuzz failed"
    fi
}

build() {
    ensure_cargo_fuzz
    log "cargo fuzz build -s $SANITIZER (all targets)"
    cargo fuzz build -s "$SANITIZER" || die "cargo fuzz build failed"
}

# run TARGET SECONDS LOG: one bounded run; libFuzzer exits non-zero on a crash.
run() {
    local target=$1 seconds=$2 out=$3
    local corpus="$REPO_ROOT/target/fuzz-corpus/$target"
    local artifacts="$REPO_ROOT/target/fuzz-artifacts/$target/"
    mkdir -p -- "$corpus" "$artifacts" "$(dirname -- "$out")"
    log "fuzzing $target for ${seconds}s (log: ${out#"$REPO_ROOT"/})"
    if ! cargo fuzz run -s "$SANITIZER" "$target" "$corpus" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" >"$out" 2>&1; then
        tail -n 40 -- "$out" >&2
        die "$target crashed; the input is in ${artifacts#"$REPO_ROOT"/}"
    fi
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' -- "$out" >&2 || true
}

# runs SECONDS TARGET...: the smoke step's runs, one target after another.
runs() {
    local seconds=$1 target
    shift
    for target in "$@"; do
        run "$target" "$seconds" "$REPO_ROOT/target/fuzz-logs/smoke-$target.log"
    done
}

# The smoke step trusts libFuzzer's exit status and 'run' to turn it into a failure.
# Shown here, not assumed: the smoke runs, as a separate process of this script (so
# with its own errexit, exactly as 'smoke' runs them), on a target that crashes on its
# seed must fail for that crash.
self_check() {
    local artifacts="$REPO_ROOT/target/fuzz-artifacts/$CANARY"
    local corpus="$REPO_ROOT/target/fuzz-corpus/$CANARY"
    local seed="$REPO_ROOT/fuzz/corpus/$CANARY/panic"
    local out status=0 crash
    rm -rf -- "$artifacts" "$corpus"
    out=$(mktemp "${TMPDIR:-/tmp}/signetd-fuzz-self-check.XXXXXX")
    log "self-check: the smoke runs on $CANARY, which panics on its seed, must fail"
    bash "$REPO_ROOT/scripts/$PROG" runs 10 "$CANARY" 2>"$out" || status=$?
    if ((status == 0)); then
        cat -- "$out" >&2
        die "self-check: the smoke runs passed a target that crashes on its seed; a crash in a real target would go unnoticed"
    fi
    if ! grep -qF "error: $CANARY crashed" -- "$out" ||
        ! grep -qF "this crash is expected" -- "$REPO_ROOT/target/fuzz-logs/smoke-$CANARY.log"; then
        cat -- "$out" >&2
        die "self-check: the smoke runs failed (status $status), but not by reporting $CANARY's crash"
    fi
    crash=$(find "$artifacts" -maxdepth 1 -type f -name 'crash-*' -print -quit)
    if [[ -z $crash ]] || ! cmp -s -- "$crash" "$seed"; then
        die "self-check: $CANARY crashed, but its seed is not the crash artifact in ${artifacts#"$REPO_ROOT"/}"
    fi
    rm -rf -- "$artifacts" "$corpus" "$out"
    log "self-check: ok: $CANARY's crash failed the smoke runs (status $status) and left its input"
}

case ${1:-} in
smoke)
    seconds=${2:-20}
    build
    self_check
    runs "$seconds" "${TARGETS[@]}"
    log "fuzz smoke: ${#TARGETS[@]} targets, ${seconds}s each, no crash"
    ;;
runs)
    if (($# < 3)); then
        usage >&2
        exit 2
    fi
    for target in "${@:3}"; do
        [[ " ${TARGETS[*]} $CANARY " == *" $target "* ]] || die "unknown target $target (${TARGETS[*]} $CANARY)"
    done
    ensure_cargo_fuzz
    runs "$2" "${@:3}"
    ;;
self-check)
    build
    self_check
    ;;
run)
    if (($# < 3)); then
        usage >&2
        exit 2
    fi
    [[ " ${TARGETS[*]} " == *" $2 "* ]] || die "unknown target $2 (${TARGETS[*]})"
    ensure_cargo_fuzz
    run "$2" "$3" "${4:-$REPO_ROOT/target/fuzz-logs/$2.log}"
    ;;
build) build ;;
-h | --help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
