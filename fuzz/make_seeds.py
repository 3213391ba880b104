#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from inputs the tests use.

Only public test values: no PIN, no private key. Rerun after changing it; the
fuzzer's own finds stay in a scratch corpus (see docs/reliability.md), not here.
"""
import base64
import hashlib
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent / "corpus"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(target: str, items: list) -> None:
    out = ROOT / target
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for item in items:
        data = item.encode() if isinstance(item, str) else item
        name = hashlib.sha1(data).hexdigest()
        (out / name).write_bytes(data)


dumps = lambda v: json.dumps(v, separators=(",", ":"))

# ------------------------------------------------------------ request bodies
bodies = [
    {"issuer": "demo", "aud": "api"},
    {"issuer": "demo", "aud": ["api", "other"], "sub": "c1-0", "ttl_seconds": 30},
    {"issuer": "demo", "aud": "api", "claims": {"tenant": "t1", "scope": ["a", "b"]}},
    {"issuer": "demo", "aud": "api", "claims": {"iss": "https://evil"}},
    {"issuer": "demo", "aud": "api", "claims": {"admin": True, "tenant": None}},
    {"issuer": "demo", "aud": "evil", "ttl_seconds": 100000},
    {"issuer": "demo", "aud": [], "sub": ""},
    {"issuer": "demo", "digest": b64(hashlib.sha256(b"hello").digest())},
    {"issuer": "demo", "message": b64(b"hello"), "format": "raw"},
    {"issuer": "demo", "message": b64(b"hello"), "format": "jws"},
    {"issuer": "demo", "digest": "AAAA", "message": "AAAA"},
    {"token": "eyJhbGciOiJFUzI1NiJ9.e30.AAAA", "audience": "api"},
    {"token": "a.b.c", "audience": "api", "single_use": True},
    {"issuer": "signetd-audit"},
    {"jti": "0123456789abcdef", "exp": 1700000060},
    {"jti": ""},
]
write("request_bodies", [dumps(b) for b in bodies] + ['{"issuer":"demo","aud":"api",}', "[]", "{}"])

# ------------------------------------------------------------ JWS verify
# Compact tokens as received, and "header\npayload" pairs that the target signs.
header_es = {"alg": "ES256", "typ": "JWT", "kid": "es"}
header_ed = {"alg": "EdDSA", "typ": "JWT", "kid": "ed"}
claims = {"iss": "https://issuer.example", "aud": "api", "sub": "s",
          "iat": 1700000000, "exp": 1700000030, "jti": "j1"}
pairs = [
    (header_es, claims),
    (header_ed, claims),
    ({"alg": "Ed25519", "kid": "ed"}, {**claims, "aud": ["x", "api"], "nbf": 1700000000}),
    ({"alg": "none", "kid": "es"}, claims),
    ({"alg": "HS256", "kid": "es"}, claims),
    ({"alg": "ES256", "kid": "es", "crit": ["exp"]}, claims),
    ({"alg": "ES256"}, claims),
    (header_es, {**claims, "exp": 18446744073709551615}),
    (header_es, {**claims, "iat": 1700000100}),
    (header_es, {"iat": "1", "exp": 2}),
]
jws = [dumps(h) + "\n" + dumps(c) for h, c in pairs]
jws += [f"{b64(dumps(h).encode())}.{b64(dumps(c).encode())}.{b64(bytes(64))}" for h, c in pairs[:3]]
jws += ["", "a.b", "a.b.c.d", "..", "eyJ9.e30."]
write("jws_verify", jws)

# ------------------------------------------------------------ config
repo = ROOT.parent.parent
base = """[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "SIGNETD_TEST_UNUSED_PIN"

[issuers.demo]
iss = "https://issuer.example"
audiences = ["api"]
callers = ["uid:1000"]
"""
configs = [
    (repo / "config.example.toml").read_text(),
    base,
    base.replace('token_label = "t"', 'token_uri = "pkcs11:token=t;serial=00ab"'),
    base + '\n[listen]\nsocket = "/run/s.sock"\nsocket_mode = 0o660\nhttp = "off"\n',
    base + '\n[tls]\nlisten = "0.0.0.0:8443"\ncert = "/c.pem"\nkey = "/k.pem"\nclient_ca = "/ca.pem"\nmin_version = "1.2"\n',
    base + '\n[issuers.agents]\niss = "https://a.example"\nalgorithm = "EdDSA"\naudiences = ["x"]\n'
    'callers = ["spiffe://example.org/ns/*", "dns:a.example", "gid:50"]\nraw_sign = true\n'
    'max_ttl_seconds = 3600\nrate_per_principal = "10/s"\n',
    base + '\n[audit]\ndir = "/var/lib/signetd/audit"\n',
    base.replace('callers = ["uid:1000"]', 'callers = ["uid:1000"]\nmax_ttl_seconds = 7200'),
]
write("config_parse", configs)

# ------------------------------------------------------------ PKCS#11 URIs
uris = ["pkcs11:token=signetd;serial=1a2b3c4d", "pkcs11:token=my%20token;serial=00ab",
        "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2", "pkcs11:", "pkcs11:token=%zz",
        "pkcs11:token=a;token=b", "pkcs11:token=a?pin-value=1234", "pkcs11:object=key",
        "pkcs11:token=t?pin-source=file:/x&module-name=y", "token=t;serial=%41%4"]
write("pkcs11_uri", uris)

# ------------------------------------------------------------ audit segments
GENESIS_PREV = "0" * 64


def chain(records: list) -> bytes:
    lines, prev = [], GENESIS_PREV
    for seq, members in enumerate(records):
        line = dumps({"seq": seq, "time": "2026-01-01T00:00:00Z", **members, "prev": prev})
        lines.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    return ("\n".join(lines) + "\n").encode()


genesis = {"event": "genesis", "log_id": "0f1e2d3c4b5a6978", "segment": 1}
mint = {"event": "mint", "caller": {"transport": "unix", "uid": 1000, "gid": 1000, "pid": 7},
        "issuer": "demo", "kid": "k1", "jti": "j1", "outcome": "ok"}
refused = {"event": "refused", "request": "mint", "code": "audience_not_allowed",
           "detail": "x", "outcome": "refused"}
agg = {"event": "refused_aggregate", "count": 3, "codes": {"rate_limited": 3},
       "since": "2026-01-01T00:00:00Z"}
ckpt = {"event": "checkpoint", "checkpoint": "eyJhbGciOiJFUzI1NiJ9.eyJ0aW1lIjoiMjAyNi0wMS0wMVQwMDowMDowMFoifQ.AAAA"}
segments = [
    chain([genesis]),
    chain([genesis, mint, refused, agg]),
    chain([genesis, mint, ckpt]),
    chain([genesis, mint]) + b'{"seq":2,"time":"2026-',
    chain([{"event": "segment_start", "log_id": "0f1e2d3c4b5a6978", "segment": 2}, mint]),
    chain([genesis, {"event": "stop"}, {"event": "start"}, {"event": "key_observed", "kid": "k1"}]),
    # The fuzz find fixed in src/audit/verify.rs (kept as a regression seed).
    ('{"seq":18446744073709551615,"time":"2026-01-01T00:00:00Z","event":"segment_start",'
     '"log_id":"a","segment":1,"prev":"x"}\n').encode(),
]
write("audit_segment", segments)
