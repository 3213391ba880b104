#!/usr/bin/env bash
# Key ceremony: generate and attest an issuer's next key, published ahead of use. The body is key-ceremony.sh, shared by every key ceremony.
# shellcheck source=scripts/ceremony/key-ceremony.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/key-ceremony.sh" rotate "$@"
