#!/usr/bin/env bash
# Run signetd's whole test suite on a fresh Debian machine.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

usage() {
    cat <<EOF
Usage: scripts/$PROG [CARGO TEST ARGS...]

Run signetd's whole test suite: 'cargo test --locked [CARGO TEST ARGS...]'.

Before that it makes sure that:
  - the system tools are there: softhsm2-util (softhsm2), pkcs11-tool
    (opensc), openssl (openssl) and 'python3 -m venv' (python3-venv).
    Missing ones are installed with apt-get when running as root; otherwise
    the sudo command to run is printed and the script exits with status 1.
  - the Python venv target/test-venv exists and holds
    tests/interop/requirements.txt (PyJWT, cryptography, asn1crypto and
    pkilint; reinstalled only when that file changes).

Tests find the venv's interpreter in SIGNETD_TEST_PYTHON, which this script
exports.

Examples:
  scripts/$PROG
  scripts/$PROG --test interop -- --nocapture

Environment:
  PYTHON   interpreter used to create the venv (default: python3)
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    *) ;;
esac

log() {
    printf '==> %s\n' "$*" >&2
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

cd "$REPO_ROOT"

PYTHON=${PYTHON:-python3}
VENV_DIR="$REPO_ROOT/target/test-venv"
REQUIREMENTS="$REPO_ROOT/tests/interop/requirements.txt"
STAMP="$VENV_DIR/.signetd-requirements.sha256"

# ---------------------------------------------------------------- system packages

python_can_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || return 1
    # Debian splits ensurepip (needed by 'python3 -m venv') into python3-venv.
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1
}

missing_packages() {
    local -a pkgs=()
    command -v softhsm2-util >/dev/null 2>&1 || pkgs+=(softhsm2)
    command -v pkcs11-tool >/dev/null 2>&1 || pkgs+=(opensc)
    command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        pkgs+=(python3 python3-venv)
    elif ! python_can_venv; then
        pkgs+=(python3-venv)
    fi
    if ((${#pkgs[@]} > 0)); then
        printf '%s\n' "${pkgs[*]}"
    fi
}

ensure_system_packages() {
    local missing
    missing=$(missing_packages)
    if [[ -z $missing ]]; then
        return
    fi
    local -a pkgs
    read -r -a pkgs <<<"$missing"
    if ((EUID != 0)); then
        printf '%s: missing system packages: %s\n' "$PROG" "${pkgs[*]}" >&2
        printf 'Install them with:\n\n    sudo apt-get update && sudo apt-get install -y %s\n\n' "${pkgs[*]}" >&2
        exit 1
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "missing system packages (${pkgs[*]}) and apt-get is not available; install them by hand"
    log "installing system packages: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q </dev/null || die "'apt-get update' failed"
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" </dev/null ||
        die "'apt-get install -y ${pkgs[*]}' failed"
    missing=$(missing_packages)
    if [[ $missing == *python3* ]]; then
        die "'$PYTHON -m venv' still does not work after installing ${pkgs[*]}; if PYTHON or python3 on PATH is not Debian's python3, give it venv/ensurepip support or set PYTHON=/usr/bin/python3"
    fi
    [[ -z $missing ]] || die "still missing after apt-get install: $missing (check PATH=$PATH)"
}

ensure_system_packages
command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH; install a Rust toolchain (rustup) first"

# ---------------------------------------------------------------- python venv

venv_works() {
    [[ -x $VENV_DIR/bin/python ]] &&
        "$VENV_DIR/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' >/dev/null 2>&1
}

ensure_venv() {
    [[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS not found"
    local want have=""
    want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)

    if ! venv_works; then
        if [[ -e $VENV_DIR ]]; then
            log "recreating broken Python venv at target/test-venv"
            rm -rf -- "$VENV_DIR"
        else
            log "creating Python venv at target/test-venv"
        fi
        mkdir -p -- "$REPO_ROOT/target"
        "$PYTHON" -m venv "$VENV_DIR" || die "'$PYTHON -m venv $VENV_DIR' failed"
    fi

    if [[ -f $STAMP ]]; then
        have=$(<"$STAMP")
    fi
    if [[ $have == "$want" ]]; then
        return
    fi
    log "installing tests/interop/requirements.txt into target/test-venv"
    rm -f -- "$STAMP"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV_DIR/bin/python" -m pip install \
        --quiet --no-input --only-binary=:all: -r "$REQUIREMENTS" </dev/null ||
        die "pip install -r tests/interop/requirements.txt failed"
    "$VENV_DIR/bin/python" -c 'import jwt, cryptography, asn1crypto, pkilint' ||
        die "the venv at $VENV_DIR cannot import jwt, cryptography, asn1crypto and pkilint after installing"
    local tool
    for tool in lint_pkix_cert lint_pkix_signer_signee_cert_chain; do
        [[ -x $VENV_DIR/bin/$tool ]] || die "pkilint installed no $VENV_DIR/bin/$tool"
    done
    printf '%s\n' "$want" >"$STAMP"
}

ensure_venv
export SIGNETD_TEST_PYTHON="$VENV_DIR/bin/python"

# ---------------------------------------------------------------- cargo test

log "cargo test --locked $*"
log_file=$(mktemp "${TMPDIR:-/tmp}/signetd-test.XXXXXX")
trap 'rm -f -- "$log_file"' EXIT

if [[ -t 1 && -z ${CARGO_TERM_COLOR:-} ]]; then
    export CARGO_TERM_COLOR=always
fi

start=$SECONDS
set +e
cargo test --locked "$@" 2>&1 | tee "$log_file"
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

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
    printf '%s: PASS (cargo test: %s; %ss)\n' "$PROG" "$counts" "$elapsed"
else
    printf '%s: FAIL (cargo test exited with status %s: %s; %ss)\n' "$PROG" "$status" "$counts" "$elapsed"
fi
exit "$status"
