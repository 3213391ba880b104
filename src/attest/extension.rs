//! The signetd key attestation extension: what the token reported about a key when it
//! was read back after generation. The ASN.1 module is in `docs/attestation.md`.

use der::asn1::{ObjectIdentifier, OctetString};
use der::{Enumerated, Sequence};

use super::certificate::Oid;
use crate::algorithm::Algorithm;
use crate::hsm::{KeyAttributes, TokenIdentity};

/// signetd's OID arc: its UUID `c0e2f939-835e-4426-8e15-ad27a39b9920` (the design's
/// `2.25.256390289157385788366357022237668383008`) written under Microsoft's arc for
/// GUID-based OIDs, `1.2.840.113556.1.8000.2554`, which splits a GUID into arcs of at
/// most 24 bits. The `2.25` form has a 128-bit arc that pkilint (pyasn1-fasder), Go's
/// `encoding/asn1` and RustCrypto's `const-oid` cannot parse; this form names the same
/// UUID and every parser reads it. See `docs/attestation.md`.
pub const SIGNETD_ARC: [u128; 14] = [
    1, 2, 840, 113_556, 1, 8000, 2554, 49_378, 63_801, 33_630, 17_446, 36_373, 11_347_875,
    10_197_280,
];

/// `id-signetd-keyAttestation ::= { signetd-arc 1 }`.
pub fn oid() -> Oid {
    let mut arcs = SIGNETD_ARC.to_vec();
    arcs.push(1);
    Oid::from_arcs(&arcs)
}

/// The dotted form of [`oid`].
pub fn oid_string() -> String {
    let arcs: Vec<String> = SIGNETD_ARC.iter().map(u128::to_string).collect();
    format!("{}.1", arcs.join("."))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_arc_is_the_designs_uuid() {
        // The GUID's hex groups, as Microsoft's GUID arc splits them.
        let hex = "c0e2f939835e44268e15ad27a39b9920";
        let groups = [
            (0, 4),
            (4, 8),
            (8, 12),
            (12, 16),
            (16, 20),
            (20, 26),
            (26, 32),
        ];
        let arcs: Vec<u128> = groups
            .iter()
            .map(|&(a, b)| u128::from_str_radix(&hex[a..b], 16).unwrap())
            .collect();
        assert_eq!(&super::SIGNETD_ARC[7..], arcs.as_slice());
        assert_eq!(
            u128::from_str_radix(hex, 16).unwrap(),
            256_390_289_157_385_788_366_357_022_237_668_383_008
        );
        // Every arc fits 32 bits, so const-oid itself can parse it.
        assert!(der::asn1::ObjectIdentifier::new(&super::oid_string()).is_ok());
    }
}

/// `CKK_EC`.
pub const CKK_EC: u32 = 0x03;
/// `CKK_EC_EDWARDS`.
pub const CKK_EC_EDWARDS: u32 = 0x40;
/// prime256v1 (P-256).
pub const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// id-Ed25519.
pub const ID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// How strong the evidence is that the key lives in hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Enumerated, serde::Serialize)]
#[repr(u32)]
#[serde(rename_all = "lowercase")]
pub enum ProofLevel {
    /// The operator's attestation CA vouches for what the token reported (SoftHSM2, or
    /// an HSM without vendor attestation).
    Operator = 0,
    /// The HSM vendor's own attestation is attached (`vendorEvidence`).
    Vendor = 1,
}

/// `KeyAttributes ::= SEQUENCE { local, neverExtractable, alwaysSensitive, extractable, sensitive }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Sequence)]
#[allow(missing_docs)]
pub struct AttributesDer {
    pub local: bool,
    pub never_extractable: bool,
    pub always_sensitive: bool,
    pub extractable: bool,
    pub sensitive: bool,
}

/// `TokenIdentity ::= SEQUENCE { manufacturer, model, serialNumber, label }` (UTF8String).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
#[allow(missing_docs)]
pub struct TokenDer {
    pub manufacturer: String,
    pub model: String,
    pub serial_number: String,
    pub label: String,
}

/// `KeyAttestation`, the extension's value.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct KeyAttestation {
    /// Format version: 1.
    pub version: u8,
    /// `operator` or `vendor`.
    pub proof_level: ProofLevel,
    /// The attributes the token reported for the private key.
    pub key_attributes: AttributesDer,
    /// `CKA_KEY_TYPE`: `CKK_EC` or `CKK_EC_EDWARDS`.
    pub key_type: u32,
    /// The curve: prime256v1 or id-Ed25519.
    pub curve: ObjectIdentifier,
    /// `CKA_ID` of the key (the kid).
    pub key_id: OctetString,
    /// The token that generated the key.
    pub token: TokenDer,
    /// The HSM vendor's own attestation, for proof level `vendor`.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub vendor_evidence: Option<OctetString>,
}

impl KeyAttestation {
    /// The extension value for a key as the token described it.
    pub fn new(
        algorithm: Algorithm,
        key_id: &[u8],
        attributes: KeyAttributes,
        token: &TokenIdentity,
    ) -> Self {
        let (key_type, curve) = match algorithm {
            Algorithm::Es256 => (CKK_EC, PRIME256V1),
            Algorithm::EdDsa => (CKK_EC_EDWARDS, ID_ED25519),
        };
        KeyAttestation {
            version: 1,
            proof_level: ProofLevel::Operator,
            key_attributes: AttributesDer {
                local: attributes.local,
                never_extractable: attributes.never_extractable,
                always_sensitive: attributes.always_sensitive,
                extractable: attributes.extractable,
                sensitive: attributes.sensitive,
            },
            key_type,
            curve,
            key_id: OctetString::new(key_id).expect("a kid is a valid OCTET STRING"),
            token: TokenDer {
                manufacturer: token.manufacturer.clone(),
                model: token.model.clone(),
                serial_number: token.serial.clone(),
                label: token.label.clone(),
            },
            vendor_evidence: None,
        }
    }

    /// True when the attributes say the key was generated in the token and can never leave it.
    pub fn is_hardware_bound(&self) -> bool {
        let a = &self.key_attributes;
        a.local && a.never_extractable && a.always_sensitive && !a.extractable && a.sensitive
    }
}
