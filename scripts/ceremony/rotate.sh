#!/usr/bin/env bash
# Key ceremony: generate and attest an issuer's next key, published ahead of use.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --issuer NAME [--force] [common options]

Rotation ceremony: generates the next key of issuer NAME inside the token,
has the attestation CA certify it, and records it as pending: published in
the JWKS (with its x5c chain) so verifiers can cache it, but not signing yet.
The current active key keeps signing. The running daemon activates the
pending key once it has been published for lifecycle.prepublish_seconds, and
retires the old one.

  signetd keys rotate --config F --issuer NAME --transcript T

An issuer has at most one pending key. Before acting, keys left incomplete by
an interrupted ceremony are reported with the commands that finish or undo
them, and the ceremony stops.

Options:
  --issuer NAME   the issuer (a name under [issuers] in the config)
  --force         go ahead even if the token holds incomplete keys

EOF
    ce_common_help
}

ce_parse_key_args --issuer -- "$@"
issuer=$CE_KEY_VALUE
force=$CE_FORCE

ce_setup config
CE_REQUIRE_CA=1
CE_KEYS_FILTER=(--issuer "$issuer")
ce_key_ceremony rotate "Rotation ceremony: next key of $issuer (pending)" "$force" \
    keys rotate --config "$CE_CONFIG" --issuer "$issuer"
transcript=$CE_TRANSCRIPT

ce_report_transcript "$transcript"
if ((!CE_DRY_RUN)); then
    ce_say "Keys of issuer $issuer"
    ce_query keys list --config "$CE_CONFIG" --issuer "$issuer"
    printf '\nThe new key is pending. A running daemon publishes it within one lifecycle tick\n'
    printf 'and activates it after lifecycle.prepublish_seconds, retiring the old key.\n'
    printf 'Publish the new attestation material with scripts/ceremony/export-public.sh.\n'
fi
ce_done "Rotation ceremony finished"
