# shellcheck shell=bash
# Helpers shared by the key ceremony scripts in scripts/ceremony/. Sourced, never run.
#
# Every script parses its own options, handing the shared ones to ce_common_option;
# finds signetd (ce_setup); reports the state it is about to change with read-only
# commands (ce_query, which also run under --dry-run); and runs each changing command
# through ce_step, which prints it and, under --dry-run, only prints it. signetd reads
# the token and formats every report: nothing here parses its output beyond a word.
# Diagnostics go to stderr; the plan and the commands' own output go to stdout.

shopt -s inherit_errexit

CE_PROG=${0##*/}
CE_REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
CE_DRY_RUN=0
CE_CONFIG=${SIGNETD_CONFIG:-/etc/signetd/signetd.toml}
# The packaged state directory, never the current one: a transcript left wherever the
# operator happened to stand is a record lost. Without access there, the first write
# fails loudly (ce_transcript_path), naming the directory.
CE_TRANSCRIPT_DIR=${SIGNETD_TRANSCRIPT_DIR:-/var/lib/signetd/ceremonies}
CE_SIGNETD=""
CE_SHIFT=0
CE_STEP_NO=0

ce_say() { printf '\n==> %s\n' "$*"; }
ce_note() { printf '%s: %s\n' "$CE_PROG" "$*" >&2; }
ce_die() {
    printf '%s: error: %s\n' "$CE_PROG" "$*" >&2
    exit 1
}
ce_usage_error() {
    printf '%s: %s\nRun "%s --help" for usage.\n' "$CE_PROG" "$*" "$CE_PROG" >&2
    exit 2
}

# The text of --help shared by every script that takes --config.
ce_common_help() {
    cat <<'EOF'
Common options:
  --config F           signetd config (default: $SIGNETD_CONFIG, else
                       /etc/signetd/signetd.toml)
  --transcript-dir D   where ceremony transcripts are written (default:
                       $SIGNETD_TRANSCRIPT_DIR, else /var/lib/signetd/ceremonies,
                       never the current directory); each is named
                       CEREMONY-YYYYMMDDTHHMMSSZ.json (UTC)
  --signetd PATH       the signetd binary (default: signetd on PATH, else
                       target/release/signetd, else target/debug/signetd of
                       this checkout)
  --dry-run            print the plan (the exact signetd commands) and run only
                       read-only commands; change nothing
  -h, --help           show this help

With SoftHSM2, export SOFTHSM2_CONF (the token's softhsm2.conf) first.
EOF
}

# ce_need_value OPTION ARGS... : the option's value must be there and non-empty.
ce_need_value() {
    (($# >= 2)) || ce_usage_error "$1 needs a value"
    [[ -n $2 ]] || ce_usage_error "$1 must not be empty"
}

# ce_common_option ARGS... : handles one shared option at the front of ARGS. Sets
# CE_SHIFT to how many arguments it used; returns 1 if ARGS[0] is not a shared option.
# shellcheck disable=SC2034 # CE_SHIFT is read by the scripts that source this file.
ce_common_option() {
    CE_SHIFT=1
    local joined=0
    if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" && joined=1; fi
    case "$1" in
        --dry-run) CE_DRY_RUN=1 ;;
        --config | --transcript-dir | --signetd)
            ce_need_value "$@"
            case "$1" in
                --config) CE_CONFIG=$2 ;;
                --transcript-dir) CE_TRANSCRIPT_DIR=$2 ;;
                --signetd) CE_SIGNETD=$2 ;;
            esac
            CE_SHIFT=$((2 - joined))
            ;;
        *) return 1 ;;
    esac
}

# ce_setup config|noconfig: find signetd, check the config (unless noconfig) and the
# transcript directory.
ce_setup() {
    if [[ -z $CE_SIGNETD ]]; then
        for CE_SIGNETD in "$(command -v signetd || true)" "$CE_REPO_ROOT"/target/{release,debug}/signetd ""; do
            [[ -x $CE_SIGNETD ]] && break
        done
        [[ -n $CE_SIGNETD ]] || ce_die "signetd not found: not on PATH, and neither target/release/signetd nor target/debug/signetd exists in $CE_REPO_ROOT (build it with 'cargo build --release', or pass --signetd PATH)"
    elif ! command -v -- "$CE_SIGNETD" >/dev/null; then
        ce_die "--signetd $CE_SIGNETD: no such executable"
    fi
    # A signetd built before attestation has no 'attest' or 'ceremony' commands.
    if ! "$CE_SIGNETD" attest --help >/dev/null 2>&1 || ! "$CE_SIGNETD" ceremony --help >/dev/null 2>&1; then
        ce_die "$CE_SIGNETD has no 'attest' or 'ceremony' command: it is older than the ceremonies; rebuild it (cargo build --release) or pass --signetd PATH"
    fi
    if [[ $1 == config ]]; then
        [[ -f $CE_CONFIG ]] || ce_die "config file not found: $CE_CONFIG (give --config F)"
        # The daemon's own checks (the PIN file's owner and mode among them), in its
        # words, before any step: a PIN file it would refuse stops the ceremony here.
        local problem
        if ! problem=$("$CE_SIGNETD" config check --config "$CE_CONFIG" 2>&1 >/dev/null); then
            ce_die "the config is not usable: ${problem#error: }"
        fi
    fi
    if [[ $CE_TRANSCRIPT_DIR == *[[:cntrl:]]* ]]; then
        ce_usage_error "--transcript-dir must not contain control characters"
    fi
    if ((CE_DRY_RUN)); then
        ce_say "DRY RUN: read-only commands run; the commands that would change the token are only printed"
    fi
}

# ce_check_private_file PATH [WHAT]: dies unless PATH may hold a secret by signetd's
# rule for private files (src/config/files.rs), in the daemon's words: owned by this
# user or root, and no access at all for group or others. WHAT names the file
# (default: the path alone).
ce_check_private_file() {
    local path=$1 what=${2:-} owner mode euid
    [[ -f $path && -r $path ]] || ce_die "${what:+$what: }$path: not found or not readable"
    read -r owner mode < <(stat -L -c '%u %a' -- "$path") || ce_die "cannot stat $path"
    euid=$(id -u)
    if [[ $owner != "$euid" && $owner != 0 ]]; then
        ce_die "${what:+$what: }$path is owned by uid $owner, not by signetd's user (uid $euid) or root: that user could change it; chown $euid $path"
    fi
    if (((8#$mode & 8#077) != 0)); then
        ce_die "${what:+$what: }$path has mode $mode: group or others can have it read or written; chmod 600 $path"
    fi
}

# Print a command the way an operator could paste it.
ce_show() {
    local out="" word
    for word in "$@"; do out+=" $(printf '%q' "$word")"; done
    printf '%s' "${out# }"
}

# ce_query ARGS... : a read-only signetd command; also runs under --dry-run.
ce_query() { "$CE_SIGNETD" "$@"; }

# ce_step ARGS... : a signetd command that changes something. Printed, numbered, and
# run (under --dry-run: only printed).
ce_step() {
    CE_STEP_NO=$((CE_STEP_NO + 1))
    if ((CE_DRY_RUN)); then
        printf '  step %d (not run): %s\n' "$CE_STEP_NO" "$(ce_show "$CE_SIGNETD" "$@")"
        return 0
    fi
    printf '\n$ %s\n' "$(ce_show "$CE_SIGNETD" "$@")"
    "$CE_SIGNETD" "$@"
}

# Prints the attestation CA's state: missing, awaiting-certificate or ready.
ce_ca_state() {
    ce_query attest status --config "$CE_CONFIG" --format state ||
        ce_die "'signetd attest status' failed (message above; with SoftHSM2, check SOFTHSM2_CONF)"
}

ce_report_ca() {
    ce_say "Attestation CA"
    ce_query attest status --config "$CE_CONFIG" ||
        ce_die "'signetd attest status' failed (message above; with SoftHSM2, check SOFTHSM2_CONF)"
}

# Reports incomplete keys with the commands that finish or undo each (on stderr).
# Returns 1 if there are any.
ce_report_problems() {
    local report
    report=$(ce_query keys list --config "$CE_CONFIG" --format problems --transcript-dir "$CE_TRANSCRIPT_DIR") ||
        ce_die "'signetd keys list' failed (message above; with SoftHSM2, check SOFTHSM2_CONF)"
    if [[ -z $report ]]; then
        printf 'no incomplete keys\n'
        return 0
    fi
    printf '%s: %s\n' "$CE_PROG" "$report" >&2
    return 1
}

# ce_stop_if_incomplete FORCE: reports incomplete keys and, unless FORCE is 1, stops the
# ceremony (also a dry run, which says the real run would stop here).
ce_stop_if_incomplete() {
    ce_say "Incomplete keys"
    if ce_report_problems; then
        return 0
    elif (($1)); then
        ce_note "going ahead despite the incomplete keys above (--force)"
    elif ((CE_DRY_RUN)); then
        ce_die "dry run: the ceremony would stop here; finish or undo the incomplete keys above first (or pass --force)"
    else
        ce_die "finish or undo the incomplete keys above first (or pass --force to go ahead anyway)"
    fi
}

ce_require_ready_ca() {
    local state
    state=$(ce_ca_state)
    if [[ $state != ready ]]; then
        ce_report_ca >&2 || true
        case "$state" in
            missing) ce_die "the token has no attestation CA yet: run scripts/ceremony/root.sh first" ;;
            *) ce_die "the attestation CA is not certified yet ($state): finish the root ceremony first (scripts/ceremony/root.sh shows how)" ;;
        esac
    fi
}

# ce_transcript_path CEREMONY: a fresh transcript file name in the transcript directory,
# CEREMONY-YYYYMMDDTHHMMSSZ.json (a -2, -3, ... suffix if that name is taken). Creates
# the directory unless this is a dry run.
ce_transcript_path() {
    local stamp path n=2
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    if ((!CE_DRY_RUN)); then
        mkdir -p -- "$CE_TRANSCRIPT_DIR" || ce_die "cannot create the transcript directory $CE_TRANSCRIPT_DIR"
    fi
    path="$CE_TRANSCRIPT_DIR/$1-$stamp.json"
    while [[ -e $path ]]; do
        path="$CE_TRANSCRIPT_DIR/$1-$stamp-$n.json"
        n=$((n + 1))
    done
    printf '%s\n' "$path"
}

# Prints the transcripts in the transcript directory that are not signed yet.
ce_pending_transcripts() {
    ce_query ceremony pending "$CE_TRANSCRIPT_DIR"
}

# Prints the pending transcripts the config's attestation CA may sign: those recording
# another CA key (one destroyed by 'attest init-ca --undo') are left out, with a warning.
ce_signable_transcripts() {
    ce_query ceremony pending --config "$CE_CONFIG" "$CE_TRANSCRIPT_DIR"
}

# Reports where a transcript was written (or would be).
ce_report_transcript() {
    if ((CE_DRY_RUN)); then
        printf '\ntranscript would be written to %s\n' "$1"
    elif [[ -f $1 ]]; then
        printf '\ntranscript: %s\n' "$1"
    else
        ce_note "warning: signetd reported success but wrote no transcript at $1"
    fi
}

ce_done() {
    if ((CE_DRY_RUN)); then
        ce_say "Dry run finished: nothing was changed"
    else
        ce_say "$*"
    fi
}
