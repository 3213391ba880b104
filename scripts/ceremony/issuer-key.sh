#!/usr/bin/env bash
# Key ceremony: generate and attest an issuer's first signing key.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG --issuer NAME [--if-missing] [--force] [common options]

Issuer key ceremony: generates the first signing key of issuer NAME inside the
token, has the attestation CA certify it, and makes it active:

  signetd keys generate --config F --issuer NAME --transcript T

The issuer must be configured ([issuers.NAME]) and the attestation CA ready
(scripts/ceremony/root.sh). The key's algorithm is the issuer's configured one.
Before acting, keys left incomplete by an interrupted ceremony are reported
with the commands that finish or undo them, and the ceremony stops.

Options:
  --issuer NAME   the issuer (a name under [issuers] in the config)
  --if-missing    succeed without generating if the issuer already has an
                  active key
  --force         go ahead even if the token holds incomplete keys

EOF
    ce_common_help
}

ce_parse_key_args --issuer --if-missing -- "$@"
issuer=$CE_KEY_VALUE
force=$CE_FORCE
if_missing=$CE_SWITCH

ce_setup config
CE_REQUIRE_CA=1
CE_KEYS_FILTER=(--issuer "$issuer")
extra=()
if ((if_missing)); then extra+=(--if-missing); fi
ce_key_ceremony issuer-key "Issuer key ceremony: first key of $issuer" "$force" \
    keys generate --config "$CE_CONFIG" --issuer "$issuer" "${extra[@]}"
transcript=$CE_TRANSCRIPT

if ((!CE_DRY_RUN)); then
    if [[ -f $transcript ]]; then
        ce_report_transcript "$transcript"
    elif ((if_missing)); then
        printf '\nNo transcript: nothing was generated.\n'
    else
        ce_report_transcript "$transcript"
    fi
    ce_say "Keys of issuer $issuer"
    ce_query keys list --config "$CE_CONFIG" --issuer "$issuer"
    printf '\nA running daemon picks the new key up within one lifecycle tick (lifecycle.tick_seconds).\n'
else
    ce_report_transcript "$transcript"
fi
ce_done "Issuer key ceremony finished"
