#!/usr/bin/env bash
# Create (or reuse) a throwaway SoftHSM2 (or kryoptic) token for signetd's tests, the
# quickstart and local development. It keeps the PINs inside the token's directory, so it
# is never the way to make a token you keep: scripts/ceremony/init-token.sh is (README.md,
# "Running it"). This script only lays out the files; `signetd ceremony init-token`
# initializes the token.
set -euo pipefail

PROG=${0##*/}
REPO_ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)

usage() {
    cat <<EOF
Usage: $PROG DIR LABEL [--pin PIN] [--so-pin PIN] [--format text|env] [--signetd PATH]
                 [--kryoptic MODULE]

Create a throwaway SoftHSM2 token labelled LABEL whose files live under DIR,
or reuse it if DIR already holds a token with that label. For tests and local
development only: the PINs are kept in DIR, so every copy of DIR carries them.
A token you keep is made by scripts/ceremony/init-token.sh (README.md,
"Running it"; docs/ceremonies.md).

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
                   SIGNETD_TOKEN_SERIAL, SIGNETD_TOKEN_SETUP, SIGNETD_PIN_FILE,
                   SIGNETD_SO_PIN_FILE
  --signetd PATH   the signetd binary (default: \$SIGNETD_BIN, else signetd on
                   PATH, else target/release or target/debug of this checkout)
  --kryoptic MODULE
                   make a kryoptic token instead, with the kryoptic PKCS#11
                   module MODULE (kryoptic-pkcs11/, the test suite's second
                   implementation): DIR holds kryoptic.conf and tokens/token.sql,
                   and --format env prints KRYOPTIC_CONF in place of SOFTHSM2_CONF
  -h, --help       show this help

One DIR holds one token. When DIR already holds the token LABEL it is reused:
it is not re-initialised and the PIN files are left alone (a --pin/--so-pin
that differs from the stored one is an error). A DIR that holds a token with
another label is refused; use a separate DIR per token.
PIN values are never printed. Diagnostics go to stderr.

Environment:
  SIGNETD_PKCS11_MODULE  PKCS#11 module (default: SoftHSM2's libsofthsm2.so,
                         found by signetd in the usual places)
EOF
}

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}

usage_error() {
    printf '%s: %s\nRun "%s --help" for usage.\n' "$PROG" "$*" "$PROG" >&2
    exit 2
}

declare -A opt=([--format]=text [--signetd]=${SIGNETD_BIN:-} [--kryoptic]="")
positional=()
while (($# > 0)); do
    if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi
    case "$1" in
        -h | --help) usage && exit 0 ;;
        --pin | --so-pin | --format | --signetd | --kryoptic)
            (($# >= 2)) || usage_error "$1 needs a value"
            opt[$1]=$2
            shift 2
            ;;
        -*) usage_error "unknown option: $1" ;;
        *) positional+=("$1") && shift ;;
    esac
done
((${#positional[@]} == 2)) || usage_error "expected exactly two arguments, DIR and LABEL (got ${#positional[@]})"
dir=${positional[0]} label=${positional[1]}
[[ ${opt[--format]} == text || ${opt[--format]} == env ]] ||
    usage_error "--format must be 'text' or 'env', not '${opt[--format]}'"
[[ -n $dir && $dir != *[[:cntrl:]]* ]] || usage_error "DIR must be non-empty, without control characters"

signetd=${opt[--signetd]}
if [[ -z $signetd ]]; then
    for signetd in "$(command -v signetd || true)" "$REPO_ROOT"/target/{release,debug}/signetd ""; do
        [[ -x $signetd ]] && break
    done
    [[ -n $signetd ]] || die "signetd not found on PATH nor in target/ (cargo build, or pass --signetd PATH)"
fi

umask 077
[[ ! -e $dir || -d $dir ]] || die "'$dir' exists and is not a directory"
mkdir -p -- "$dir/tokens" || die "cannot create '$dir/tokens'"
dir=$(cd -- "$dir" && pwd -P)
# Parallel tests may set up the same DIR at once.
exec 9>"$dir/.init-token.lock"
flock 9

# toml STRING: STRING as a TOML basic string.
toml() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

user_pin="$dir/user.pin" so_pin="$dir/so.pin"
if [[ -n ${opt[--kryoptic]} ]]; then
    # One slot, its token a SQLite file. kryoptic reads the file KRYOPTIC_CONF names.
    [[ -f ${opt[--kryoptic]} ]] || die "no kryoptic module at '${opt[--kryoptic]}' (cargo build -p kryoptic-pkcs11)"
    conf_var=KRYOPTIC_CONF conf="$dir/kryoptic.conf" module=${opt[--kryoptic]}
    printf '[[slots]]\nslot = 1\ndbtype = "sqlite"\ndbargs = %s\n' "$(toml "$dir/tokens/token.sql")" >"$conf"
else
    conf_var=SOFTHSM2_CONF conf="$dir/softhsm2.conf" module=${SIGNETD_PKCS11_MODULE:-}
    template=$(<"$REPO_ROOT/softhsm/softhsm2.conf.in")
    # Quoted replacement: no '&' expansion (bash 5.2 patsub_replacement), no globbing.
    printf '%s\n' "${template//@TOKENDIR@/"$dir/tokens"}" >"$conf"
fi

# write_pin FILE OPTION: a new PIN file (the option's value, or 64 random bits in hex);
# an existing one must agree with the option.
write_pin() {
    local file=$1 given=${opt[$2]:-}
    if [[ -f $file ]]; then
        [[ -z $given || $given == "$(<"$file")" ]] ||
            die "DIR already holds a token whose PIN differs from $2 (see $file). Delete '$dir' to start over."
        return
    fi
    if [[ -z $given ]]; then
        given=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
    fi
    printf '%s' "$given" >"$file.tmp" && mv -f -- "$file.tmp" "$file"
}
write_pin "$user_pin" --pin
write_pin "$so_pin" --so-pin

token_env=$(env "$conf_var=$conf" ${module:+"SIGNETD_PKCS11_MODULE=$module"} "$signetd" ceremony init-token --label "$label" \
    --so-pin-file "$so_pin" --pin-file "$user_pin" --sole --format env) ||
    die "'signetd ceremony init-token' failed for token '$label' in $dir (message above)"
declare -A tok
while IFS='=' read -r key value; do tok[$key]=$value; done <<<"$token_env"
printf '%s: %s token %s (serial %s) in %s/tokens\n' "$PROG" "${tok[SIGNETD_TOKEN_SETUP]}" \
    "$label" "${tok[SIGNETD_TOKEN_SERIAL]}" "$dir" >&2

if [[ ${opt[--format]} == env ]]; then
    printf '%s=%s\n%s\nSIGNETD_PIN_FILE=%s\nSIGNETD_SO_PIN_FILE=%s\n' \
        "$conf_var" "$conf" "$token_env" "$user_pin" "$so_pin"
    exit 0
fi

cat <<EOF
Token ready (${tok[SIGNETD_TOKEN_SETUP]}).
  label:        $label
  serial:       ${tok[SIGNETD_TOKEN_SERIAL]}
  module:       ${tok[SIGNETD_PKCS11_MODULE]}
  config:       $conf
  token store:  $dir/tokens
  user PIN:     $user_pin
  SO PIN:       $so_pin

signetd config snippet:

[pkcs11]
module = $(toml "${tok[SIGNETD_PKCS11_MODULE]}")
token_label = $(toml "$label")
pin_file = $(toml "$user_pin")

The module finds its token store through $conf_var; set it in the shell
that runs signetd (or pkcs11-tool):

export $conf_var=$(printf '%q' "$conf")
EOF
