#!/usr/bin/env bash
# Key ceremony: retire an issuer key.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --kid KID [--force] [common options]

Retirement ceremony: marks the active or pending key KID retired. A retired
key never signs again. It stays in the JWKS until every token it signed has
expired (the issuer's max_ttl_seconds plus 5 s), then is archived: out of the
JWKS, still retrievable by kid with its attestation chain. For a compromised
key, use scripts/ceremony/revoke.sh instead.

  signetd keys retire --config F --kid KID --transcript T

Retiring an issuer's active key leaves the issuer without a signing key until
another key is active. Before acting, keys left incomplete by an interrupted
ceremony are reported with the commands that finish or undo them, and the
ceremony stops.

Options:
  --kid KID   the key to retire (see 'signetd keys list')
  --force     go ahead even if the token holds incomplete keys

EOF
    ce_common_help
}

ce_parse_key_args --kid -- "$@"
kid=$CE_KEY_VALUE
force=$CE_FORCE

ce_setup config
ce_key_ceremony retire "Retirement ceremony: key $kid" "$force" keys retire --config "$CE_CONFIG" --kid "$kid"
transcript=$CE_TRANSCRIPT

ce_report_transcript "$transcript"
if ((!CE_DRY_RUN)); then
    ce_say "Keys"
    ce_query keys list --config "$CE_CONFIG"
    printf '\nA running daemon stops signing with %s within one lifecycle tick.\n' "$kid"
fi
ce_done "Retirement ceremony finished"
