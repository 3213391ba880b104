#!/usr/bin/env python3
"""A strict JWKS-caching verifier for signetd's rotation test, built on PyJWT.

Reads compact JWTs from stdin, one per line, and verifies each as it arrives against a
JWKS that it fetches at most once per --cache-seconds. Unlike PyJWKClient it never
refetches on an unknown kid, so a key that signs before verifiers could have cached it
shows up as a rejection. At EOF it prints one JSON line:
{"verified": N, "rejected": M, "kids": [...], "failures": ["reason", ...]}
Exit status 0 when nothing was rejected, 1 otherwise.
"""

import argparse
import json
import sys
import time
import urllib.request

import jwt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jwks-url", required=True)
    parser.add_argument("--iss", required=True)
    parser.add_argument("--aud", required=True)
    parser.add_argument("--cache-seconds", type=float, required=True)
    args = parser.parse_args()

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    cached, fetched_at = None, float("-inf")
    verified, failures, kids = 0, [], set()
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        if time.monotonic() - fetched_at >= args.cache_seconds:
            with opener.open(args.jwks_url, timeout=5) as response:
                cached = jwt.PyJWKSet.from_json(response.read().decode())
            fetched_at = time.monotonic()
        try:
            kid = jwt.get_unverified_header(token)["kid"]
            key = next((k for k in cached.keys if k.key_id == kid), None)
            if key is None:
                raise jwt.InvalidTokenError(f"kid {kid} not in the cached JWKS")
            jwt.decode(
                token,
                key,
                algorithms=["ES256", "EdDSA"],
                audience=args.aud,
                issuer=args.iss,
                options={"require": ["exp", "iat", "iss", "aud", "jti"]},
            )
            verified += 1
            kids.add(kid)
        except jwt.PyJWTError as e:
            failures.append(f"{type(e).__name__}: {e}")
    print(json.dumps({"verified": verified, "rejected": len(failures), "kids": sorted(kids), "failures": failures[:20]}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
