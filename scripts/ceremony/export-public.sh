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

then checks every DIR/keys/KID.pem against DIR/root.pem, and against its
JWKS entry when it is published, and that every published key has its chain:

  signetd attest verify --root DIR/root.pem --bundle DIR

writes DIR/SHA256SUMS (check it with: cd DIR && sha256sum -c SHA256SUMS), and
verifies the signed transcripts in the transcript directory against
DIR/root.pem and the token (signetd ceremony verify --config). Pending
transcripts are reported; transcripts of ceremonies that did not complete, of
another token, or naming keys the token no longer holds are flagged (FLAG).
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
verify=(attest verify --root "$out/root.pem" --bundle "$out")

if ((CE_DRY_RUN)); then
    printf '  then (read-only): %s\n' "$(ce_show "$CE_SIGNETD" "${verify[@]}")"
    printf '  then: write %s/SHA256SUMS; verify the signed transcripts in %s with %s\n' "$out" "$CE_TRANSCRIPT_DIR" \
        "$(ce_show "$CE_SIGNETD" ceremony verify TRANSCRIPT --root "$out/root.pem")"
    ce_done "Export"
    exit 0
fi

for f in root.pem ca-chain.pem jwks.json; do
    [[ -s $out/$f ]] || ce_die "signetd attest export wrote no $out/$f"
done

ce_say "Verifying every key certificate against $out/root.pem"
printf '$ %s\n' "$(ce_show "$CE_SIGNETD" "${verify[@]}")"
failures=0
ce_query "${verify[@]}" || failures=$((failures + 1))
shopt -s nullglob
key_files=("$out"/keys/*.pem)
transcript_files=("$CE_TRANSCRIPT_DIR"/*.json)
shopt -u nullglob

ce_say "Writing $out/SHA256SUMS"
(
    cd -- "$out"
    sha256sum -- root.pem ca-chain.pem jwks.json "${key_files[@]#"$out/"}" >SHA256SUMS.tmp
    mv -f -- SHA256SUMS.tmp SHA256SUMS
    sha256sum --quiet -c SHA256SUMS
) || ce_die "cannot write $out/SHA256SUMS"
cat -- "$out/SHA256SUMS"

ce_say "Checking the transcripts in $CE_TRANSCRIPT_DIR against $out/root.pem"
declare -A pending=()
while IFS= read -r t; do pending[$t]=1; done < <(ce_pending_transcripts)
transcripts=0
flagged=0
for t in "${transcript_files[@]}"; do
    if [[ -n ${pending[$t]:-} ]]; then
        ce_note "warning: $t is pending (unsigned): sign it with scripts/ceremony/root.sh (or signetd ceremony sign)"
        continue
    fi
    transcripts=$((transcripts + 1))
    # Checked against the token too: a ceremony that failed, a transcript of another
    # token, a key the token no longer holds are flagged ("flag: ..." lines).
    if report=$(ce_query ceremony verify "$t" --root "$out/root.pem" --config "$CE_CONFIG" 2>&1); then
        flags=$(grep '^flag: ' <<<"$report" || true)
        if [[ -n $flags ]]; then
            flagged=$((flagged + 1))
            printf 'FLAG %s:\n%s\n' "$t" "${flags//flag: /       }"
        else
            printf 'ok   %s\n' "$t"
        fi
    else
        failures=$((failures + 1))
        printf 'FAIL %s: %s\n' "$t" "$(tail -n 1 <<<"$report")"
    fi
done
if ((transcripts == 0)); then
    printf 'no signed transcripts in %s\n' "$CE_TRANSCRIPT_DIR"
fi
if ((flagged > 0)); then
    ce_note "warning: $flagged transcript(s) flagged (see FLAG above): valid records of ceremonies that failed, or whose keys this token no longer holds; they are kept, and published as they are"
fi

if ((failures > 0)); then
    ce_die "$failures check(s) failed (see above); do not publish $out"
fi
ce_done "Export ceremony finished: ${#key_files[@]} key certificate(s) and $transcripts transcript(s) verified; publish $out"
