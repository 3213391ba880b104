#!/usr/bin/env bash
# Run signetd's whole test suite on a fresh Debian machine.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

if [[ ${1:-} == --fuzz-smoke ]]; then
    # The fuzz targets (fuzz/) need none of the test tools below: build them and run
    # each for a short bounded time (docs/reliability.md, "Fuzzing").
    exec bash "$REPO_ROOT/scripts/fuzz.sh" smoke "${FUZZ_SMOKE_SECONDS:-20}"
fi

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    cat <<EOF
Usage: scripts/$PROG [--pkcs11 softhsm2|kryoptic|both] [CARGO TEST ARGS...]
       scripts/$PROG --fuzz-smoke

Run signetd's whole test suite: 'cargo test --locked [CARGO TEST ARGS...]', once
on SoftHSM2 tokens and once on kryoptic tokens (--pkcs11 chooses one; default
both). kryoptic, a PKCS#11 3.2 token in Rust, is built here from kryoptic-pkcs11/
with a vendored OpenSSL (a few minutes the first time); the tests find it through
SIGNETD_TEST_PKCS11=kryoptic and SIGNETD_KRYOPTIC_MODULE, which this script sets.
See docs/hsm-compatibility.md.

Before that it makes sure that:
  - the system tools are there: softhsm2-util (softhsm2), pkcs11-tool
    (opensc), openssl (openssl), curl (curl; the TLS tests run it and
    'openssl s_client' against the daemon), man (man-db), strace (strace) and
    systemd-analyze (systemd) for the packaging tests, libclang (libclang-dev; kryoptic's
    build generates bindings with it), 'python3 -m venv' (python3-venv),
    PostgreSQL's initdb and pg_ctl (postgresql; the state store's tests run on
    SQLite and on PostgreSQL), and go with golang.org/x/mod (golang-go,
    golang-golang-x-mod-dev) for tlogcheck.
    Missing ones are installed with apt-get when running as root; otherwise
    the sudo command to run is printed and the script exits with status 1.
  - the Python venv target/test-venv exists and holds
    tests/interop/requirements.txt (PyJWT, cryptography, asn1crypto,
    pkilint, prometheus-client for the metrics tests' text format parser,
    and schemathesis with pytest and requests-unixsocket2 for the OpenAPI
    run in tests/daemon/openapi.rs; reinstalled only when that file
    changes).
  - target/test-node holds tests/interop/package-lock.json (panva's jose),
    installed with 'npm ci' (node and npm: nodejs, npm), again only when that
    file changes; tests find jose's entry point in SIGNETD_TEST_JOSE.

Tests find the venv's interpreter in SIGNETD_TEST_PYTHON, and the
fault-injecting PKCS#11 module (fault-pkcs11/, built here) in
SIGNETD_FAULT_MODULE, which this script exports.

tlogcheck (tests/interop/tlogcheck/), a small Go program that checks the audit
log's checkpoints and proofs with Go's golang.org/x/mod/sumdb/note and
sumdb/tlog rather than signetd's code, is built offline in GOPATH mode from
Debian's packages into TARGET/tlogcheck/tlogcheck on every run; tests find it in
SIGNETD_TEST_TLOGCHECK.

It starts a throwaway PostgreSQL cluster for the run (initdb into a temporary
directory, listening on 127.0.0.1 on a free port; as the user nobody when run
as root, since PostgreSQL refuses root), exports its superuser URL as
SIGNETD_TEST_POSTGRES_URL (each test creates and drops a database of its own)
and SIGNETD_REQUIRE_POSTGRES=1 (a PostgreSQL test without the URL fails rather
than skips), and stops and removes the cluster when the script exits, whether
the tests passed or not.

--fuzz-smoke instead builds the fuzz targets (installing cargo-fuzz if missing) and
runs each for FUZZ_SMOKE_SECONDS (default 20) on one core; it fails on a crash.
See scripts/fuzz.sh and docs/reliability.md.

Examples:
  scripts/$PROG
  scripts/$PROG --pkcs11 softhsm2 --test daemon faults::
  scripts/$PROG --test interop -- --nocapture

Environment:
  PYTHON   interpreter used to create the venv (default: python3)
EOF
    exit 0
fi

backends=(softhsm2 kryoptic)
if [[ ${1:-} == --pkcs11 ]]; then
    case ${2:-} in
        softhsm2 | kryoptic) backends=("$2") ;;
        both) ;;
        *) printf '%s: --pkcs11 takes softhsm2, kryoptic or both, not %q\n' "$PROG" "${2:-}" >&2 && exit 2 ;;
    esac
    shift 2
fi

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

cd "$REPO_ROOT"
PYTHON=${PYTHON:-python3}
VENV_DIR="$REPO_ROOT/target/test-venv"
REQUIREMENTS="$REPO_ROOT/tests/interop/requirements.txt"
STAMP="$VENV_DIR/.signetd-requirements.sha256"
# Where Debian's golang-*-dev packages put Go sources: tlogcheck's GOPATH.
GOCODE=/usr/share/gocode

# ---------------------------------------------------------------- system packages

# The directory of PostgreSQL's server programs (initdb, pg_ctl), or nothing. Debian
# keeps them out of PATH, in /usr/lib/postgresql/VERSION/bin.
postgres_bin() {
    local initdb
    initdb=$(command -v initdb 2>/dev/null) ||
        initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1) ||
        return 0
    [[ -x $initdb && -x ${initdb%/*}/pg_ctl ]] && printf '%s' "${initdb%/*}"
    return 0
}

missing_packages() {
    local -a pkgs=()
    command -v softhsm2-util >/dev/null 2>&1 || pkgs+=(softhsm2)
    command -v pkcs11-tool >/dev/null 2>&1 || pkgs+=(opensc)
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl ca-certificates)
    # The operator tests: man pages render (man-db), the unit's sandbox (strace, and
    # systemd-analyze from systemd).
    command -v man >/dev/null 2>&1 || pkgs+=(man-db)
    command -v strace >/dev/null 2>&1 || pkgs+=(strace)
    command -v systemd-analyze >/dev/null 2>&1 || pkgs+=(systemd)
    [[ -n $(postgres_bin) ]] || pkgs+=(postgresql)
    # tlogcheck: Go, and golang.org/x/mod in Debian's GOPATH (/usr/share/gocode).
    command -v go >/dev/null 2>&1 || pkgs+=(golang-go)
    [[ -d $GOCODE/src/golang.org/x/mod/sumdb/note ]] || pkgs+=(golang-golang-x-mod-dev)
    command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
    command -v npm >/dev/null 2>&1 || pkgs+=(npm)
    if [[ " ${backends[*]} " == *" kryoptic "* && -z ${LIBCLANG_PATH:-} ]] &&
        ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null; then
        pkgs+=(libclang-dev)
    fi
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        pkgs+=(python3 python3-venv)
    elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        # Debian splits ensurepip (needed by 'python3 -m venv') into python3-venv.
        pkgs+=(python3-venv)
    fi
    printf '%s' "${pkgs[*]}"
}

missing=$(missing_packages)
if [[ -n $missing ]]; then
    if ((EUID != 0)); then
        printf '%s: missing system packages: %s\n' "$PROG" "$missing" >&2
        printf 'Install them with:\n\n    sudo apt-get update && sudo apt-get install -y %s\n\n' "$missing" >&2
        exit 1
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing system packages ($missing) and apt-get is not available; install them by hand"
    log "installing system packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null || die "'apt-get update' failed"
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y -q --no-install-recommends $missing </dev/null ||
        die "'apt-get install -y $missing' failed"
    still=$(missing_packages)
    if [[ $still == *python3* ]]; then
        die "'$PYTHON -m venv' still does not work after installing $missing; if PYTHON or python3 on PATH is not Debian's python3, give it venv/ensurepip support or set PYTHON=/usr/bin/python3"
    fi
    [[ -z $still ]] || die "still missing after apt-get install: $still (check PATH=$PATH)"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH; install a Rust toolchain (rustup) first"

# ---------------------------------------------------------------- python venv

want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if ! "$VENV_DIR/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' >/dev/null 2>&1; then
    log "creating Python venv at target/test-venv"
    rm -rf -- "$VENV_DIR"
    mkdir -p -- "$REPO_ROOT/target"
    "$PYTHON" -m venv "$VENV_DIR" || die "'$PYTHON -m venv $VENV_DIR' failed"
fi
if [[ ! -f $STAMP || $(<"$STAMP") != "$want" ]]; then
    log "installing tests/interop/requirements.txt into target/test-venv"
    rm -f -- "$STAMP"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip install \
        --quiet --no-input --only-binary=:all: -r "$REQUIREMENTS" </dev/null ||
        die "pip install -r tests/interop/requirements.txt failed"
    "$VENV_DIR/bin/python" -c 'import jwt, cryptography, asn1crypto, pkilint, prometheus_client, schemathesis, requests_unixsocket, pytest' ||
        die "the venv at $VENV_DIR cannot import jwt, cryptography, asn1crypto, pkilint, prometheus_client, schemathesis, requests_unixsocket and pytest after installing"
    for tool in lint_pkix_cert lint_pkix_signer_signee_cert_chain; do
        [[ -x $VENV_DIR/bin/$tool ]] || die "pkilint installed no $VENV_DIR/bin/$tool"
    done
    printf '%s\n' "$want" >"$STAMP"
fi
export SIGNETD_TEST_PYTHON="$VENV_DIR/bin/python"

# ---------------------------------------------------------------- node: panva jose

# tests/interop/verify_jose.mjs verifies tokens with jose, installed from the committed
# lockfile into target/test-node (again only when the lockfile changes).
NODE_DIR="$REPO_ROOT/target/test-node"
NODE_LOCK="$REPO_ROOT/tests/interop/package-lock.json"
NODE_STAMP="$NODE_DIR/.signetd-lock.sha256"
want=$(sha256sum "$NODE_LOCK" | cut -d' ' -f1)
if [[ ! -f $NODE_STAMP || $(<"$NODE_STAMP") != "$want" ]]; then
    log "installing tests/interop/package-lock.json (jose) into target/test-node"
    rm -rf -- "$NODE_DIR"
    mkdir -p -- "$NODE_DIR"
    cp -- "$REPO_ROOT/tests/interop/package.json" "$NODE_LOCK" "$NODE_DIR/"
    (cd -- "$NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error </dev/null) ||
        die "npm ci in target/test-node (tests/interop/package-lock.json) failed"
    printf '%s\n' "$want" >"$NODE_STAMP"
fi
SIGNETD_TEST_JOSE=$(cd -- "$NODE_DIR" && node --input-type=module -e 'console.log(import.meta.resolve("jose"))') ||
    die "node cannot resolve jose in target/test-node"
export SIGNETD_TEST_JOSE

# ---------------------------------------------------------------- fault module

# The fault-injecting PKCS#11 module (fault-pkcs11/) the fault tests load in place of
# SoftHSM2; its plan parser's own tests run here too, as 'cargo test' covers only signetd.
log "cargo build -p fault-pkcs11; cargo test -p fault-pkcs11"
cargo build --locked -q -p fault-pkcs11 || die "cannot build the fault-injecting PKCS#11 module"
cargo test --locked -q -p fault-pkcs11 >/dev/null || die "the fault module's own tests failed: run 'cargo test -p fault-pkcs11'"
target_dir=$(cargo metadata --locked --format-version 1 --no-deps | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export SIGNETD_FAULT_MODULE="$target_dir/debug/libfault_pkcs11.so"
[[ -f $SIGNETD_FAULT_MODULE ]] || die "no $SIGNETD_FAULT_MODULE after building fault-pkcs11"

# ---------------------------------------------------------------- tlogcheck

# tests/interop/tlogcheck checks the audit log's signed checkpoints and its inclusion and
# consistency proofs with Go's golang.org/x/mod/sumdb/{note,tlog}: built offline in
# GOPATH mode from the Debian packages, every run (it is tiny), with a Go build cache
# of its own in the target directory.
log "go build tests/interop/tlogcheck"
tlogcheck_dir="$target_dir/tlogcheck"
mkdir -p -- "$tlogcheck_dir"
GO111MODULE=off GOPATH=$GOCODE GOCACHE="$tlogcheck_dir/cache" GOFLAGS='' \
    go build -o "$tlogcheck_dir/tlogcheck" ./tests/interop/tlogcheck </dev/null ||
    die "cannot build tests/interop/tlogcheck (go build in GOPATH mode with GOPATH=$GOCODE)"
export SIGNETD_TEST_TLOGCHECK="$tlogcheck_dir/tlogcheck"

# ---------------------------------------------------------------- release build

# README.md's "Running it", which tests/daemon/readme.rs runs as written, starts with
# 'cargo build --release --locked': built here, not while the other tests run beside it.
log "cargo build --release (README.md's \"Running it\" installs target/release/signetd)"
cargo build --locked --release -q || die "cargo build --release failed"

# ---------------------------------------------------------------- kryoptic module

if [[ " ${backends[*]} " == *" kryoptic "* ]]; then
    log "cargo build kryoptic-pkcs11/ (kryoptic with a vendored OpenSSL; minutes the first time)"
    # A workspace of its own (its SQLite differs from signetd's: Cargo.toml says why),
    # built into the same target directory.
    cargo build --locked -q --manifest-path kryoptic-pkcs11/Cargo.toml --target-dir "$target_dir" ||
        die "cannot build the kryoptic PKCS#11 module (kryoptic-pkcs11/)"
    export SIGNETD_KRYOPTIC_MODULE="$target_dir/debug/libkryoptic_pkcs11.so"
    [[ -f $SIGNETD_KRYOPTIC_MODULE ]] || die "no $SIGNETD_KRYOPTIC_MODULE after building kryoptic-pkcs11"
fi

# ---------------------------------------------------------------- cleanup

log_file=
pg_dir=
pg_ctl=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [[ -n $pg_dir ]]; then
        if [[ -f $pg_dir/data/postmaster.pid ]]; then
            as_pg_user "$pg_ctl" stop -D "$pg_dir/data" -m immediate -s >/dev/null 2>&1 || true
        fi
        rm -rf -- "$pg_dir"
    fi
    [[ -z $log_file ]] || rm -f -- "$log_file"
}
trap cleanup EXIT

# ---------------------------------------------------------------- PostgreSQL

# PostgreSQL refuses to run as root: run its programs as nobody then.
as_pg_user() {
    if ((EUID == 0)); then
        runuser -u nobody -- "$@"
    else
        "$@"
    fi
}

pg_bindir=$(postgres_bin)
[[ -n $pg_bindir ]] || die "PostgreSQL's initdb and pg_ctl not found (apt-get install postgresql)"
pg_ctl=$pg_bindir/pg_ctl
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/signetd-pg.XXXXXX")
chmod 0755 "$pg_dir"
# A password, though the cluster listens on loopback only: the tests then connect as a
# deployment would, and show the password stays out of logs and errors.
pg_password=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
printf '%s\n' "$pg_password" >"$pg_dir/pwfile"
mkdir -- "$pg_dir/socket"
if ((EUID == 0)); then
    chown nobody "$pg_dir/pwfile" "$pg_dir/socket"
    chown nobody "$pg_dir"
fi
log "initdb: a throwaway PostgreSQL cluster in $pg_dir"
as_pg_user "$pg_bindir/initdb" -D "$pg_dir/data" -U postgres --auth=scram-sha-256 \
    --pwfile="$pg_dir/pwfile" --no-sync -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$pg_dir/initdb.log")"
rm -f -- "$pg_dir/pwfile"
# A free port: the kernel names one, then PostgreSQL binds it; another process could
# take it between the two, so try a few.
for _ in 1 2 3 4 5; do
    pg_port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if as_pg_user "$pg_ctl" start -D "$pg_dir/data" -w -t 60 -s -l "$pg_dir/server.log" \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pg_dir/socket -c max_connections=300 -c fsync=off" \
        >/dev/null 2>&1; then
        break
    fi
    pg_port=
done
[[ -n $pg_port ]] || die "cannot start PostgreSQL: $(tail -n 5 "$pg_dir/server.log")"
export SIGNETD_TEST_POSTGRES_URL="postgres://postgres:$pg_password@127.0.0.1:$pg_port/postgres"
export SIGNETD_REQUIRE_POSTGRES=1
log "PostgreSQL $("$pg_bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port"

# ---------------------------------------------------------------- cargo test

log_file=$(mktemp "${TMPDIR:-/tmp}/signetd-test.XXXXXX")
if [[ -t 1 && -z ${CARGO_TERM_COLOR:-} ]]; then
    export CARGO_TERM_COLOR=always
fi

start=$SECONDS
status=0
for backend in "${backends[@]}"; do
    log "cargo test --locked $* (PKCS#11: $backend)"
    SIGNETD_TEST_PKCS11=$backend cargo test --locked "$@" 2>&1 | tee -a "$log_file" || status=${PIPESTATUS[0]}
    ((status == 0)) || break
done

# Add up libtest's "test result: ok. 3 passed; 0 failed; 1 ignored; ..." lines.
counts=$(sed 's/\x1b\[[0-9;]*m//g' "$log_file" | awk '
    /^test result: / {
        suites++
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^passed;?$/) passed += $(i - 1)
            if ($i ~ /^failed;?$/) failed += $(i - 1)
            if ($i ~ /^ignored;?$/) ignored += $(i - 1)
        }
    }
    END { printf "%d passed, %d failed, %d ignored in %d test suites", passed, failed, ignored, suites }
')
if ((status == 0)); then
    printf '%s: PASS (cargo test on %s: %s; %ss)\n' "$PROG" "${backends[*]}" "$counts" "$((SECONDS - start))"
else
    printf '%s: FAIL (cargo test exited with status %s: %s; %ss)\n' "$PROG" "$status" "$counts" "$((SECONDS - start))"
fi
exit "$status"
