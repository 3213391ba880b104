#!/usr/bin/env python3
"""Independent verifier for signetd's JWTs, built on PyJWT.

Usage:
  verify_jwt.py (--jwks-url URL | --jwks-file PATH | --spiffe-bundle-url URL)
                --iss ISS --aud AUD --max-ttl N [--alg ES256|EdDSA|Ed25519]
                [--typ TYP] [--require CLAIM]... [--leeway S] [TOKEN]

TOKEN is read from stdin when it is absent or "-".

"Ed25519" is RFC 9864's name for EdDSA with Ed25519. PyJWT (2.15) does not know it:
PyJWK refuses a JWK with alg "Ed25519" and decode() the header alg. So for it this
script reads the JWK itself and registers PyJWT's own Ed25519 implementation
(OKPAlgorithm) under that name; every other check is the same.

The signing key is chosen from the JWKS by the token header's "kid". The token
must carry exp, iat, iss, aud, jti and every --require claim, be signed with
--alg (default ES256), have header typ --typ (default "JWT"; compared as RFC
7515 says: case-insensitive, "application/" implied without a "/"), and satisfy
iat < exp <= iat + max_ttl.

--spiffe-bundle-url reads the keys from a SPIFFE bundle instead, as a SPIFFE
consumer does: only keys with use "jwt-svid" are JWT authorities.

Exit status:
  0  valid: the claims are printed to stdout as one JSON line
  1  invalid, or the JWKS could not be fetched or parsed:
     "INVALID: <reason>" on stderr
  2  bad command line (argparse usage error)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import urllib.request
import sys
from typing import Any, NoReturn
from urllib.parse import urlparse

import jwt

ALGORITHMS = ("ES256", "EdDSA", "Ed25519")
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "jti"]
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


class Invalid(Exception):
    """The token (or the JWKS needed to check it) is not acceptable."""


def fail(reason: str) -> NoReturn:
    print(f"INVALID: {reason}", file=sys.stderr)
    sys.exit(1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Verify a signetd JWT independently with PyJWT.",
        epilog="Exit status: 0 valid (claims printed as one JSON line), "
        "1 invalid ('INVALID: <reason>' on stderr), 2 usage error.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--jwks-url", metavar="URL", help="JWKS endpoint, e.g. http://127.0.0.1:8080/.well-known/jwks.json")
    source.add_argument("--jwks-file", metavar="PATH", help="JWKS JSON file (alternative to --jwks-url)")
    source.add_argument("--spiffe-bundle-url", metavar="URL", help="SPIFFE bundle endpoint: its jwt-svid keys")
    parser.add_argument("--iss", required=True, help="expected issuer (iss)")
    parser.add_argument("--aud", required=True, help="expected audience (aud)")
    parser.add_argument("--max-ttl", required=True, type=int, metavar="N", help="maximum allowed exp - iat, in seconds")
    parser.add_argument("--alg", default="ES256", choices=ALGORITHMS, help="expected JWS algorithm (default: ES256)")
    parser.add_argument("--typ", default="JWT", help="expected header typ (default: JWT)")
    parser.add_argument("--require", action="append", default=[], metavar="CLAIM", help="a claim the token must carry (repeatable)")
    parser.add_argument("--leeway", type=int, default=0, metavar="S", help="clock-skew leeway in seconds for exp/iat (default: 0)")
    parser.add_argument(
        "--revocations-url",
        metavar="URL",
        help="also reject the token if signetd's revocation list (GET /v1/revocations) names its kid or jti",
    )
    parser.add_argument("token", nargs="?", default="-", metavar="TOKEN", help='the JWT; read from stdin if absent or "-"')
    args = parser.parse_args(argv)
    if args.max_ttl <= 0:
        parser.error("--max-ttl must be a positive number of seconds")
    if args.leeway < 0:
        parser.error("--leeway must not be negative")
    return args


def read_token(arg: str) -> str:
    token = sys.stdin.read() if arg == "-" else arg
    token = token.strip()
    if not token:
        raise Invalid("no token given (empty argument or stdin)")
    return token


def is_loopback_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_from_url(url: str, kid: str) -> jwt.PyJWK:
    if urlparse(url).scheme not in ("http", "https"):
        raise Invalid(f"--jwks-url must be an http:// or https:// URL, not {url!r}")
    if is_loopback_url(url):
        # A proxy from the environment must not intercept a loopback JWKS.
        for var in PROXY_VARS:
            os.environ.pop(var, None)
    client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=False, timeout=10)
    try:
        return client.get_signing_key(kid)
    except jwt.PyJWKClientConnectionError as e:
        raise Invalid(f"cannot fetch JWKS from {url}: {e}") from e
    except (jwt.PyJWKClientError, jwt.PyJWKSetError) as e:
        raise Invalid(f"no usable key for kid {kid!r} in JWKS at {url}: {e}") from e


def ed25519_key(jwks: dict[str, Any], kid: str) -> Any:
    """The Ed25519 public key of kid, from a JWKS that names it alg "Ed25519"."""
    from jwt.algorithms import OKPAlgorithm

    for key in jwks.get("keys", []):
        if key.get("kid") == kid and key.get("use") in ("sig", None):
            if key.get("alg") != "Ed25519":
                raise Invalid(f"JWK {kid} has alg {key.get('alg')!r}, expected 'Ed25519'")
            jwt.register_algorithm("Ed25519", OKPAlgorithm())
            return OKPAlgorithm.from_jwk(key)
    raise Invalid(f"no usable key for kid {kid!r} in the JWKS")


def read_jwks(args: argparse.Namespace) -> dict[str, Any]:
    try:
        if args.jwks_file:
            with open(args.jwks_file, encoding="utf-8") as f:
                return json.load(f)
        if is_loopback_url(args.jwks_url):
            for var in PROXY_VARS:
                os.environ.pop(var, None)
        with urllib.request.urlopen(args.jwks_url, timeout=10) as response:
            return json.load(response)
    except (OSError, ValueError) as e:
        raise Invalid(f"cannot read the JWKS: {e}") from e


def key_from_file(path: str, kid: str) -> jwt.PyJWK:
    try:
        with open(path, encoding="utf-8") as f:
            data = f.read()
    except OSError as e:
        raise Invalid(f"cannot read JWKS file {path}: {e.strerror}") from e
    try:
        jwk_set = jwt.PyJWKSet.from_json(data)
    except (ValueError, jwt.PyJWTError) as e:
        raise Invalid(f"cannot parse JWKS file {path}: {e}") from e
    # Same selection rule as PyJWKClient: signing keys ("use" absent or "sig").
    for key in jwk_set.keys:
        if key.key_id == kid and key.public_key_use in ("sig", None):
            return key
    raise Invalid(f"no usable key for kid {kid!r} in JWKS file {path}")


def media_type(typ: str) -> str:
    """RFC 7515 4.1.9: "application/" is implied when typ has no "/"; case does not matter."""
    return (typ if "/" in typ else "application/" + typ).lower()


def spiffe_bundle_key(url: str, kid: str) -> jwt.PyJWK:
    """The JWT authority kid of a SPIFFE bundle: a key with use "jwt-svid"."""
    if is_loopback_url(url):
        for var in PROXY_VARS:
            os.environ.pop(var, None)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            bundle = json.load(response)
    except (OSError, ValueError) as e:
        raise Invalid(f"cannot read the SPIFFE bundle: {e}") from e
    if not isinstance(bundle.get("spiffe_refresh_hint"), int):
        raise Invalid("the SPIFFE bundle has no integer spiffe_refresh_hint")
    for key in bundle.get("keys", []):
        if key.get("kid") == kid and key.get("use") == "jwt-svid":
            return jwt.PyJWK(key, algorithm="ES256")
    raise Invalid(f"no jwt-svid key {kid!r} in the SPIFFE bundle")


def check_header(header: dict[str, Any], alg: str, want_typ: str) -> str:
    typ = header.get("typ")
    if not isinstance(typ, str) or media_type(typ) != media_type(want_typ):
        raise Invalid(f"header typ is {typ!r}, expected {want_typ!r}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Invalid(f"header kid is missing or not a non-empty string: {kid!r}")
    if header.get("alg") != alg:
        raise Invalid(f"header alg is {header.get('alg')!r}, expected {alg!r}")
    return kid


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_lifetime(claims: dict[str, Any], max_ttl: int) -> None:
    exp, iat = claims["exp"], claims["iat"]
    if not is_number(exp) or not is_number(iat):
        raise Invalid(f"exp and iat must be numbers (got exp={exp!r}, iat={iat!r})")
    if exp <= iat:
        raise Invalid(f"exp ({exp}) is not after iat ({iat})")
    if exp - iat > max_ttl:
        raise Invalid(f"lifetime exp - iat = {exp - iat}s exceeds --max-ttl {max_ttl}s")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise Invalid(f"jti must be a non-empty string (got {jti!r})")


def verify(args: argparse.Namespace) -> dict[str, Any]:
    token = read_token(args.token)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as e:
        raise Invalid(f"malformed token: {e}") from e
    kid = check_header(header, args.alg, args.typ)

    if args.spiffe_bundle_url:
        key = spiffe_bundle_key(args.spiffe_bundle_url, kid)
    elif args.alg == "Ed25519":
        key = ed25519_key(read_jwks(args), kid)
    elif args.jwks_url:
        key = key_from_url(args.jwks_url, kid)
    else:
        key = key_from_file(args.jwks_file, kid)

    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[args.alg],
            audience=args.aud,
            issuer=args.iss,
            leeway=args.leeway,
            options={"require": REQUIRED_CLAIMS + args.require},
        )
    except jwt.PyJWTError as e:
        raise Invalid(f"{type(e).__name__}: {e}") from e

    check_lifetime(claims, args.max_ttl)
    if args.revocations_url:
        check_revocations(args.revocations_url, kid, claims.get("jti"))
    return claims


def check_revocations(url: str, kid: str, jti: Any) -> None:
    """A gateway's revocation check: signetd lists revoked keys and tokens."""
    if is_loopback_url(url):
        for var in PROXY_VARS:
            os.environ.pop(var, None)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            listed = json.load(response)
    except OSError as e:
        raise Invalid(f"cannot fetch revocations from {url}: {e}") from e
    if any(entry.get("kid") == kid for entry in listed.get("keys", [])):
        raise Invalid(f"key {kid} is revoked")
    if any(entry.get("jti") == jti for entry in listed.get("tokens", [])):
        raise Invalid(f"token {jti} is revoked")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        claims = verify(args)
    except Invalid as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 -- anything unexpected is a failure too
        fail(f"unexpected error: {type(e).__name__}: {e}")
    print(json.dumps(claims, sort_keys=True, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
