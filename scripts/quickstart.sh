#!/usr/bin/env bash
# Set up and run signetd on a throwaway SoftHSM2 token, and show it working.
set -euo pipefail
shopt -s inherit_errexit

usage() {
    cat <<'EOF'
Usage: scripts/quickstart.sh [--once]

Sets up signetd on a throwaway SoftHSM2 token and shows it working:

  1. installs SoftHSM2 if it is missing (as root; otherwise prints the command)
  2. builds signetd (cargo build --release)
  3. creates a dev token and config under .dev/ (git-ignored), or reuses them
  4. creates a self-signed attestation CA in the token, and an attested ES256 key for
     the issuer "demo", if they are missing
  5. starts the daemon on .dev/signetd.sock (and http://127.0.0.1:8750 for the JWKS)
  6. mints a token over the Unix socket, verifies it against the served JWKS, checks
     the key's attestation chain, and finds the token's record in the audit log

Then it keeps the daemon in the foreground, with its log, until Ctrl-C.

Options:
  --once      stop the daemon after the demo and exit 0 (tests and CI use this)
  -h, --help  show this help

Environment:
  SIGNETD_QUICKSTART_HTTP  address of the public HTTP listener (default 127.0.0.1:8750)
EOF
}

once=0
for arg in "$@"; do
    case "$arg" in
        --once) once=1 ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'quickstart: unknown argument %q (see --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
root=$PWD
dev="$root/.dev"
http_addr=${SIGNETD_QUICKSTART_HTTP:-127.0.0.1:8750}

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

# 1. SoftHSM2 --------------------------------------------------------------------
if ! command -v softhsm2-util >/dev/null; then
    if [[ $(id -u) -eq 0 ]]; then
        say "Installing SoftHSM2 (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
    else
        die "SoftHSM2 is not installed. Run:  sudo apt-get install -y softhsm2  and try again."
    fi
fi
command -v cargo >/dev/null || die "cargo is not installed: install Rust from https://rustup.rs, then try again."

# 2. Build -----------------------------------------------------------------------
say "Building signetd (cargo build --release)"
cargo build --release --locked --quiet
signetd="$root/target/release/signetd"

# 3. Dev token and config ----------------------------------------------------------
say "Dev token in .dev/token"
token_env=$(bash softhsm/dev-token.sh "$dev/token" signetd-dev --format env --signetd "$signetd")
declare -A tok
while IFS='=' read -r key value; do tok[$key]=$value; done <<<"$token_env"
export SOFTHSM2_CONF=${tok[SOFTHSM2_CONF]}
printf 'token %s (serial %s), PIN in %s (mode 0600)\n' \
    "${tok[SIGNETD_TOKEN_LABEL]}" "${tok[SIGNETD_TOKEN_SERIAL]}" "${tok[SIGNETD_PIN_FILE]}"

config="$dev/signetd.toml"
socket="$dev/signetd.sock"
if [[ ! -f $config ]]; then
    cat >"$config" <<EOF
# Written by scripts/quickstart.sh for a throwaway dev token. See config.example.toml.
[pkcs11]
module = "${tok[SIGNETD_PKCS11_MODULE]}"
token_label = "${tok[SIGNETD_TOKEN_LABEL]}"
pin_file = "${tok[SIGNETD_PIN_FILE]}"

[listen]
socket = "$socket"
socket_mode = 0o600
http = "$http_addr"

[audit]
dir = "$dev/audit"

[issuers.demo]
iss = "https://demo.signetd.invalid"
algorithm = "ES256"
max_ttl_seconds = 60
audiences = ["demo-api"]
callers = ["uid:$(id -u)"]
EOF
    echo "config written to .dev/signetd.toml"
else
    echo "reusing .dev/signetd.toml"
    if ! grep -q '^\[audit\]' "$config"; then
        # Configs from before the audit log: give the log a place under .dev/.
        printf '\n[audit]\ndir = "%s"\n' "$dev/audit" >>"$config"
        echo "added an [audit] table (dir .dev/audit) to .dev/signetd.toml"
    fi
fi
# signetd refuses a config that group or others can write (a umask of 002 would allow it).
chmod go-w -- "$config"

# 4. Attestation CA and issuer key ---------------------------------------------------------
say "Attestation CA (a P-256 key in the token, self-signed for this demo)"
if [[ $("$signetd" attest status --config "$config" --format state) == missing ]]; then
    "$signetd" attest init-ca --config "$config" --self-signed --subject "signetd quickstart CA"
else
    "$signetd" attest status --config "$config"
fi

say "Issuer key for \"demo\" (generated inside the token, never extractable, attested)"
"$signetd" keys generate --config "$config" --issuer demo --if-missing
"$signetd" keys list --config "$config" --issuer demo

# 5. Daemon ------------------------------------------------------------------------------
say "Starting the daemon"
log="$dev/signetd.log"
"$signetd" serve --config "$config" >"$log" 2>&1 &
daemon=$!
stop_daemon() {
    if kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
}
trap stop_daemon EXIT
trap 'exit 130' INT TERM

ready=0
for _ in $(seq 1 100); do
    kill -0 "$daemon" 2>/dev/null || { cat "$log" >&2; die "the daemon exited during start-up (log above)"; }
    if [[ -S $socket ]] && "$signetd" status --socket "$socket" >/dev/null 2>&1; then ready=1; break; fi
    sleep 0.1
done
[[ $ready -eq 1 ]] || die "the daemon did not become ready within 10 s (log: .dev/signetd.log)"
printf 'signetd pid %s, socket %s, public HTTP http://%s\n' "$daemon" "$socket" "$http_addr"

# 6. Mint and verify -----------------------------------------------------------------------
say "Minting a token over the Unix socket"
mint=("$signetd" token mint --socket "$socket" --issuer demo --aud demo-api --sub alice --claim scope=read --ttl 60)
printf '$ %s\n' "${mint[*]#"$root/"}"
token=$("${mint[@]}")
echo "$token"

say "Verifying it against the JWKS served on http://$http_addr/.well-known/jwks.json"
"$signetd" token verify --jwks-url "http://$http_addr/.well-known/jwks.json" \
    --iss https://demo.signetd.invalid --aud demo-api --max-ttl 60 "$token"

say "Checking the key's attestation chain from the JWKS against the CA"
kid=$("$signetd" keys list --config "$config" --issuer demo --format kids | head -n 1)
"$signetd" attest export --config "$config" --out "$dev/public" >/dev/null
"$signetd" attest verify --root "$dev/public/root.pem" \
    --jwks-url "http://$http_addr/.well-known/jwks.json" --kid "$kid"

say "Finding the token's record in the audit log (.dev/audit), by the SHA-256 of the token"
token_sha256=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
# The daemon is running, so the newest records are not signed yet: audit find says so.
"$signetd" audit find --root "$dev/public/root.pem" --token-sha256 "$token_sha256" "$dev/audit"

say "Done: attested key in the token, token minted over the socket, verified against the JWKS, audited"
if [[ $once -eq 1 ]]; then
    stop_daemon
    echo "daemon stopped (--once); its stop record and final checkpoint are written:"
    "$signetd" audit verify --require-signed --root "$dev/public/root.pem" "$dev/audit"
    "$signetd" audit find --root "$dev/public/root.pem" --token-sha256 "$token_sha256" "$dev/audit"
    exit 0
fi

cat <<EOF

signetd is running (pid $daemon). Socket: $socket
Mint another token:

  $signetd token mint --socket $socket --issuer demo --aud demo-api --sub alice

JWKS: http://$http_addr/.well-known/jwks.json      Log: .dev/signetd.log (follows below)
Press Ctrl-C to stop.
EOF
tail -n +1 -f "$log" --pid="$daemon" &
wait "$daemon"
