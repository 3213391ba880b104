#!/usr/bin/env bash
# Key ceremony: initialize the PKCS#11 token signetd will use (or verify an existing one).
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --label LABEL --so-pin-file F --pin-file F
           [--new-pins] [--softhsm-dir DIR] [--module M]
           [--transcript-dir D] [--signetd PATH] [--dry-run]

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
  --so-pin-file F      file holding the security officer PIN
  --pin-file F         file holding the user PIN signetd logs in with; name it
                       in the config's [pkcs11] pin_file
  --new-pins           create both PIN files first, each with a random PIN (16
                       hex characters), mode 0600; refuses if either exists.
                       Their directories must exist.
  --softhsm-dir DIR    SoftHSM2 only: keep the token store in DIR (created mode
                       0700): DIR/softhsm2.conf and DIR/tokens/. Prints the
                       SOFTHSM2_CONF= line the ceremonies and the daemon need.
                       No PIN file may be inside DIR: a backup of the token
                       must not carry its PINs
  --module M           PKCS#11 module (default: \$SIGNETD_PKCS11_MODULE, else
                       SoftHSM2's libsofthsm2.so found in the usual places;
                       give your HSM vendor's module for a real HSM)
  --transcript-dir D   where the transcript is written (default
                       \$SIGNETD_TRANSCRIPT_DIR, else /var/lib/signetd/ceremonies)
  --signetd PATH       the signetd binary (default: signetd on PATH, else
                       target/release/signetd, else target/debug/signetd)
  --dry-run            print the plan and change nothing
  -h, --help           show this help

PIN files must be accessible to their owner only (mode 0600 or stricter), as
the daemon requires; a PIN file that group or others can access is refused.
The daemon's user must own the user PIN file (or root, readable by it): run
this as root and chown it, or run it as signetd's user.

Without --softhsm-dir, SoftHSM2 keeps the token where SOFTHSM2_CONF (or its
system-wide softhsm2.conf) says.

Example (SoftHSM2, as README.md's "Running it" does):
  scripts/ceremony/$CE_PROG --label signetd --new-pins \\
      --so-pin-file /root/signetd-so.pin --pin-file /etc/signetd/user.pin \\
      --softhsm-dir /var/lib/signetd/token \\
      --transcript-dir /var/lib/signetd/ceremonies
EOF
}

label=""
module=""
so_pin_file=""
pin_file=""
softhsm_dir=""
new_pins=0

while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --config | --config=*)
            ce_usage_error "init-token takes no --config: the token does not exist yet (give --module and --label)"
            ;;
        --new-pins)
            new_pins=1
            shift
            ;;
        --label | --module | --so-pin-file | --pin-file | --softhsm-dir)
            ce_need_value "$@"
            case "$1" in
                --label) label=$2 ;;
                --module) module=$2 ;;
                --so-pin-file) so_pin_file=$2 ;;
                --pin-file) pin_file=$2 ;;
                --softhsm-dir) softhsm_dir=$2 ;;
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
[[ $softhsm_dir != *[[:cntrl:]]* ]] || ce_usage_error "--softhsm-dir must not contain control characters"

# abspath PATH: PATH made absolute without resolving symbolic links or needing it to exist.
abspath() { realpath -m -s -- "$1"; }

if [[ -n $softhsm_dir ]]; then
    softhsm_dir=$(abspath "$softhsm_dir")
    for f in "$so_pin_file" "$pin_file"; do
        case "$(abspath "$f")/" in
            "$softhsm_dir"/*)
                ce_usage_error "PIN file $f is inside --softhsm-dir $softhsm_dir: keep PIN files out of the token directory, so a backup of the token does not carry them"
                ;;
        esac
    done
    [[ ! -e $softhsm_dir || -d $softhsm_dir ]] || ce_die "--softhsm-dir $softhsm_dir exists and is not a directory"
fi

# The daemon refuses a PIN file its group or others can access at all (docs: the
# [pkcs11] pin_file rule); a ceremony that accepted one would only fail later, at start.
# check_pin_file FILE OPTION
check_pin_file() {
    [[ -f $1 && -r $1 ]] || ce_die "PIN file not found or not readable: $1 (create it with a PIN on one line, chmod 600, or pass --new-pins to have one made)"
    ce_check_private_file "$1" "$2"
}

# new_pin FILE: a new file holding a random PIN, mode 0600; never replaces one.
new_pin() {
    local f=$1 dir pin
    dir=$(dirname -- "$f")
    [[ -d $dir ]] || ce_die "cannot create PIN file $f: directory $dir does not exist"
    [[ ! -e $f && ! -L $f ]] || ce_die "--new-pins: $f already exists; it is not replaced (a token may depend on it). Remove --new-pins to use it, or name another file"
    if ((CE_DRY_RUN)); then
        printf '  would create %s (random PIN, mode 0600)\n' "$f"
        return
    fi
    pin=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    [[ ${#pin} == 16 ]] || ce_die "cannot read random bytes from /dev/urandom"
    # noclobber: a file that appeared since the check above is not overwritten.
    (umask 077 && set -o noclobber && printf '%s\n' "$pin" >"$f") || ce_die "cannot create PIN file $f"
    printf 'created %s (random PIN, mode 0600)\n' "$f"
}

ce_setup noconfig
if ((new_pins)); then
    ce_say "PIN files"
    new_pin "$so_pin_file"
    new_pin "$pin_file"
fi
if ((!CE_DRY_RUN || !new_pins)); then
    check_pin_file "$so_pin_file" --so-pin-file
    check_pin_file "$pin_file" --pin-file
fi

sole_args=()
if [[ -n $softhsm_dir ]]; then
    export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"
    conf="directories.tokendir = $softhsm_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false"
    ce_say "SoftHSM2 token store in $softhsm_dir"
    if ((CE_DRY_RUN)); then
        printf '  would create %s/tokens (mode 0700) and %s\n' "$softhsm_dir" "$SOFTHSM2_CONF"
    else
        (umask 077 && mkdir -p -- "$softhsm_dir/tokens") || ce_die "cannot create $softhsm_dir/tokens"
        if [[ -f $SOFTHSM2_CONF ]]; then
            [[ $(<"$SOFTHSM2_CONF") == "$conf" ]] ||
                ce_die "$SOFTHSM2_CONF exists with other settings than this script writes; it is left alone (move it away, or use another --softhsm-dir)"
        else
            (umask 077 && printf '%s\n' "$conf" >"$SOFTHSM2_CONF") || ce_die "cannot write $SOFTHSM2_CONF"
        fi
    fi
    # One token per store: a store that holds another label is refused, not added to.
    sole_args=(--sole)
fi

# signetd checks the label and finds SoftHSM2's module.
module_args=()
if [[ -n $module ]]; then module_args=(--module "$module"); fi

transcript=$(ce_transcript_path init-token)

ce_say "Token ceremony: token '$label' through ${module:-${SIGNETD_PKCS11_MODULE:-SoftHSM2}}"
if [[ -n ${SOFTHSM2_CONF:-} ]]; then
    printf 'SOFTHSM2_CONF=%s\n' "$SOFTHSM2_CONF"
fi
if ((CE_DRY_RUN)); then
    printf 'plan:\n'
fi

if ! out=$(ce_step ceremony init-token "${module_args[@]}" --label "$label" "${sole_args[@]}" \
    --so-pin-file "$so_pin_file" --pin-file "$pin_file" --format env --transcript "$transcript"); then
    printf '%s\n' "$out"
    cat >&2 <<EOF

$CE_PROG: 'signetd ceremony init-token' failed (message above); nothing else was run.
  - If it failed after C_InitToken (for example at C_InitPIN), the token labelled
    '$label' exists: run this script again, without --new-pins, to finish or verify
    it. If the user PIN cannot be set, re-initialize the slot with the SO PIN
    (C_InitToken erases it).
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
    if [[ -n $softhsm_dir ]]; then
        cat <<EOF

The module finds this token through SOFTHSM2_CONF: export it in the shell that
runs the ceremonies, and give it to the daemon (systemd: Environment= in a
drop-in, as README.md shows):

SOFTHSM2_CONF=$SOFTHSM2_CONF
EOF
    fi
fi
ce_done "Token ceremony finished"
