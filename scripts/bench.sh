#!/usr/bin/env bash
# signetd's benchmark: every daemon row against the physical limits measured in the same
# run (docs/performance.md). Glue only: the bench itself is benches/throughput/.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    cat <<'USAGE'
Usage: scripts/bench.sh [--quick] [--seconds N] [--clients 1,4,16,64] [--overload N]
                        [--algorithm ES256|EdDSA] [--audit-dir DIR] [--json FILE]
       scripts/bench.sh --instructions N [--algorithm ES256|EdDSA] [--json FILE]

Creates a throwaway SoftHSM2 token, then, per algorithm (ES256, then EdDSA):
  - the floor: raw C_Sign in-process, token object and session copy, 1 and N threads;
  - the disk: one 300-byte write + fdatasync where the audit log goes (and on tmpfs);
  - the host: verifying a token, and a resumed mTLS handshake, in-process;
  - a real daemon (signetd serve, a process of its own) loaded by this process over its
    Unix socket: POST /v1/sign, /v1/tokens, /v1/verify, /v1/verify single_use, and
    /v1/tokens over mutual TLS with resumed sessions, at 1, 4, 16 and 64 clients, then
    256 clients past the queue bound; then one client with the audit log on tmpfs.
Each row: ops/s, p50, p99, p999, the ratio to the floor, and the CPU the load generator
and the daemon used. The same goes to target/bench/COMMIT.json (or --json FILE).
--quick runs every row for 0.3 s: the CI smoke run. Nothing here asserts a speed.

--instructions N times nothing: it runs the daemon under valgrind's callgrind and
counts the instructions of N sequential requests per row (GET /healthz, /v1/sign,
/v1/tokens, /v1/verify, single use), split into C_SignInit + C_Sign and the rest.
User space only, and repeatable where timings are not: the measure for a change to
the daemon's CPU per request (JSON: target/bench/COMMIT-instructions.json).
USAGE
    exit 0
fi

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v softhsm2-util >/dev/null || {
    echo "bench: SoftHSM2 is missing: sudo apt-get install -y softhsm2" >&2
    exit 1
}
exec cargo bench --locked --bench throughput -- "$@"
