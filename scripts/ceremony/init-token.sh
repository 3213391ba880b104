#!/usr/bin/env bash
# Key ceremony: initialize the PKCS#11 token signetd will use (or verify an existing one).
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --label LABEL --so-pin-file F --pin-file F
           [--module M] [--transcript-dir D] [--signetd PATH] [--dry-run]

Token ceremony: initializes the first uninitialized slot of the PKCS#11 module
as a token labelled LABEL (C_InitToken with the SO PIN, then C_InitPIN with the
user PIN). If a token labelled LABEL already exists, it is verified instead
(the user PIN logs in) and left unchanged.

Runs:  signetd ceremony init-token --module M --label LABEL \\
           --so-pin-file F --pin-file F --transcript TRANSCRIPT

The transcript is written unsigned (pending): no attestation CA exists yet.
scripts/ceremony/root.sh signs it once the CA is ready; keep both in the same
transcript directory.

Options:
  --label LABEL        token label (at most 32 bytes)
  --so-pin-file F      file holding the security officer PIN (mode 0600)
  --pin-file F         file holding the user PIN signetd logs in with (0600)
  --module M           PKCS#11 module (default: \$SIGNETD_PKCS11_MODULE, else
                       SoftHSM2's libsofthsm2.so found in the usual places;
                       give your HSM vendor's module for a real HSM)
  --transcript-dir D   where the transcript is written (default ./ceremonies,
                       or \$SIGNETD_TRANSCRIPT_DIR)
  --signetd PATH       the signetd binary (default: signetd on PATH, else
                       target/release/signetd, else target/debug/signetd)
  --dry-run            print the plan and change nothing
  -h, --help           show this help

With SoftHSM2, SOFTHSM2_CONF must point to the softhsm2.conf whose token
directory should hold the token.

Example:
  scripts/ceremony/$CE_PROG --label signetd \\
      --so-pin-file /root/so.pin --pin-file /etc/signetd/user.pin
EOF
}

label=""
module=""
so_pin_file=""
pin_file=""

while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --config | --config=*)
            ce_usage_error "init-token takes no --config: the token does not exist yet (give --module and --label)"
            ;;
        --label | --module | --so-pin-file | --pin-file)
            ce_need_value "$@"
            case "$1" in
                --label) label=$2 ;;
                --module) module=$2 ;;
                --so-pin-file) so_pin_file=$2 ;;
                --pin-file) pin_file=$2 ;;
            esac
            shift 2
            ;;
        -*)
            ce_common_option "$@" || ce_usage_error "unknown option: $1"
            shift "$CE_SHIFT"
            ;;
        *) ce_usage_error "unexpected argument: $1" ;;
    esac
done

[[ -n $label ]] || ce_usage_error "--label is required"
[[ -n $so_pin_file ]] || ce_usage_error "--so-pin-file is required"
[[ -n $pin_file ]] || ce_usage_error "--pin-file is required"
for f in "$so_pin_file" "$pin_file"; do
    [[ -f $f && -r $f ]] || ce_die "PIN file not found or not readable: $f"
done
# signetd checks the label and the PIN files' modes, and finds SoftHSM2's module.
module_args=()
if [[ -n $module ]]; then module_args=(--module "$module"); fi

ce_setup noconfig
transcript=$(ce_transcript_path init-token)

ce_say "Token ceremony: token '$label' through ${module:-${SIGNETD_PKCS11_MODULE:-SoftHSM2}}"
if [[ -n ${SOFTHSM2_CONF:-} ]]; then
    printf 'SOFTHSM2_CONF=%s\n' "$SOFTHSM2_CONF"
fi
if ((CE_DRY_RUN)); then
    printf 'plan:\n'
fi

if ! out=$(ce_step ceremony init-token "${module_args[@]}" --label "$label" \
    --so-pin-file "$so_pin_file" --pin-file "$pin_file" --format env --transcript "$transcript"); then
    printf '%s\n' "$out"
    cat >&2 <<EOF

$CE_PROG: 'signetd ceremony init-token' failed (message above); nothing else was run.
  - If it failed after C_InitToken (for example at C_InitPIN), the token labelled
    '$label' exists: run this script again to finish or verify it. If the user PIN
    cannot be set, re-initialize the slot with the SO PIN (C_InitToken erases it).
  - A token labelled '$label' whose user PIN differs from $pin_file cannot be
    verified: check the PIN file.
EOF
    exit 1
fi
printf '%s\n' "$out"

ce_report_transcript "$transcript"
if ((!CE_DRY_RUN)); then
    module=$(sed -n 's/^SIGNETD_PKCS11_MODULE=//p' <<<"$out")
    cat <<EOF
The transcript is pending (unsigned): scripts/ceremony/root.sh signs it with
the attestation CA key once the CA exists. Keep it in $CE_TRANSCRIPT_DIR.

Next: put the token in signetd's config and run scripts/ceremony/root.sh --config F:

[pkcs11]
module = "$module"
token_label = "$label"
pin_file = "$(realpath -- "$pin_file")"
EOF
fi
ce_done "Token ceremony finished"
