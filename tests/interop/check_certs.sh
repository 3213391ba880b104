#!/usr/bin/env bash
# Check signetd's attestation certificates with independent tools: openssl and pkilint.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)

usage() {
    cat <<EOF
Usage: tests/interop/$PROG DIR

DIR is a directory written by 'signetd attest export --out DIR'. For every
DIR/keys/*.pem (a key certificate, then the CA chain above it):

  - openssl verify -x509_strict -CAfile DIR/root.pem -untrusted CHAIN LEAF
  - pkilint's RFC 5280 linter (lint_pkix_cert lint -s WARNING) on the key
    certificate and on every certificate of the CA chain
  - pkilint's issuer/subject linter (lint_pkix_signer_signee_cert_chain lint
    -s WARNING) on each (issuer, subject) pair of the chain, from the CA and
    key certificate up

Any finding at WARNING or above fails. Prints one line per check and a
summary; exits 0 only if every check passed, 1 if one failed, 2 on bad usage
or missing tools.

pkilint comes from the test venv: the directory of \$SIGNETD_TEST_PYTHON
(scripts/test.sh exports it), else target/test-venv/bin, else PATH.
EOF
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    *) ;;
esac
if (($# != 1)); then
    printf '%s: expected one argument, the export DIR (see --help)\n' "$PROG" >&2
    exit 2
fi
dir=$1

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 2
}

[[ -d $dir ]] || die "$dir is not a directory"
[[ -s $dir/root.pem ]] || die "$dir/root.pem is missing: is $dir an 'attest export' directory?"
[[ -d $dir/keys ]] || die "$dir/keys is missing: is $dir an 'attest export' directory?"

# ---------------------------------------------------------------- tools

command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install -y openssl)"

find_tool() {
    local name=$1 candidate
    local -a dirs=()
    if [[ -n ${SIGNETD_TEST_PYTHON:-} ]]; then
        dirs+=("$(dirname -- "$SIGNETD_TEST_PYTHON")")
    fi
    dirs+=("$REPO_ROOT/target/test-venv/bin")
    for candidate in "${dirs[@]}"; do
        if [[ -x $candidate/$name ]]; then
            printf '%s\n' "$candidate/$name"
            return 0
        fi
    done
    if command -v "$name" >/dev/null 2>&1; then
        command -v "$name"
        return 0
    fi
    die "$name (pkilint) not found next to \$SIGNETD_TEST_PYTHON, in target/test-venv/bin or on PATH: run scripts/test.sh, which installs tests/interop/requirements.txt into target/test-venv"
}
lint_cert=$(find_tool lint_pkix_cert)
lint_pair=$(find_tool lint_pkix_signer_signee_cert_chain)

work=$(mktemp -d "${TMPDIR:-/tmp}/check-certs.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# ---------------------------------------------------------------- bookkeeping

passed=0
failed=0
failures=()

ok() {
    passed=$((passed + 1))
    printf 'ok   %s\n' "$1"
}

fail() {
    failed=$((failed + 1))
    failures+=("$1")
    printf 'FAIL %s\n' "$1"
    if [[ -n ${2:-} ]]; then
        printf '%s\n' "$2" | sed 's/^/       /'
    fi
}

# split_pem FILE PREFIX: writes each certificate of FILE to PREFIX-0.pem, PREFIX-1.pem, ...
# and prints how many there were.
split_pem() {
    awk -v prefix="$2" '
        BEGIN { n = 0 }
        /-----BEGIN CERTIFICATE-----/ { inside = 1; out = prefix "-" n ".pem"; n++ }
        inside { print > out }
        /-----END CERTIFICATE-----/ { inside = 0; close(out) }
        END { print n }
    ' "$1"
}

# The SHA-256 fingerprint of a PEM certificate, to lint each distinct one once.
fingerprint() {
    openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g'
}

subject_of() {
    openssl x509 -in "$1" -noout -subject -nameopt RFC2253 | sed 's/^subject=//'
}

declare -A linted=()
declare -A pair_linted=()

# lint_one PEM LABEL: pkilint's RFC 5280 certificate linter, findings at WARNING or above.
lint_one() {
    local pem=$1 label=$2 fp out status=0
    fp=$(fingerprint "$pem")
    if [[ -n ${linted[$fp]:-} ]]; then
        return
    fi
    linted[$fp]=1
    out=$("$lint_cert" lint -s WARNING --document-format PEM "$pem" 2>&1) || status=$?
    if ((status == 0)) && [[ -z ${out//[[:space:]]/} ]]; then
        ok "pkilint RFC 5280: $label ($(subject_of "$pem"))"
    else
        fail "pkilint RFC 5280: $label ($(subject_of "$pem")) (exit $status)" "$out"
    fi
}

# lint_pair ISSUER SUBJECT LABEL: pkilint's issuer/subject linter.
lint_pair_one() {
    local issuer=$1 subject=$2 label=$3 key out status=0
    key="$(fingerprint "$issuer")/$(fingerprint "$subject")"
    if [[ -n ${pair_linted[$key]:-} ]]; then
        return
    fi
    pair_linted[$key]=1
    out=$("$lint_pair" lint -s WARNING --document-format PEM "$issuer" "$subject" 2>&1) || status=$?
    if ((status == 0)) && [[ -z ${out//[[:space:]]/} ]]; then
        ok "pkilint issuer/subject: $label"
    else
        fail "pkilint issuer/subject: $label (exit $status)" "$out"
    fi
}

# ---------------------------------------------------------------- checks

shopt -s nullglob
key_files=("$dir"/keys/*.pem)
shopt -u nullglob
((${#key_files[@]} > 0)) || die "no key certificates in $dir/keys"

root_count=$(split_pem "$dir/root.pem" "$work/root")
((root_count == 1)) || die "$dir/root.pem holds $root_count certificates, expected 1"
lint_one "$work/root-0.pem" "trust anchor root.pem"

for pem in "${key_files[@]}"; do
    kid=$(basename -- "$pem" .pem)
    prefix="$work/$kid"
    count=$(split_pem "$pem" "$prefix")
    if ((count < 2)); then
        fail "chain $kid: $pem holds $count certificate(s), expected the key certificate and the CA chain"
        continue
    fi
    leaf="$prefix-0.pem"
    untrusted="$prefix-untrusted.pem"
    : >"$untrusted"
    for ((i = 1; i < count; i++)); do
        cat -- "$prefix-$i.pem" >>"$untrusted"
    done

    status=0
    out=$(openssl verify -x509_strict -CAfile "$dir/root.pem" -untrusted "$untrusted" "$leaf" 2>&1) || status=$?
    if ((status == 0)) && [[ $out == *": OK"* ]]; then
        ok "openssl verify -x509_strict: $kid"
    else
        fail "openssl verify -x509_strict: $kid (exit $status)" "$out"
    fi

    lint_one "$leaf" "key certificate $kid"
    for ((i = 1; i < count; i++)); do
        lint_one "$prefix-$i.pem" "CA certificate $i of $kid's chain"
    done

    lint_pair_one "$prefix-1.pem" "$leaf" "attestation CA -> $kid"
    for ((i = 2; i < count; i++)); do
        lint_pair_one "$prefix-$i.pem" "$prefix-$((i - 1)).pem" \
            "$(subject_of "$prefix-$i.pem") -> $(subject_of "$prefix-$((i - 1)).pem")"
    done
    # The top of the chain to the trust anchor, unless the top is the anchor itself.
    top="$prefix-$((count - 1)).pem"
    if [[ $(fingerprint "$top") != $(fingerprint "$work/root-0.pem") ]]; then
        lint_pair_one "$work/root-0.pem" "$top" "root.pem -> $(subject_of "$top")"
    fi
done

# ---------------------------------------------------------------- summary

printf '\n%s: %d key chain(s), %d distinct certificate(s) linted: %d passed, %d failed\n' \
    "$PROG" "${#key_files[@]}" "${#linted[@]}" "$passed" "$failed"
if ((failed > 0)); then
    printf 'failed checks:\n' >&2
    printf '  - %s\n' "${failures[@]}" >&2
    exit 1
fi
