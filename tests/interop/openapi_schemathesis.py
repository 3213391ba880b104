"""schemathesis against a running signetd, from the OpenAPI document it serves.

Run by tests/daemon/openapi.rs (through scripts/test.sh's venv) as

    python -m pytest -q tests/interop/openapi_schemathesis.py

with SIGNETD_OPENAPI_HTTP (the plain loopback listener, http://HOST:PORT) and
SIGNETD_OPENAPI_SOCKET (the Unix socket). The public and audit operations are called
over TCP, where callers are anonymous (the checkpoint and verifier key are public; tiles
answer an anonymous caller 401); /metrics, the signing and verify operations over the
Unix socket, so
the daemon sees this process's uid (SO_PEERCRED) exactly as it sees any local caller:
requests-unixsocket2 gives requests a transport adapter for http+unix:// URLs, and the
socket is never forwarded to TCP (that would make the caller anonymous).

Every response must be no server error (5xx), have a documented status and content type,
and fit the schema of its status. SIGNETD_OPENAPI_EXAMPLES bounds the examples per
operation (default 25).

Over the socket the admin operations run too, but for revoking tokens (see below).
SIGNETD_OPENAPI_SVID_ISSUER names a jwt-svid issuer, whose SPIFFE bundle (the one 200
of that operation, which generated names never reach) is checked against its schema.
"""

import atexit
import collections
import json
import os
import urllib.parse

import hypothesis
import requests_unixsocket
import schemathesis
from schemathesis import checks

HTTP = os.environ["SIGNETD_OPENAPI_HTTP"]
SOCKET = os.environ["SIGNETD_OPENAPI_SOCKET"]
EXAMPLES = int(os.environ.get("SIGNETD_OPENAPI_EXAMPLES", "25"))
# Where to write how often each operation answered with each status, so the caller can
# tell that requests arrived where they should (a 200 from POST /v1/tokens means the
# daemon saw this process's uid on the socket).
SEEN_FILE = os.environ.get("SIGNETD_OPENAPI_SEEN")

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]

# The document as the daemon serves it on the plain listener.
schema = schemathesis.openapi.from_url(f"{HTTP}/openapi.json")

SOCKET_URL = "http+unix://" + urllib.parse.quote(SOCKET, safe="")
# schemathesis joins each operation's path onto the base URL with urljoin, which joins
# only for the schemes it knows to be hierarchical.
urllib.parse.uses_relative.append("http+unix")
urllib.parse.uses_netloc.append("http+unix")
unix_session = requests_unixsocket.Session()

seen = collections.Counter()


@atexit.register
def write_seen():
    if SEEN_FILE:
        with open(SEEN_FILE, "w") as f:
            json.dump({f"{k[0]} {k[1]}": v for k, v in sorted(seen.items())}, f, indent=1)


def call(case, **kwargs):
    response = case.call(**kwargs)
    seen[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)


SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
    database=None,
)


@schema.include(tag=["public", "health"]).parametrize()
@SETTINGS
def test_public_operations_over_tcp(case):
    call(case, base_url=HTTP)


@schema.include(tag=["audit"]).parametrize()
@SETTINGS
def test_audit_operations_over_tcp(case):
    call(case, base_url=HTTP)


# /metrics: any local caller on the socket may read it (over TCP anonymous callers get
# 401, which the public run above does not reach: the operation is tagged "operations").
@schema.include(tag=["operations"]).parametrize()
@SETTINGS
def test_operations_over_the_socket(case):
    call(case, base_url=SOCKET_URL, session=unix_session)


# The admin operations too (the daemon names this uid an admin), but for revoking tokens:
# the test token's state store is shared by every test of the run, and other tests count
# the revocations in it. The others only ever meet names and kids that do not exist.
@schema.include(tag=["signing", "verify", "admin"]).exclude(operation_id="revokeToken").parametrize()
@SETTINGS
def test_signing_verify_and_admin_over_the_socket(case):
    call(case, base_url=SOCKET_URL, session=unix_session)


def test_verify_answers_a_minted_token_by_the_schema():
    """Generated tokens never verify: mint a real one over the socket, then check the
    answers to it (valid, then replayed) against the document too."""
    mint = schema["/v1/tokens"]["POST"].Case(
        body={"issuer": "auth", "aud": "api", "claims": {"scope": "read"}},
        media_type="application/json",
    )
    minted = mint.call(base_url=SOCKET_URL, session=unix_session)
    mint.validate_response(minted, checks=CHECKS)
    assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    verify = schema["/v1/verify"]["POST"]
    answers = []
    for _ in range(2):
        case = verify.Case(
            body={"token": token, "audience": "api", "single_use": True},
            media_type="application/json",
        )
        response = case.call(base_url=SOCKET_URL, session=unix_session)
        case.validate_response(response, checks=CHECKS)
        answers.append((response.status_code, response.json()))
    assert answers[0][0] == 200 and answers[0][1]["claims"]["scope"] == "read", answers
    assert answers[1] == (422, answers[1][1]) and answers[1][1]["error"]["code"] == "replayed", answers


def test_a_jwt_svid_issuers_spiffe_bundle_by_the_schema():
    """Generated issuer names never name a jwt-svid issuer: ask for the one the daemon
    has, and check its bundle (200) against the document."""
    issuer = os.environ["SIGNETD_OPENAPI_SVID_ISSUER"]
    case = schema["/v1/issuers/{name}/spiffe-bundle"]["GET"].Case(path_parameters={"name": issuer})
    response = case.call(base_url=HTTP)
    seen[(case.operation.label, response.status_code)] += 1
    case.validate_response(response, checks=CHECKS)
    assert response.status_code == 200, response.text
    assert response.json()["keys"][0]["use"] == "jwt-svid", response.text
