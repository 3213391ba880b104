#!/usr/bin/env bash
# Throughput of signetd against the in-process PKCS#11 floor, measured in the same run.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    cat <<'USAGE'
Usage: scripts/bench.sh [--seconds N] [--connections N] [--algorithm ES256|EdDSA] [--audit-dir DIR]

Creates a throwaway SoftHSM2 token, then times, for N seconds each (default 3):
  - raw C_Sign in-process, one session per thread (the floor),
  - Hsm::sign through signetd's session pool,
  - POST /v1/tokens to a real daemon over its Unix socket (default 16 connections),
    once without and once with the audit log (on disk under target/, or in
    --audit-dir DIR, which should be on the filesystem the daemon will use),
and prints each rate with its ratio to the floor, and what auditing cost.
Nothing here asserts a speed.
USAGE
    exit 0
fi

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
command -v softhsm2-util >/dev/null || {
    echo "bench: SoftHSM2 is missing: sudo apt-get install -y softhsm2" >&2
    exit 1
}
exec cargo bench --locked --bench throughput -- "$@"
