#!/usr/bin/env python3
"""Decode signetd's key attestation extension independently of signetd.

Usage: decode_attestation.py CERT.pem

CERT.pem is a key certificate (PEM or DER; with a PEM chain, the first certificate
is the key's). Python `cryptography` finds the extension (id-signetd-keyAttestation,
arc 1 under signetd's UUID arc: see EXTENSION_OIDS; cryptography does not know it, so
it comes back as an UnrecognizedExtension) and asn1crypto decodes its DER value
against the ASN.1 module below. The result is printed as one JSON object:

    {"version": 1, "proof_level": "operator",
     "key_attributes": {"local": true, "never_extractable": true,
                        "always_sensitive": true, "extractable": false,
                        "sensitive": true},
     "key_type": 3, "curve": "1.2.840.10045.3.1.7", "key_id": "<kid>",
     "token": {"manufacturer": ..., "model": ..., "serial_number": ..., "label": ...}}

plus "oid" (the extension's OID) and "vendor_evidence" (hex) when present. Exit status: 0 decoded, 1 the
certificate has no such extension or it is malformed (not DER, critical, trailing
bytes, unknown proof level), 2 bad usage.

    KeyAttestation ::= SEQUENCE {
      version INTEGER, proofLevel ENUMERATED { operator(0), vendor(1) },
      keyAttributes SEQUENCE { local BOOLEAN, neverExtractable BOOLEAN,
        alwaysSensitive BOOLEAN, extractable BOOLEAN, sensitive BOOLEAN },
      keyType INTEGER, curve OBJECT IDENTIFIER, keyId OCTET STRING,
      token SEQUENCE { manufacturer UTF8String, model UTF8String,
        serialNumber UTF8String, label UTF8String },
      vendorEvidence [0] IMPLICIT OCTET STRING OPTIONAL }
"""

import json
import sys
import uuid

from asn1crypto import core
from cryptography import x509

# signetd's arc is the UUID c0e2f939-835e-4426-8e15-ad27a39b9920. The design names it
# 2.25.256390289157385788366357022237668383008; signetd writes it under Microsoft's arc
# for GUID-based OIDs (1.2.840.113556.1.8000.2554, the GUID split into arcs of at most
# 24 bits), because many parsers (pkilint's among them) cannot read a 128-bit arc. Both
# are derived here from the UUID, and either is accepted; "oid" in the output says which.
SIGNETD_UUID = uuid.UUID("c0e2f939-835e-4426-8e15-ad27a39b9920")


def _guid_arcs(u: uuid.UUID) -> list:
    h = u.hex
    return [int(h[a:b], 16) for a, b in ((0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 26), (26, 32))]


EXTENSION_OIDS = [
    x509.ObjectIdentifier(
        ".".join(str(a) for a in [1, 2, 840, 113556, 1, 8000, 2554, *_guid_arcs(SIGNETD_UUID), 1])
    ),
    x509.ObjectIdentifier(f"2.25.{SIGNETD_UUID.int}.1"),
]


class ProofLevel(core.Enumerated):
    _map = {0: "operator", 1: "vendor"}


class KeyAttributes(core.Sequence):
    _fields = [
        ("local", core.Boolean),
        ("never_extractable", core.Boolean),
        ("always_sensitive", core.Boolean),
        ("extractable", core.Boolean),
        ("sensitive", core.Boolean),
    ]


class TokenIdentity(core.Sequence):
    _fields = [
        ("manufacturer", core.UTF8String),
        ("model", core.UTF8String),
        ("serial_number", core.UTF8String),
        ("label", core.UTF8String),
    ]


class KeyAttestation(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("proof_level", ProofLevel),
        ("key_attributes", KeyAttributes),
        ("key_type", core.Integer),
        ("curve", core.ObjectIdentifier),
        ("key_id", core.OctetString),
        ("token", TokenIdentity),
        ("vendor_evidence", core.OctetString, {"implicit": 0, "optional": True}),
    ]


class Malformed(Exception):
    pass


def load_certificate(data: bytes) -> x509.Certificate:
    if b"-----BEGIN" in data:
        certs = x509.load_pem_x509_certificates(data)
        if not certs:
            raise Malformed("no certificate in the PEM file")
        return certs[0]
    return x509.load_der_x509_certificate(data)


def decode(der: bytes) -> dict:
    try:
        value = KeyAttestation.load(der, strict=True)
        native = value.native  # parses every field, raising on a malformed one
    except (ValueError, TypeError) as e:
        raise Malformed(f"the extension value does not decode as KeyAttestation: {e}") from e
    # DER, not just BER: re-encoding the parsed value must give back the same bytes.
    if value.dump(force=True) != der:
        raise Malformed("the extension value is not DER (it re-encodes differently)")
    if native["proof_level"] not in ("operator", "vendor"):
        raise Malformed(f"unknown proof level {native['proof_level']!r}")
    try:
        key_id = native["key_id"].decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"keyId is not UTF-8: {native['key_id'].hex()}") from e
    out = {
        "version": native["version"],
        "proof_level": native["proof_level"],
        "key_attributes": dict(native["key_attributes"]),
        "key_type": native["key_type"],
        "curve": native["curve"],
        "key_id": key_id,
        "token": dict(native["token"]),
    }
    if native["vendor_evidence"] is not None:
        out["vendor_evidence"] = native["vendor_evidence"].hex()
    return out


def main(argv: list) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr if len(argv) != 2 else sys.stdout)
        return 2 if len(argv) != 2 else 0
    try:
        with open(argv[1], "rb") as f:
            cert = load_certificate(f.read())
        found = [e for e in cert.extensions if e.oid in EXTENSION_OIDS]
        if len(found) != 1:
            names = " or ".join(o.dotted_string for o in EXTENSION_OIDS)
            raise Malformed(f"the certificate has {len(found)} signetd attestation extensions ({names}), expected 1")
        extension = found[0]
        if extension.critical:
            raise Malformed("the signetd attestation extension is marked critical; it must not be")
        if not isinstance(extension.value, x509.UnrecognizedExtension):
            raise Malformed(f"cryptography parsed the extension as {type(extension.value).__name__}")
        out = decode(extension.value.value)
        out["oid"] = extension.oid.dotted_string
        print(json.dumps(out, indent=2, sort_keys=False))
        return 0
    except (Malformed, ValueError, OSError) as e:
        print(f"decode_attestation: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
