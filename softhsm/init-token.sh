#!/usr/bin/env bash
# Create (or reuse) a throwaway SoftHSM2 token for signetd tests and local dev.
set -euo pipefail
shopt -s inherit_errexit

PROG=${0##*/}
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
TEMPLATE="$SCRIPT_DIR/softhsm2.conf.in"

usage() {
    cat <<EOF
Usage: $PROG DIR LABEL [--pin PIN] [--so-pin PIN] [--format text|env]

Create a throwaway SoftHSM2 token labelled LABEL whose files live under DIR,
or reuse it if DIR already holds a token with that label.

Files under DIR (DIR is created with mode 0700 if missing):
  softhsm2.conf   SoftHSM2 config (rendered from softhsm/softhsm2.conf.in)
  tokens/         SoftHSM2 token store
  user.pin        user PIN, mode 0600, no trailing newline
  so.pin          security-officer PIN, mode 0600, no trailing newline

Options:
  --pin PIN        user PIN for a new token (default: random 16 hex chars)
  --so-pin PIN     SO PIN for a new token (default: random 16 hex chars)
  --format text    human summary and a ready-to-paste [pkcs11] TOML snippet
                   (default)
  --format env     only KEY=VALUE lines on stdout, unquoted, one per line:
                   SOFTHSM2_CONF, SIGNETD_PKCS11_MODULE, SIGNETD_TOKEN_LABEL,
                   SIGNETD_TOKEN_SERIAL, SIGNETD_PIN_FILE, SIGNETD_SO_PIN_FILE
  -h, --help       show this help

One DIR holds one token. When DIR already holds the token LABEL it is reused:
it is not re-initialised and the PIN files are left alone (a --pin/--so-pin
that differs from the stored one is an error). A DIR that holds a token with
another label is refused; use a separate DIR per token.
PIN values are never printed. Diagnostics go to stderr.

Environment:
  SIGNETD_PKCS11_MODULE  PKCS#11 module to report (default: the first of
                         the usual libsofthsm2.so locations that exists)
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s\n' "$PROG" "$*" >&2
    printf 'Run "%s --help" for usage.\n' "$PROG" >&2
    exit 2
}

note() {
    printf '%s: %s\n' "$PROG" "$*" >&2
}

# ---------------------------------------------------------------- arguments

dir=""
label=""
pin=""
so_pin=""
pin_given=0
so_pin_given=0
format="text"
positional=()

while (($# > 0)); do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --pin)
            (($# >= 2)) || usage_error "--pin needs a value"
            pin=$2 pin_given=1
            shift 2
            ;;
        --pin=*)
            pin=${1#*=} pin_given=1
            shift
            ;;
        --so-pin)
            (($# >= 2)) || usage_error "--so-pin needs a value"
            so_pin=$2 so_pin_given=1
            shift 2
            ;;
        --so-pin=*)
            so_pin=${1#*=} so_pin_given=1
            shift
            ;;
        --format)
            (($# >= 2)) || usage_error "--format needs a value (text or env)"
            format=$2
            shift 2
            ;;
        --format=*)
            format=${1#*=}
            shift
            ;;
        --)
            shift
            positional+=("$@")
            break
            ;;
        -*)
            usage_error "unknown option: $1"
            ;;
        *)
            positional+=("$1")
            shift
            ;;
    esac
done

((${#positional[@]} == 2)) || usage_error "expected exactly two arguments, DIR and LABEL (got ${#positional[@]})"
dir=${positional[0]}
label=${positional[1]}

case "$format" in
    text | env) ;;
    *) usage_error "--format must be 'text' or 'env', not '$format'" ;;
esac

has_control_chars() {
    [[ $1 == *[[:cntrl:]]* ]]
}

[[ -n $dir ]] || usage_error "DIR must not be empty"
if has_control_chars "$dir"; then
    usage_error "DIR must not contain control characters (newlines, tabs, ...)"
fi

[[ -n $label ]] || usage_error "LABEL must not be empty"
if has_control_chars "$label"; then
    usage_error "LABEL must not contain control characters"
fi
# softhsm2-util pads labels with spaces to 32 bytes, so surrounding
# whitespace could not be told apart when looking the token up again.
if [[ $label =~ ^[[:space:]] || $label =~ [[:space:]]$ ]]; then
    usage_error "LABEL must not start or end with whitespace: '$label'"
fi
label_bytes=$(printf '%s' "$label" | wc -c)
((label_bytes <= 32)) || usage_error "LABEL is $label_bytes bytes long; PKCS#11 token labels are at most 32 bytes"

check_pin() {
    local what=$1 value=$2
    if has_control_chars "$value"; then
        usage_error "$what must not contain control characters"
    fi
    # SoftHSM2's limits (CK_TOKEN_INFO ulMinPinLen/ulMaxPinLen).
    if ((${#value} < 4 || ${#value} > 255)); then
        usage_error "$what must be 4 to 255 characters long"
    fi
}
if ((pin_given)); then check_pin "--pin" "$pin"; fi
if ((so_pin_given)); then check_pin "--so-pin" "$so_pin"; fi

# ---------------------------------------------------------------- tools

if ! command -v softhsm2-util >/dev/null 2>&1; then
    if ((EUID == 0)); then
        die "softhsm2-util not found. Install SoftHSM2 with: apt-get install -y softhsm2"
    else
        die "softhsm2-util not found. Install SoftHSM2 with: sudo apt-get install -y softhsm2"
    fi
fi

find_module() {
    if [[ -n ${SIGNETD_PKCS11_MODULE:-} ]]; then
        [[ -f $SIGNETD_PKCS11_MODULE ]] ||
            die "SIGNETD_PKCS11_MODULE is set to '$SIGNETD_PKCS11_MODULE', but no such file exists"
        printf '%s\n' "$SIGNETD_PKCS11_MODULE"
        return
    fi
    local candidate
    for candidate in \
        /usr/lib/softhsm/libsofthsm2.so \
        /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
        /usr/local/lib/softhsm/libsofthsm2.so; do
        if [[ -f $candidate ]]; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    die "SoftHSM2 PKCS#11 module (libsofthsm2.so) not found in /usr/lib/softhsm, /usr/lib/x86_64-linux-gnu/softhsm, /usr/lib/aarch64-linux-gnu/softhsm or /usr/local/lib/softhsm; install the softhsm2 package or set SIGNETD_PKCS11_MODULE"
}
module=$(find_module)

# ---------------------------------------------------------------- directory

umask 077

if [[ -e $dir && ! -d $dir ]]; then
    die "'$dir' exists and is not a directory"
fi
if [[ ! -d $dir ]]; then
    mkdir -p -- "$dir" || die "cannot create directory '$dir'"
    chmod 0700 -- "$dir" || die "cannot chmod 0700 '$dir'"
fi
abs_dir=$(cd -- "$dir" && pwd -P) || die "cannot enter directory '$dir'"
if [[ $abs_dir == *[[:cntrl:]]* ]]; then
    die "the absolute path of DIR contains control characters: cannot use it"
fi

# Serialise concurrent runs on the same DIR (e.g. parallel tests).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$abs_dir/.init-token.lock" || die "cannot create lock file in '$abs_dir'"
    flock 9 || die "cannot lock '$abs_dir/.init-token.lock'"
fi

token_dir="$abs_dir/tokens"
conf="$abs_dir/softhsm2.conf"
user_pin_file="$abs_dir/user.pin"
so_pin_file="$abs_dir/so.pin"

mkdir -p -- "$token_dir" || die "cannot create '$token_dir'"
chmod 0700 -- "$token_dir" || die "cannot chmod 0700 '$token_dir'"

# Write VALUE to FILE atomically, mode 0600, without a trailing newline.
write_private() {
    local file=$1 value=$2 tmp
    tmp=$(mktemp "$file.XXXXXX") || die "cannot create a temporary file next to '$file'"
    if ! printf '%s' "$value" >"$tmp" || ! chmod 0600 -- "$tmp" || ! mv -f -- "$tmp" "$file"; then
        rm -f -- "$tmp"
        die "cannot write '$file'"
    fi
}

[[ -f $TEMPLATE ]] || die "config template not found: $TEMPLATE"
template=$(<"$TEMPLATE") || die "cannot read $TEMPLATE"
# Quoted replacement: no '&' expansion (bash 5.2 patsub_replacement), no globbing.
rendered=${template//@TOKENDIR@/"$token_dir"}
write_private "$conf" "$rendered"$'\n'

export SOFTHSM2_CONF="$conf"

# ---------------------------------------------------------------- token lookup

show_slots() {
    local out
    if ! out=$(softhsm2-util --show-slots 2>&1); then
        printf '%s\n' "$out" >&2
        die "'softhsm2-util --show-slots' failed (SOFTHSM2_CONF=$conf)"
    fi
    printf '%s\n' "$out"
}

# Print the serial number of the first initialised token labelled $label, or
# nothing. softhsm2-util prints "Serial number:" before "Label:" in each
# slot's "Token info:" block, and pads both values with trailing spaces.
token_serial() {
    local slots
    slots=$(show_slots) || exit 1
    printf '%s\n' "$slots" | LABEL="$label" awk '
        function value(line) {
            sub(/^[^:]*:[ \t]*/, "", line)
            sub(/[ \t]+$/, "", line)
            return line
        }
        /^Slot /                     { serial = ""; next }
        /^[ \t]*Serial number:/      { serial = value($0); next }
        /^[ \t]*Label:/ {
            if (value($0) == ENVIRON["LABEL"] && serial != "") { print serial; exit }
        }
    '
}

# Print the labels of all initialised tokens, one per line.
other_labels() {
    local slots
    slots=$(show_slots) || exit 1
    printf '%s\n' "$slots" | awk '
        /^Slot /                  { init = 0; next }
        /^[ \t]*Initialized:[ \t]*yes/ { init = 1; next }
        /^[ \t]*Label:/ {
            if (init) { line = $0; sub(/^[^:]*:[ \t]*/, "", line); sub(/[ \t]+$/, "", line); print line }
        }
    '
}

# 16 hex characters (64 bits) from /dev/urandom; no openssl needed.
random_pin() {
    local hex
    hex=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n') || die "cannot read /dev/urandom"
    [[ ${#hex} -eq 16 ]] || die "cannot generate a random PIN from /dev/urandom"
    printf '%s' "$hex"
}

serial=$(token_serial)

if [[ -n $serial ]]; then
    note "reusing existing token '$label' (serial $serial) in $token_dir"
    missing=()
    [[ -f $user_pin_file ]] || missing+=("$user_pin_file")
    [[ -f $so_pin_file ]] || missing+=("$so_pin_file")
    if ((${#missing[@]} > 0)); then
        die "token '$label' already exists in $token_dir but its PIN file(s) are missing: ${missing[*]}. Delete '$abs_dir' to start over with a fresh token."
    fi
    if ((pin_given)) && [[ $(<"$user_pin_file") != "$pin" ]]; then
        die "token '$label' already exists in $token_dir with a different user PIN than --pin (see $user_pin_file). Delete '$abs_dir' to start over."
    fi
    if ((so_pin_given)) && [[ $(<"$so_pin_file") != "$so_pin" ]]; then
        die "token '$label' already exists in $token_dir with a different SO PIN than --so-pin (see $so_pin_file). Delete '$abs_dir' to start over."
    fi
    reused=1
else
    other=$(other_labels)
    if [[ -n $other ]]; then
        die "$token_dir already holds another token (label(s): ${other//$'\n'/, }); PIN files are per DIR, so use a separate DIR for token '$label'"
    fi
    ((pin_given)) || pin=$(random_pin)
    ((so_pin_given)) || so_pin=$(random_pin)

    # PIN files first: a failure below leaves no token without PIN files.
    write_private "$user_pin_file" "$pin"
    write_private "$so_pin_file" "$so_pin"

    note "initialising new token '$label' in $token_dir"
    # softhsm2-util only takes PINs on the command line (or a terminal).
    if ! init_out=$(softhsm2-util --init-token --free --label "$label" --so-pin "$so_pin" --pin "$pin" 2>&1); then
        printf '%s\n' "$init_out" >&2
        die "'softhsm2-util --init-token' failed for label '$label' (SOFTHSM2_CONF=$conf)"
    fi
    printf '%s\n' "$init_out" >&2

    serial=$(token_serial)
    [[ -n $serial ]] || die "token '$label' was initialised, but 'softhsm2-util --show-slots' does not list it"
    reused=0
fi

# ---------------------------------------------------------------- report

toml_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

if [[ $format == env ]]; then
    printf 'SOFTHSM2_CONF=%s\n' "$conf"
    printf 'SIGNETD_PKCS11_MODULE=%s\n' "$module"
    printf 'SIGNETD_TOKEN_LABEL=%s\n' "$label"
    printf 'SIGNETD_TOKEN_SERIAL=%s\n' "$serial"
    printf 'SIGNETD_PIN_FILE=%s\n' "$user_pin_file"
    printf 'SIGNETD_SO_PIN_FILE=%s\n' "$so_pin_file"
    exit 0
fi

if ((reused)); then
    state="reused existing token"
else
    state="initialised new token"
fi

cat <<EOF
SoftHSM2 token ready ($state).
  label:        $label
  serial:       $serial
  module:       $module
  config:       $conf
  token store:  $token_dir
  user PIN:     $user_pin_file
  SO PIN:       $so_pin_file

signetd config snippet:

[pkcs11]
module = $(toml_string "$module")
token_label = $(toml_string "$label")
pin_file = $(toml_string "$user_pin_file")

SoftHSM2 finds its token store through SOFTHSM2_CONF; set it in the shell
that runs signetd (or pkcs11-tool):

export SOFTHSM2_CONF=$(printf '%q' "$conf")
EOF
