//! X.509 certificates (RFC 5280 §4.1) as DER structures that keep object identifiers raw.
//!
//! x509-cert's own `Certificate` stores extension OIDs as `const_oid::ObjectIdentifier`,
//! whose arcs are 32-bit; signetd's extension lives under a UUID arc (`2.25.<128 bits>`),
//! so neither building nor parsing a certificate that carries it works through that type.
//! These structures mirror RFC 5280 field for field and reuse x509-cert's `Name`,
//! `Validity`, serial number and extension value types.

use der::asn1::{BitString, OctetString};
use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Sequence, Tag, Writer};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::Version;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;

/// An OBJECT IDENTIFIER held as its DER content octets, whatever the size of its arcs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oid(pub Vec<u8>);

impl Oid {
    /// Encodes arcs (each at most 128 bits) as DER content octets.
    pub fn from_arcs(arcs: &[u128]) -> Oid {
        assert!(
            arcs.len() >= 2 && arcs[0] <= 2,
            "an OID has at least two arcs"
        );
        let mut out = Vec::new();
        let mut push = |mut arc: u128| {
            let mut groups = vec![(arc & 0x7f) as u8];
            arc >>= 7;
            while arc > 0 {
                groups.push((arc & 0x7f) as u8 | 0x80);
                arc >>= 7;
            }
            out.extend(groups.iter().rev());
        };
        push(arcs[0] * 40 + arcs[1]);
        arcs[2..].iter().for_each(|a| push(*a));
        Oid(out)
    }

    /// The raw form of a well-known OID.
    pub fn of(oid: ObjectIdentifier) -> Oid {
        Oid(oid.as_bytes().to_vec())
    }
}

impl FixedTag for Oid {
    const TAG: Tag = Tag::ObjectIdentifier;
}

impl<'a> DecodeValue<'a> for Oid {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        Ok(Oid(reader.read_vec(header.length)?))
    }
}

impl EncodeValue for Oid {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }`.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct Extension {
    /// The extension's OID.
    pub extn_id: Oid,
    /// Whether a verifier that does not understand it must reject the certificate.
    #[asn1(default = "Default::default")]
    pub critical: bool,
    /// The DER of the extension's value.
    pub extn_value: OctetString,
}

/// `TBSCertificate` (RFC 5280 §4.1.2).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
#[allow(missing_docs)]
pub struct TbsCertificate {
    #[asn1(context_specific = "0", default = "Default::default")]
    pub version: Version,
    pub serial_number: SerialNumber,
    pub signature: AlgorithmIdentifierOwned,
    pub issuer: Name,
    pub validity: Validity,
    pub subject: Name,
    pub subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub issuer_unique_id: Option<BitString>,
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT", optional = "true")]
    pub subject_unique_id: Option<BitString>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    pub extensions: Option<Vec<Extension>>,
}

impl TbsCertificate {
    /// The extension with this OID, if present exactly once.
    pub fn extension(&self, oid: &Oid) -> Option<&Extension> {
        let mut found = self
            .extensions
            .iter()
            .flatten()
            .filter(|e| &e.extn_id == oid);
        match (found.next(), found.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }
}

/// `Certificate` (RFC 5280 §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
#[allow(missing_docs)]
pub struct Certificate {
    pub tbs_certificate: TbsCertificate,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: BitString,
}

impl Certificate {
    /// The subject public key's bytes (a SEC1 point, or the raw Ed25519 key).
    pub fn public_key(&self) -> &[u8] {
        self.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes()
    }
}

/// PEM-encodes DER certificates, one block each.
pub fn to_pem(certificates: &[Vec<u8>]) -> String {
    certificates
        .iter()
        .map(|der| {
            der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
                .expect("PEM encoding of bytes cannot fail")
        })
        .collect()
}

/// Decodes every `CERTIFICATE` block of a PEM text, in order.
pub fn from_pem(text: &str) -> Result<Vec<Vec<u8>>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let end = rest[start..]
            .find(END)
            .ok_or("a certificate block has no END line")?
            + start
            + END.len();
        let (label, der) = der::pem::decode_vec(&rest.as_bytes()[start..end])
            .map_err(|e| format!("bad PEM block: {e}"))?;
        if label != "CERTIFICATE" {
            return Err(format!("unexpected PEM label {label}"));
        }
        out.push(der);
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block found".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_arcs_encode_as_base_128() {
        // 2.25.x: first octet 2*40+25; 2^128-1 needs 19 base-128 groups.
        assert_eq!(Oid::from_arcs(&[2, 25, 1]).0, vec![0x69, 0x01]);
        assert_eq!(
            Oid::from_arcs(&[1, 2, 840, 10045]).0,
            vec![0x2a, 0x86, 0x48, 0xce, 0x3d]
        );
        let big = Oid::from_arcs(&[2, 25, u128::MAX]).0;
        assert_eq!(big.len(), 1 + 19);
        assert_eq!(big[1], 0x83);
        assert_eq!(*big.last().unwrap(), 0x7f);
    }
}
