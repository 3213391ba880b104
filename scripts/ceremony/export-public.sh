#!/usr/bin/env bash
# Key ceremony: export the public attestation material, verify it, and checksum it.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --out DIR [common options]

Export ceremony: writes the public attestation material for verifiers and
auditors into DIR (which must be new or empty):

  signetd attest export --config F --out DIR

  DIR/root.pem         the trust anchor: the top of the attestation CA chain
  DIR/ca-chain.pem     the attestation CA certificate and the chain above it
  DIR/keys/KID.pem     each complete key's certificate, then the CA chain
  DIR/jwks.json        the JWKS of the published keys of JWT issuers, each
                       with x5c and x5t#S256

then checks every DIR/keys/KID.pem against DIR/root.pem, and the JWKS entry
of each key in it:

  signetd attest verify --root DIR/root.pem --chain DIR/keys/KID.pem \\
      [--jwks-file DIR/jwks.json --kid KID]

writes DIR/SHA256SUMS (check it with: cd DIR && sha256sum -c SHA256SUMS), and
verifies the signed transcripts in the transcript directory against
DIR/root.pem (signetd ceremony verify). Pending transcripts are reported.
Any failed check makes the script exit non-zero. Export writes no transcript:
it changes nothing in the token.

Options:
  --out DIR   the directory to write (created if missing; must be empty)

EOF
    ce_common_help
}

out=""

while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --out)
            ce_need_value "$@"
            out=$2
            shift 2
            ;;
        --out=*)
            out=${1#*=}
            shift
            ;;
        -*)
            ce_common_option "$@" || ce_usage_error "unknown option: $1"
            shift "$CE_SHIFT"
            ;;
        *) ce_usage_error "unexpected argument: $1" ;;
    esac
done
[[ -n $out ]] || ce_usage_error "--out is required"

if [[ -e $out && ! -d $out ]]; then
    ce_die "$out exists and is not a directory"
fi
if [[ -d $out ]] && [[ -n $(find "$out" -mindepth 1 -maxdepth 1 -print -quit) ]]; then
    ce_die "$out is not empty; export into a new directory so no stale file is published"
fi

ce_setup config
ce_require_ready_ca
ce_report_ca

ce_say "Export ceremony into $out"
if ((CE_DRY_RUN)); then
    printf 'plan:\n'
fi
ce_step attest export --config "$CE_CONFIG" --out "$out" || ce_die "'signetd attest export' failed (message above)"

if ((CE_DRY_RUN)); then
    printf '  then (read-only): for each %s/keys/KID.pem: %s\n' "$out" \
        "$(ce_show "$CE_SIGNETD" attest verify --root "$out/root.pem" --chain "$out/keys/KID.pem" --jwks-file "$out/jwks.json" --kid KID)"
    printf '  then: write %s/SHA256SUMS; verify the signed transcripts in %s with %s\n' "$out" "$CE_TRANSCRIPT_DIR" \
        "$(ce_show "$CE_SIGNETD" ceremony verify TRANSCRIPT --root "$out/root.pem")"
    ce_done "Export"
    exit 0
fi

for f in root.pem ca-chain.pem jwks.json; do
    [[ -s $out/$f ]] || ce_die "signetd attest export wrote no $out/$f"
done

# ---------------------------------------------------------------- verify each key

ce_say "Verifying every key certificate against $out/root.pem"
if command -v jq >/dev/null 2>&1; then
    mapfile -t published < <(jq -r '.keys[]?.kid // empty' "$out/jwks.json")
else
    mapfile -t published < <(python3 -c '
import json, sys
for key in json.load(open(sys.argv[1])).get("keys", []):
    if key.get("kid"):
        print(key["kid"])
' "$out/jwks.json")
fi
declare -A in_jwks=()
for kid in "${published[@]}"; do
    in_jwks[$kid]=1
done

failures=0
checked=0
shopt -s nullglob
key_files=("$out"/keys/*.pem)
shopt -u nullglob
for pem in "${key_files[@]}"; do
    kid=$(basename -- "$pem" .pem)
    args=(attest verify --root "$out/root.pem" --chain "$pem")
    if [[ -n ${in_jwks[$kid]:-} ]]; then
        args+=(--jwks-file "$out/jwks.json" --kid "$kid")
        unset "in_jwks[$kid]"
    fi
    printf '\n$ %s\n' "$(ce_show "$CE_SIGNETD" "${args[@]}")"
    checked=$((checked + 1))
    if ! ce_query "${args[@]}"; then
        failures=$((failures + 1))
        ce_note "FAILED: $pem does not verify against $out/root.pem"
    fi
done
for kid in "${!in_jwks[@]}"; do
    failures=$((failures + 1))
    ce_note "FAILED: $out/jwks.json publishes $kid but there is no $out/keys/$kid.pem"
done
if ((checked == 0)); then
    ce_note "warning: no key certificates in $out/keys (no complete keys yet?)"
fi

# ---------------------------------------------------------------- checksums

ce_say "Writing $out/SHA256SUMS"
(
    cd -- "$out"
    files=(root.pem ca-chain.pem jwks.json)
    shopt -s nullglob
    files+=(keys/*.pem)
    sha256sum -- "${files[@]}" >SHA256SUMS.tmp
    mv -f -- SHA256SUMS.tmp SHA256SUMS
    sha256sum --quiet -c SHA256SUMS
) || ce_die "cannot write $out/SHA256SUMS"
cat -- "$out/SHA256SUMS"

# ---------------------------------------------------------------- transcripts

ce_say "Checking the transcripts in $CE_TRANSCRIPT_DIR against $out/root.pem"
transcripts=0
if [[ -d $CE_TRANSCRIPT_DIR ]]; then
    mapfile -t pending < <(ce_pending_transcripts)
    declare -A is_pending=()
    for t in "${pending[@]}"; do
        is_pending[$t]=1
    done
    shopt -s nullglob
    all=("$CE_TRANSCRIPT_DIR"/*.json)
    shopt -u nullglob
    for t in "${all[@]}"; do
        if [[ -n ${is_pending[$t]:-} ]]; then
            ce_note "warning: $t is pending (unsigned): sign it with scripts/ceremony/root.sh (or signetd ceremony sign)"
            continue
        fi
        transcripts=$((transcripts + 1))
        if verdict=$(ce_query ceremony verify "$t" --root "$out/root.pem" 2>&1 >/dev/null); then
            printf 'ok   %s\n' "$t"
        else
            failures=$((failures + 1))
            printf 'FAIL %s: %s\n' "$t" "$verdict"
        fi
    done
fi
if ((transcripts == 0)); then
    printf 'no signed transcripts in %s\n' "$CE_TRANSCRIPT_DIR"
fi

if ((failures > 0)); then
    ce_die "$failures check(s) failed (see above); do not publish $out"
fi
ce_done "Export ceremony finished: $checked key certificate(s) and $transcripts transcript(s) verified; publish $out"
