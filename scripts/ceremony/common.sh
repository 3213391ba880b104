# shellcheck shell=bash
# Helpers shared by the key ceremony scripts in scripts/ceremony/. Sourced, never run.
#
# Every script:
#   - parses its own options, handing the shared ones to ce_common_option;
#   - finds signetd (ce_setup), reports the state it is about to change with read-only
#     commands (ce_query: these also run under --dry-run);
#   - runs each changing command through ce_step, which prints it and, under
#     --dry-run, only prints it.
# Diagnostics go to stderr; the plan and the commands' own output go to stdout.

if [[ -n ${CE_COMMON_LOADED:-} ]]; then
    return 0
fi
CE_COMMON_LOADED=1

shopt -s inherit_errexit

CE_PROG=${0##*/}
CE_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
CE_REPO_ROOT=$(cd -- "$CE_DIR/../.." && pwd -P)

# Settings shared by every script; ce_common_option fills them in.
CE_DRY_RUN=0
CE_CONFIG=""
CE_CONFIG_GIVEN=0
CE_TRANSCRIPT_DIR=${SIGNETD_TRANSCRIPT_DIR:-./ceremonies}
CE_SIGNETD=""
CE_SHIFT=0
# Steps shown so far (numbered in the plan).
CE_STEP_NO=0

# ---------------------------------------------------------------- messages

ce_say() {
    printf '\n==> %s\n' "$*"
}

ce_note() {
    printf '%s: %s\n' "$CE_PROG" "$*" >&2
}

ce_die() {
    printf '%s: error: %s\n' "$CE_PROG" "$*" >&2
    exit 1
}

ce_usage_error() {
    printf '%s: %s\n' "$CE_PROG" "$*" >&2
    printf 'Run "%s --help" for usage.\n' "$CE_PROG" >&2
    exit 2
}

# The text of --help shared by every script that takes --config.
ce_common_help() {
    cat <<'EOF'
Common options:
  --config F           signetd config (default: $SIGNETD_CONFIG, else
                       /etc/signetd/signetd.toml)
  --transcript-dir D   where ceremony transcripts are written (default:
                       ./ceremonies, or $SIGNETD_TRANSCRIPT_DIR); each is named
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

# ce_common_option ARGS... : handles one shared option at the front of ARGS. Sets
# CE_SHIFT to how many arguments it used; returns 1 if ARGS[0] is not a shared option.
# shellcheck disable=SC2034 # CE_SHIFT is read by the scripts that source this file.
ce_common_option() {
    CE_SHIFT=1
    case "$1" in
        --dry-run) CE_DRY_RUN=1 ;;
        --config | --transcript-dir | --signetd)
            (($# >= 2)) || ce_usage_error "$1 needs a value"
            [[ -n $2 ]] || ce_usage_error "$1 must not be empty"
            ce_set_common "$1" "$2"
            CE_SHIFT=2
            ;;
        --config=* | --transcript-dir=* | --signetd=*)
            [[ -n ${1#*=} ]] || ce_usage_error "${1%%=*} must not be empty"
            ce_set_common "${1%%=*}" "${1#*=}"
            ;;
        *) return 1 ;;
    esac
}

ce_set_common() {
    case "$1" in
        --config) CE_CONFIG=$2 CE_CONFIG_GIVEN=1 ;;
        --transcript-dir) CE_TRANSCRIPT_DIR=$2 ;;
        --signetd) CE_SIGNETD=$2 ;;
    esac
}

# ce_need_value OPTION ARGS... : the value of an option taking one, or a usage error.
ce_need_value() {
    (($# >= 2)) || ce_usage_error "$1 needs a value"
    [[ -n $2 ]] || ce_usage_error "$1 must not be empty"
}

# ---------------------------------------------------------------- set-up

ce_find_signetd() {
    if [[ -n $CE_SIGNETD ]]; then
        if [[ $CE_SIGNETD == */* ]]; then
            [[ -x $CE_SIGNETD ]] || ce_die "--signetd $CE_SIGNETD: no such executable"
        else
            command -v -- "$CE_SIGNETD" >/dev/null 2>&1 ||
                ce_die "--signetd $CE_SIGNETD: not found on PATH"
        fi
        return
    fi
    if command -v signetd >/dev/null 2>&1; then
        CE_SIGNETD=$(command -v signetd)
        return
    fi
    local candidate
    for candidate in "$CE_REPO_ROOT/target/release/signetd" "$CE_REPO_ROOT/target/debug/signetd"; do
        if [[ -x $candidate ]]; then
            CE_SIGNETD=$candidate
            return
        fi
    done
    ce_die "signetd not found: not on PATH, and neither target/release/signetd nor target/debug/signetd exists in $CE_REPO_ROOT (build it with 'cargo build --release', or pass --signetd PATH)"
}

# ce_setup config|noconfig: resolve signetd, the config (unless noconfig) and check the
# transcript directory.
ce_setup() {
    ce_find_signetd
    # A signetd built before attestation has no 'attest' or 'ceremony' commands.
    if ! "$CE_SIGNETD" attest --help >/dev/null 2>&1 || ! "$CE_SIGNETD" ceremony --help >/dev/null 2>&1; then
        ce_die "$CE_SIGNETD has no 'attest' or 'ceremony' command: it is older than the ceremonies; rebuild it (cargo build --release) or pass --signetd PATH"
    fi
    if ! command -v jq >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
        ce_die "the ceremony scripts read signetd's JSON output with jq or python3; install one (apt-get install -y jq)"
    fi
    if [[ $1 == config ]]; then
        if ((!CE_CONFIG_GIVEN)); then
            CE_CONFIG=${SIGNETD_CONFIG:-/etc/signetd/signetd.toml}
        fi
        [[ -f $CE_CONFIG ]] || ce_die "config file not found: $CE_CONFIG (give --config F)"
    fi
    if [[ $CE_TRANSCRIPT_DIR == *[[:cntrl:]]* ]]; then
        ce_usage_error "--transcript-dir must not contain control characters"
    fi
    if ((CE_DRY_RUN)); then
        ce_say "DRY RUN: read-only commands run; the commands that would change the token are only printed"
    fi
}

# ---------------------------------------------------------------- running signetd

# Print a command the way an operator could paste it.
ce_show() {
    local out="" word
    for word in "$@"; do
        out+=" $(printf '%q' "$word")"
    done
    printf '%s' "${out# }"
}

# ce_query ARGS... : a read-only signetd command; also runs under --dry-run.
ce_query() {
    "$CE_SIGNETD" "$@"
}

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

# ---------------------------------------------------------------- JSON

# A JSON document on stdin; prints a top-level field. MODE "str": the string value (or
# nothing); "lines": an array of strings, one per line; "has": "yes" or "no".
ce_json() {
    local mode=$1 field=$2
    if command -v jq >/dev/null 2>&1; then
        case "$mode" in
            str) jq -r --arg f "$field" '.[$f] // empty | tostring' ;;
            lines) jq -r --arg f "$field" '(.[$f] // [])[] | tostring | gsub("\n"; " ")' ;;
            has) jq -r --arg f "$field" 'if has($f) then "yes" else "no" end' ;;
        esac
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c '
import json, sys
mode, field = sys.argv[1], sys.argv[2]
doc = json.load(sys.stdin)
value = doc.get(field) if isinstance(doc, dict) else None
if mode == "has":
    print("yes" if isinstance(doc, dict) and field in doc else "no")
elif mode == "str":
    if value is not None:
        print(value)
else:
    for item in value or []:
        print(str(item).replace("\n", " "))
' "$mode" "$field"
    else
        ce_die "reading signetd's JSON output needs jq or python3; install one (apt-get install -y jq)"
    fi
}

# ---------------------------------------------------------------- state reports

# Prints the attestation CA's state: missing, awaiting-certificate or ready.
ce_ca_state() {
    local out state
    out=$(ce_query attest status --config "$CE_CONFIG" --json) ||
        ce_die "'signetd attest status' failed (is SOFTHSM2_CONF / the config right?)"
    state=$(printf '%s\n' "$out" | ce_json str state) ||
        ce_die "cannot read 'signetd attest status --json' output: $out"
    case "$state" in
        missing | awaiting-certificate | ready) printf '%s\n' "$state" ;;
        *) ce_die "unexpected attestation CA state '$state' from 'signetd attest status --json'" ;;
    esac
}

# Shows the CA's state as signetd reports it.
ce_report_ca() {
    ce_say "Attestation CA"
    ce_query attest status --config "$CE_CONFIG" ||
        ce_die "'signetd attest status' failed (is SOFTHSM2_CONF / the config right?)"
}

# Reports incomplete keys (keys list --json "problems") with the commands that finish or
# undo each. Returns 1 if there are any.
ce_report_problems() {
    local out
    out=$(ce_query keys list --config "$CE_CONFIG" --json) ||
        ce_die "'signetd keys list' failed (is SOFTHSM2_CONF / the config right?)"
    local -a problems=()
    mapfile -t problems < <(printf '%s\n' "$out" | ce_json lines problems)
    if ((${#problems[@]} == 0)); then
        printf 'no incomplete keys\n'
        return 0
    fi
    printf '%s: the token holds %d incomplete or unusable key(s):\n' "$CE_PROG" "${#problems[@]}" >&2
    local problem kid
    local -A kids=()
    for problem in "${problems[@]}"; do
        printf '  - %s\n' "$problem" >&2
        if [[ $problem =~ ^key\ ([A-Za-z0-9._~-]+) ]]; then
            kid=${BASH_REMATCH[1]}
            kids[$kid]=1
        fi
    done
    if ((${#kids[@]} > 0)); then
        printf '\nAn interrupted key generation is finished or undone with:\n' >&2
        for kid in "${!kids[@]}"; do
            printf '  finish: %s\n' "$(ce_show "$CE_SIGNETD" keys finish --config "$CE_CONFIG" --kid "$kid")" >&2
            printf '  undo:   %s\n' "$(ce_show "$CE_SIGNETD" keys destroy-incomplete --config "$CE_CONFIG" --kid "$kid")" >&2
        done
        printf '(see docs/ceremonies.md, "Recovering from a failure midway")\n' >&2
    fi
    return 1
}

# ce_stop_if_incomplete FORCE: reports incomplete keys and, unless FORCE is 1, stops the
# ceremony (also a dry run, which says the real run would stop here).
ce_stop_if_incomplete() {
    ce_say "Incomplete keys"
    if ce_report_problems; then
        return 0
    fi
    if (($1)); then
        ce_note "going ahead despite the incomplete keys above (--force)"
    elif ((CE_DRY_RUN)); then
        ce_die "dry run: the ceremony would stop here; finish or undo the incomplete keys above first (or pass --force)"
    else
        ce_die "finish or undo the incomplete keys above first (or pass --force to go ahead anyway)"
    fi
}

# Requires a ready attestation CA.
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

# ---------------------------------------------------------------- transcripts

# ce_transcript_path CEREMONY: a fresh transcript file name in the transcript directory,
# CEREMONY-YYYYMMDDTHHMMSSZ.json (a -2, -3, ... suffix if that name is taken). Creates
# the directory unless this is a dry run.
ce_transcript_path() {
    local ceremony=$1 stamp path n=2
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    if ((!CE_DRY_RUN)) && [[ ! -d $CE_TRANSCRIPT_DIR ]]; then
        mkdir -p -- "$CE_TRANSCRIPT_DIR" || ce_die "cannot create the transcript directory $CE_TRANSCRIPT_DIR"
    fi
    path="$CE_TRANSCRIPT_DIR/$ceremony-$stamp.json"
    while [[ -e $path ]]; do
        path="$CE_TRANSCRIPT_DIR/$ceremony-$stamp-$n.json"
        n=$((n + 1))
    done
    printf '%s\n' "$path"
}

# Prints the transcripts (*.json) in the transcript directory that are not signed yet.
ce_pending_transcripts() {
    [[ -d $CE_TRANSCRIPT_DIR ]] || return 0
    local file signed
    for file in "$CE_TRANSCRIPT_DIR"/*.json; do
        [[ -f $file ]] || continue
        signed=$(ce_json has signature <"$file" 2>/dev/null) || {
            ce_note "warning: $file is not valid JSON; skipped"
            continue
        }
        if [[ $signed == no ]]; then
            printf '%s\n' "$file"
        fi
    done
}

# Reports where a transcript was written (or would be).
ce_report_transcript() {
    local path=$1
    if ((CE_DRY_RUN)); then
        printf '\ntranscript would be written to %s\n' "$path"
    elif [[ -f $path ]]; then
        printf '\ntranscript: %s\n' "$path"
    else
        ce_note "warning: signetd reported success but wrote no transcript at $path"
    fi
}

ce_done() {
    if ((CE_DRY_RUN)); then
        ce_say "Dry run finished: nothing was changed"
    else
        ce_say "$*"
    fi
}

# ce_key_ceremony NAME TITLE FORCE SIGNETD-ARGS...
# The body every key ceremony shares, after `ce_setup config` (which settles
# CE_CONFIG, so call it before expanding SIGNETD-ARGS): require a ready CA when
# CE_REQUIRE_CA=1, report the CA and the keys (`keys list` with the arguments
# in CE_KEYS_FILTER), stop on incomplete keys unless FORCE is 1, then run
# `signetd SIGNETD-ARGS... --transcript T` as the step TITLE. On failure it
# says where to look and exits 1; on success CE_TRANSCRIPT names the transcript.
CE_REQUIRE_CA=0
CE_KEYS_FILTER=()
ce_key_ceremony() {
    local name=$1 title=$2 force=$3
    shift 3
    if ((CE_REQUIRE_CA)); then
        ce_require_ready_ca
    fi
    ce_report_ca
    ce_say "Keys"
    ce_query keys list --config "$CE_CONFIG" "${CE_KEYS_FILTER[@]}" || ce_die "'signetd keys list' failed"
    ce_stop_if_incomplete "$force"
    CE_TRANSCRIPT=$(ce_transcript_path "$name")
    ce_say "$title"
    if ((CE_DRY_RUN)); then
        printf 'plan:\n'
    fi
    if ! ce_step "$@" --transcript "$CE_TRANSCRIPT"; then
        printf '\n%s: %s failed (message above).\n' "$CE_PROG" "$title" >&2
        ce_report_problems >/dev/null || true
        printf 'Run %s again to see where things stand; see docs/ceremonies.md.\n' "$CE_PROG" >&2
        exit 1
    fi
}

# ce_parse_key_args FLAG [SWITCH] -- "$@"
# The command line every key ceremony takes: FLAG VALUE (--kid or --issuer, required),
# --force, the common options, -h/--help (calls the script's usage), and optionally one
# script-specific boolean SWITCH (such as --if-missing). Sets CE_KEY_VALUE, CE_FORCE
# and CE_SWITCH, which the calling script reads.
# shellcheck disable=SC2034
ce_parse_key_args() {
    local flag=$1 switch=""
    shift
    if [[ $1 != "--" ]]; then
        switch=$1
        shift
    fi
    shift # --
    CE_KEY_VALUE="" CE_FORCE=0 CE_SWITCH=0
    while (($# > 0)); do
        case "$1" in
            -h | --help)
                usage
                exit 0
                ;;
            "$flag")
                ce_need_value "$@"
                CE_KEY_VALUE=$2
                shift 2
                ;;
            "$flag"=*)
                CE_KEY_VALUE=${1#*=}
                shift
                ;;
            --force)
                CE_FORCE=1
                shift
                ;;
            -*)
                if [[ -n $switch && $1 == "$switch" ]]; then
                    CE_SWITCH=1
                    shift
                    continue
                fi
                ce_common_option "$@" || ce_usage_error "unknown option: $1"
                shift "$CE_SHIFT"
                ;;
            *) ce_usage_error "unexpected argument: $1" ;;
        esac
    done
    [[ -n $CE_KEY_VALUE ]] || ce_usage_error "$flag is required"
}
