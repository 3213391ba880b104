# shellcheck shell=bash
# The one body of the key ceremonies issuer-key.sh, rotate.sh, retire.sh and revoke.sh,
# which source it with their ceremony's name and their arguments. Never run directly.
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

ceremony=$1
shift
# What differs between the ceremonies: the option naming the key or issuer, the signetd
# command, and what is said before and after.
case "$ceremony" in
    issuer-key) flag=--issuer command=(keys generate) title="Issuer key ceremony: first key of %s" done="Issuer key ceremony finished" ;;
    rotate) flag=--issuer command=(keys rotate) title="Rotation ceremony: next key of %s (pending)" done="Rotation ceremony finished" ;;
    retire) flag=--kid command=(keys retire) title="Retirement ceremony: key %s" done="Retirement ceremony finished" ;;
    revoke) flag=--kid command=(keys revoke) title="Revocation ceremony: key %s" done="Revocation ceremony finished" ;;
    *) ce_die "internal error: unknown key ceremony '$ceremony'" ;;
esac

usage() {
    local what=KID
    [[ $flag == --kid ]] || what=NAME
    printf 'Usage: scripts/ceremony/%s %s %s%s [--force] [common options]\n\n' "$CE_PROG" "$flag" "$what" \
        "$([[ $ceremony == issuer-key ]] && printf ' [--if-missing]')"
    case "$ceremony" in
        issuer-key) cat <<'EOF'
Issuer key ceremony: generates the first signing key of issuer NAME inside the
token, has the attestation CA certify it, and makes it active:

  signetd keys generate --config F --issuer NAME --transcript T

The issuer must be configured ([issuers.NAME]) and the attestation CA ready
(scripts/ceremony/root.sh). The key's algorithm is the issuer's configured one.
EOF
            ;;
        rotate) cat <<'EOF'
Rotation ceremony: generates the next key of issuer NAME inside the token,
has the attestation CA certify it, and records it as pending: published in
the JWKS (with its x5c chain) so verifiers can cache it, but not signing yet.
The current active key keeps signing. The running daemon activates the
pending key once it has been published for lifecycle.prepublish_seconds, and
retires the old one.

  signetd keys rotate --config F --issuer NAME --transcript T

An issuer has at most one pending key.
EOF
            ;;
        retire) cat <<'EOF'
Retirement ceremony: marks the active or pending key KID retired. A retired
key never signs again. It stays in the JWKS until every token it signed has
expired (the issuer's max_ttl_seconds plus 5 s), then is archived: out of the
JWKS, still retrievable by kid with its attestation chain. For a compromised
key, use scripts/ceremony/revoke.sh instead.

  signetd keys retire --config F --kid KID --transcript T

Retiring an issuer's active key leaves the issuer without a signing key until
another key is active.
EOF
            ;;
        revoke) cat <<'EOF'
Revocation ceremony, for a compromised key: marks KID revoked, whatever its
state. It never signs again and leaves the JWKS at once; /v1/revocations lists
it, and /v1/verify rejects the tokens it signed (key_revoked). It stays
retrievable by kid with its attestation chain. Revocation cannot be undone.
For a key that is merely replaced, use scripts/ceremony/retire.sh.

  signetd keys revoke --config F --kid KID --transcript T

Revoking an issuer's active key leaves the issuer unable to mint until another
key is active: a pending key is activated by the daemon after pre-publication;
otherwise run scripts/ceremony/issuer-key.sh (rotate.sh needs an active key).
EOF
            ;;
    esac
    cat <<EOF
Before acting, keys left incomplete by an interrupted ceremony are reported
with the commands that finish or undo them, and the ceremony stops.

Options:
  $flag $what   the $([[ $flag == --kid ]] && echo "key (see 'signetd keys list')" || echo "issuer (a name under [issuers] in the config)")
EOF
    if [[ $ceremony == issuer-key ]]; then
        printf '  --if-missing    do nothing (no key, no transcript) if the issuer already\n                  has an active key, and succeed\n'
    fi
    printf '  --force         go ahead even if the token holds incomplete keys\n\n'
    ce_common_help
}

value="" force=0 if_missing=0
while (($# > 0)); do
    if [[ $1 == "$flag="* ]]; then set -- "$flag" "${1#*=}" "${@:2}"; fi
    case "$1" in
        -h | --help) usage && exit 0 ;;
        "$flag")
            ce_need_value "$@"
            value=$2
            shift 2
            ;;
        --force) force=1 && shift ;;
        --if-missing) [[ $ceremony == issuer-key ]] || ce_usage_error "unknown option: $1"
            if_missing=1 && shift ;;
        -*)
            ce_common_option "$@" || ce_usage_error "unknown option: $1"
            shift "$CE_SHIFT"
            ;;
        *) ce_usage_error "unexpected argument: $1" ;;
    esac
done
[[ -n $value ]] || ce_usage_error "$flag is required"

ce_setup config
command+=(--config "$CE_CONFIG" "$flag" "$value")
filter=()
if [[ $flag == --issuer ]]; then
    ce_require_ready_ca
    filter=(--issuer "$value")
fi
if ((if_missing)); then command+=(--if-missing); fi
ce_report_ca
ce_say "Keys"
ce_query keys list --config "$CE_CONFIG" "${filter[@]}" || ce_die "'signetd keys list' failed"
ce_stop_if_incomplete "$force"

transcript=$(ce_transcript_path "$ceremony")
title=${title//%s/$value}
ce_say "$title"
if ((CE_DRY_RUN)); then
    printf 'plan:\n'
fi
if ! ce_step "${command[@]}" --transcript "$transcript"; then
    printf '\n%s: %s failed (message above).\n' "$CE_PROG" "$title" >&2
    ce_report_problems >/dev/null || true
    printf 'Run %s again to see where things stand; see docs/ceremonies.md.\n' "$CE_PROG" >&2
    exit 1
fi

if ((if_missing && !CE_DRY_RUN)) && [[ ! -f $transcript ]]; then
    # signetd generated nothing and so recorded nothing: no ceremony took place.
    ce_say "Nothing was done: issuer $value already has an active key (no key generated, no transcript written)"
    exit 0
fi
ce_report_transcript "$transcript"
if ((!CE_DRY_RUN)); then
    ce_say "Keys${filter:+ of issuer $value}"
    ce_query keys list --config "$CE_CONFIG" "${filter[@]}"
    case "$ceremony" in
        issuer-key) printf '\nA running daemon picks the new key up within one lifecycle tick (lifecycle.tick_seconds).\n' ;;
        rotate) printf '\nThe new key is pending. A running daemon publishes it within one lifecycle tick\nand activates it after lifecycle.prepublish_seconds, retiring the old key.\nPublish the new attestation material with scripts/ceremony/export-public.sh.\n' ;;
        retire) printf '\nA running daemon stops signing with %s within one lifecycle tick.\n' "$value" ;;
        revoke) printf '\nA running daemon drops %s from the JWKS within one lifecycle tick.\nExport and publish the public bundle again (scripts/ceremony/export-public.sh).\n' "$value" ;;
    esac
fi
ce_done "$done"
