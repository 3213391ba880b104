#!/usr/bin/env bash
# Key ceremony: create the attestation CA (the root of every key's attestation chain).
set -euo pipefail

# shellcheck source=scripts/ceremony/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: scripts/ceremony/$CE_PROG [--self-signed | --csr OUT.pem | --import CHAIN.pem |
                  --resume | --undo] [--subject S] [--days N] [common options]

Root ceremony: creates the attestation CA key in the token and certifies it.
Every issuer key's attestation certificate is signed by this CA.

It first reports the CA's state (signetd attest status), then:

  --self-signed   (default) create the CA key and a self-signed certificate:
                  signetd attest init-ca --self-signed --transcript T
  --csr OUT.pem   create the CA key and write a PKCS#10 request to OUT.pem for
                  your own CA (ECDSA P-256 with SHA-256; the certificate must
                  be a CA with keyCertSign). Then, with the chain it returns:
  --import CHAIN  import the chain: this CA's certificate first, then the
                  certificates above it (root last):
                  signetd attest import-chain CHAIN --transcript T
  --resume        finish a self-signed run that stopped after the CA key was
                  made (state awaiting-certificate)
  --undo          destroy a CA key that was never certified (state
                  awaiting-certificate), with a transcript of what was
                  destroyed, by whom, when:
                  signetd attest init-ca --undo --transcript T
                  A certified CA is never destroyed.

  --subject S     the CA's common name (default: signetd's)
  --days N        validity of a self-signed certificate (default: signetd's)

Once the CA is ready, every pending (unsigned) transcript in the transcript
directory, such as the token ceremony's, is signed with the CA key:
signetd ceremony sign --config F TRANSCRIPT...
except those recording a CA key an --undo destroyed: they stay pending.
Run with the default mode on a ready CA, it creates nothing and only signs
pending transcripts (this finishes a run that stopped before signing).

EOF
    ce_common_help
}

mode="" csr_out="" chain_in="" subject="" days=""
set_mode() {
    [[ -z $mode || $mode == "$1" ]] || ce_usage_error "choose one of --self-signed, --csr, --import, --resume and --undo"
    mode=$1
}
while (($# > 0)); do
    case "$1" in
        -h | --help) usage && exit 0 ;;
        --self-signed | --resume | --undo) set_mode "${1#--}" && shift ;;
        --csr | --import | --subject | --days)
            ce_need_value "$@"
            case "$1" in
                --csr) set_mode csr && csr_out=$2 ;;
                --import) set_mode import && chain_in=$2 ;;
                --subject) subject=$2 ;;
                --days) days=$2 ;;
            esac
            shift 2
            ;;
        -*)
            ce_common_option "$@" || ce_usage_error "unknown option: $1"
            shift "$CE_SHIFT"
            ;;
        *) ce_usage_error "unexpected argument: $1" ;;
    esac
done
mode=${mode:-self-signed}

if [[ -n $days ]]; then
    [[ $days =~ ^[1-9][0-9]{0,5}$ ]] || ce_usage_error "--days must be a positive number of days, not '$days'"
    [[ $mode == self-signed || $mode == resume ]] ||
        ce_usage_error "--days applies to a self-signed certificate only (your CA sets the validity of the one it issues)"
fi
if [[ -n $subject ]]; then
    [[ $mode == self-signed || $mode == resume || $mode == csr ]] ||
        ce_usage_error "--subject applies to --self-signed, --resume and --csr only"
fi
if [[ $mode == csr && -e $csr_out ]]; then
    ce_die "$csr_out already exists; choose another file for the CSR (or remove it)"
fi
if [[ $mode == import ]]; then
    [[ -f $chain_in && -r $chain_in ]] || ce_die "chain file not found or not readable: $chain_in"
fi

ce_setup config

subject_args=(${subject:+--subject "$subject"})
days_args=(${days:+--days "$days"})

# What to do when the CA key exists but has no certificate.
awaiting_help() {
    cat >&2 <<EOF

The attestation CA key exists but has no certificate yet: a CSR is out with your
CA, or an earlier root ceremony stopped midway. Choose one:
  - you sent a CSR and your CA returned a chain (this CA's certificate first):
      scripts/ceremony/$CE_PROG --config $(printf '%q' "$CE_CONFIG") --import CHAIN.pem
  - finish it as a self-signed CA:
      scripts/ceremony/$CE_PROG --config $(printf '%q' "$CE_CONFIG") --resume
  - a lost CSR: write a new one for the same key:
      scripts/ceremony/$CE_PROG --config $(printf '%q' "$CE_CONFIG") --csr NEW.pem
  - start over (destroys the uncertified key):
      scripts/ceremony/$CE_PROG --config $(printf '%q' "$CE_CONFIG") --undo
EOF
}

# After a failed signetd step: where things stand and how to go on.
failed() {
    printf '\n%s: %s failed (message above).\n' "$CE_PROG" "$1" >&2
    local state
    if state=$(ce_ca_state 2>/dev/null); then
        printf 'The attestation CA is now: %s\n' "$state" >&2
        if [[ $state == awaiting-certificate ]]; then
            awaiting_help
        fi
    fi
    printf 'See docs/ceremonies.md, "Recovering from a failure midway".\n' >&2
    exit 1
}

ce_report_ca
state=$(ce_ca_state)

ce_say "Root ceremony ($mode); CA state: $state"
if ((CE_DRY_RUN)); then
    printf 'plan:\n'
fi

create_transcript=""
case "$mode:$state" in
    self-signed:missing | resume:awaiting-certificate)
        create_transcript=$(ce_transcript_path root)
        ce_step attest init-ca --config "$CE_CONFIG" --self-signed "${subject_args[@]}" "${days_args[@]}" \
            --transcript "$create_transcript" || failed "creating the self-signed attestation CA"
        ;;
    self-signed:awaiting-certificate)
        awaiting_help
        exit 1
        ;;
    self-signed:ready)
        printf 'The token already has an attestation CA: nothing to create.\n'
        ;;
    resume:missing)
        ce_die "nothing to resume: the token has no attestation CA key (run $CE_PROG --self-signed or --csr OUT)"
        ;;
    csr:missing | csr:awaiting-certificate)
        if [[ $state == awaiting-certificate ]]; then
            printf 'The CA key exists without a certificate: writing a new CSR for the same key.\n'
        fi
        create_transcript=$(ce_transcript_path root)
        ce_step attest init-ca --config "$CE_CONFIG" --csr "$csr_out" "${subject_args[@]}" \
            --transcript "$create_transcript" || failed "creating the attestation CA key and its CSR"
        ce_report_transcript "$create_transcript"
        if ((!CE_DRY_RUN)); then
            [[ -s $csr_out ]] || ce_die "signetd reported success but $csr_out is missing or empty"
            cat <<EOF

CSR written to $csr_out. Next:
  1. Have your CA sign it. It must use ECDSA P-256 with SHA-256, and the
     certificate must be a CA (basicConstraints CA:TRUE, critical; keyUsage
     keyCertSign, critical). Check the request with:
       openssl req -in $(printf '%q' "$csr_out") -noout -text -verify
  2. Put this CA's certificate first in CHAIN.pem, then the certificates above
     it (your root last), and run:
       scripts/ceremony/$CE_PROG --config $(printf '%q' "$CE_CONFIG") --import CHAIN.pem
Until then the CA is awaiting its certificate and no key can be attested.
This ceremony's transcript stays pending until the import signs it.
EOF
        fi
        ce_done "Root ceremony, first half (CSR) finished"
        exit 0
        ;;
    import:awaiting-certificate)
        create_transcript=$(ce_transcript_path root)
        ce_step attest import-chain --config "$CE_CONFIG" "$chain_in" \
            --transcript "$create_transcript" || failed "importing the chain"
        ;;
    import:missing)
        ce_die "the token has no attestation CA key to import a chain for: run $CE_PROG --csr OUT.pem first"
        ;;
    undo:awaiting-certificate)
        undo_transcript=$(ce_transcript_path root-undo)
        ce_step attest init-ca --config "$CE_CONFIG" --undo --transcript "$undo_transcript" ||
            failed "destroying the uncertified CA key"
        ce_report_transcript "$undo_transcript"
        if ((!CE_DRY_RUN)); then
            state=$(ce_ca_state)
            [[ $state == missing ]] || ce_die "after --undo the CA is '$state', not missing"
            cat <<EOF

The uncertified CA key is destroyed. Start again with $CE_PROG (--self-signed or
--csr OUT). The next CA signs this record of the destruction; the transcripts of
the destroyed key's own ceremony stay pending: no other CA signs them as its own.
EOF
        fi
        ce_done "Undo finished"
        exit 0
        ;;
    undo:missing)
        printf 'The token has no attestation CA key: nothing to undo.\n'
        exit 0
        ;;
    undo:ready)
        ce_die "the attestation CA is certified; signetd never destroys a certified CA (--undo only removes a CA key that was never certified)"
        ;;
    *:ready)
        ce_die "the token already has an attestation CA (see above); nothing was changed"
        ;;
    *)
        ce_die "internal error: unhandled mode '$mode' in state '$state'"
        ;;
esac

if [[ -n $create_transcript ]]; then
    ce_report_transcript "$create_transcript"
fi

# ---------------------------------------------------------------- sign pending transcripts

if ((!CE_DRY_RUN)); then
    state=$(ce_ca_state)
    [[ $state == ready ]] || ce_die "the attestation CA is '$state' after the ceremony, not ready"
fi

mapfile -t pending < <(ce_signable_transcripts)
if ((CE_DRY_RUN)) && [[ -n $create_transcript ]]; then
    printf '  then: sign the pending transcripts in %s with the CA key, including this ceremony'"'"'s if it is pending\n' "$CE_TRANSCRIPT_DIR"
fi
if ((${#pending[@]} > 0)); then
    ce_say "Signing ${#pending[@]} pending transcript(s) with the attestation CA key"
    ce_step ceremony sign --config "$CE_CONFIG" "${pending[@]}" || failed "signing the pending transcripts"
    if ((!CE_DRY_RUN)); then
        mapfile -t still < <(ce_signable_transcripts 2>/dev/null)
        if ((${#still[@]} > 0)); then
            ce_die "still unsigned after 'signetd ceremony sign': ${still[*]}"
        fi
    fi
elif ((!CE_DRY_RUN)); then
    printf '\nNo pending transcripts in %s.\n' "$CE_TRANSCRIPT_DIR"
fi

if ((!CE_DRY_RUN)); then
    ce_report_ca
fi
ce_done "Root ceremony finished: the attestation CA is ready"
