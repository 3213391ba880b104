#!/usr/bin/env bash
# Key ceremony: retire an issuer key. The body is key-ceremony.sh, shared by every key ceremony.
# shellcheck source=scripts/ceremony/key-ceremony.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/key-ceremony.sh" retire "$@"
