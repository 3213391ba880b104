#!/usr/bin/env bash
# Key ceremony: revoke a compromised issuer key.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --kid KID [--force] [common options]

Revocation ceremony, for a compromised key: marks KID revoked, whatever its
state. It never signs again and leaves the JWKS at once; /v1/revocations lists
it, and /v1/verify rejects the tokens it signed (key_revoked). It stays
retrievable by kid with its attestation chain. Revocation cannot be undone.
For a key that is merely replaced, use scripts/ceremony/retire.sh.

  signetd keys revoke --config F --kid KID --transcript T

Revoking an issuer's active key leaves the issuer unable to mint until another
key is active: a pending key is activated by the daemon after pre-publication;
otherwise run scripts/ceremony/issuer-key.sh (rotate.sh needs an active key).
Before acting, keys left incomplete by an interrupted ceremony are reported
with the commands that finish or undo them, and the ceremony stops.

Options:
  --kid KID   the key to revoke (see 'signetd keys list')
  --force     go ahead even if the token holds incomplete keys

EOF
    ce_common_help
}

ce_parse_key_args --kid -- "$@"
kid=$CE_KEY_VALUE
force=$CE_FORCE

ce_setup config
ce_key_ceremony revoke "Revocation ceremony: key $kid" "$force" keys revoke --config "$CE_CONFIG" --kid "$kid"
transcript=$CE_TRANSCRIPT

ce_report_transcript "$transcript"
if ((!CE_DRY_RUN)); then
    ce_say "Keys"
    ce_query keys list --config "$CE_CONFIG"
    printf '\nA running daemon drops %s from the JWKS within one lifecycle tick.\n' "$kid"
    printf 'Export and publish the public bundle again (scripts/ceremony/export-public.sh).\n'
fi
ce_done "Revocation ceremony finished"
