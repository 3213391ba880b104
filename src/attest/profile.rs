//! The certificate profile: what signetd puts in the attestation CA's certificate, its
//! CSR, and each key's certificate. Every signature is made by the CA key in the token.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use der::asn1::{Any, BitString, OctetString, SetOfVec};
use der::{Decode, Encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::attr::Attribute;
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::certificate::{Certificate, Extension, Oid, TbsCertificate};
use super::extension::{self, ID_ED25519, KeyAttestation, PRIME256V1};
use crate::algorithm::Algorithm;
use crate::signer::{KeyRef, SignError, SignInput, Signer};

/// id-ecPublicKey.
pub const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// ecdsa-with-SHA256.
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_EXTENSION_REQ: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");

/// The attestation CA as a certificate issuer: its name, key identifier and key.
#[derive(Clone, Debug)]
pub struct CaSigner {
    /// The CA certificate's subject, the issuer of every key certificate.
    pub name: Name,
    /// The CA's subject key identifier.
    pub key_id: Vec<u8>,
    /// The key id (`CKA_ID`) of the CA key pair in the token.
    pub kid: String,
    /// The CA's public key (SEC1 uncompressed point).
    pub public_key: Vec<u8>,
}

/// The SubjectPublicKeyInfo of a public key as the token returns it.
pub fn spki(algorithm: Algorithm, public_key: &[u8]) -> SubjectPublicKeyInfoOwned {
    let algorithm = match algorithm {
        Algorithm::Es256 => AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(Any::from(&PRIME256V1)),
        },
        Algorithm::EdDsa => AlgorithmIdentifierOwned {
            oid: ID_ED25519,
            parameters: None,
        },
    };
    SubjectPublicKeyInfoOwned {
        algorithm,
        subject_public_key: BitString::from_bytes(public_key)
            .expect("a public key fits a BIT STRING"),
    }
}

/// RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits.
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

/// A random positive serial number of 16 octets (RFC 5280 §4.1.2.2 allows up to 20).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and without a leading zero octet, so exactly 16 octets
    SerialNumber::new(&bytes).expect("16 octets is a valid serial number")
}

/// Validity from one minute ago (clock skew) for `days`. UTCTime up to 2049, then
/// GeneralizedTime, as RFC 5280 §4.1.2.5 requires.
pub fn validity(days: u32) -> Validity {
    let from = SystemTime::now() - Duration::from_secs(60);
    let until = from + Duration::from_secs(u64::from(days) * 86_400);
    let time = |t: SystemTime| {
        let year_2050 = SystemTime::UNIX_EPOCH + Duration::from_secs(2_524_608_000);
        if t < year_2050 {
            Time::UtcTime(der::asn1::UtcTime::from_system_time(t).expect("a time after 1970"))
        } else {
            Time::GeneralTime(
                der::asn1::GeneralizedTime::from_system_time(t).expect("a time before 9999"),
            )
        }
    };
    Validity {
        not_before: time(from),
        not_after: time(until),
    }
}

fn ecdsa_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

fn ext<T: Encode>(oid: ObjectIdentifier, critical: bool, value: &T) -> Extension {
    Extension {
        extn_id: Oid::of(oid),
        critical,
        extn_value: OctetString::new(value.to_der().expect("extension values encode"))
            .expect("fits"),
    }
}

/// Names are written in RFC 4514 form; values are escaped so a kid or issuer name can
/// never inject another attribute.
pub fn name(attributes: &[(&str, &str)]) -> Name {
    let escaped: Vec<String> = attributes
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .chars()
                .flat_map(|c| match c {
                    ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("{k}={v}")
        })
        .collect();
    Name::from_str(&escaped.join(",")).expect("escaped RFC 4514 names parse")
}

/// Signs a TBS structure with the CA key and assembles the certificate (DER).
async fn sign_tbs(
    signer: &dyn Signer,
    ca: KeyRef<'_>,
    tbs: TbsCertificate,
) -> Result<Vec<u8>, SignError> {
    let tbs_der = tbs.to_der().expect("a TBS certificate encodes");
    let raw = signer.sign(ca, SignInput::Message(tbs_der)).await?;
    let signature = ecdsa_signature(&raw)?;
    let certificate = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(signature.to_der().as_bytes()).expect("fits"),
    };
    Ok(certificate.to_der().expect("a certificate encodes"))
}

/// The self-signed certificate of the attestation CA.
pub async fn self_signed_ca(
    signer: &dyn Signer,
    kid: &str,
    public_key: &[u8],
    subject: Name,
    days: u32,
) -> Result<Vec<u8>, SignError> {
    let spki = spki(Algorithm::Es256, public_key);
    let key_id = key_identifier(&spki);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial(),
        signature: ecdsa_sha256(),
        issuer: subject.clone(),
        validity: validity(days),
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(ca_extensions(&key_id)),
    };
    sign_tbs(signer, es256(kid, public_key), tbs).await
}

fn ca_extensions(key_id: &[u8]) -> Vec<Extension> {
    vec![
        ext(
            BasicConstraints::OID,
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: Some(0),
            },
        ),
        ext(
            KeyUsage::OID,
            true,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature),
        ),
        ext(
            SubjectKeyIdentifier::OID,
            false,
            &SubjectKeyIdentifier(OctetString::new(key_id).expect("fits")),
        ),
    ]
}

/// A PKCS#10 request for the attestation CA key, signed by it, asking for the CA
/// extensions signetd needs (an operator's CA may add its own).
pub async fn ca_request(
    signer: &dyn Signer,
    kid: &str,
    public_key: &[u8],
    subject: Name,
) -> Result<Vec<u8>, SignError> {
    let spki = spki(Algorithm::Es256, public_key);
    let key_id = key_identifier(&spki);
    let requested = ca_extensions(&key_id).to_der().expect("extensions encode");
    let mut values = SetOfVec::new();
    values
        .insert(Any::from_der(&requested).expect("re-decodes"))
        .expect("one value");
    let mut attributes = SetOfVec::new();
    attributes
        .insert(Attribute {
            oid: ID_EXTENSION_REQ,
            values,
        })
        .expect("one attribute");
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject,
        public_key: spki,
        attributes,
    };
    let info_der = info.to_der().expect("a request encodes");
    let raw = signer
        .sign(es256(kid, public_key), SignInput::Message(info_der))
        .await?;
    let signature = ecdsa_signature(&raw)?;
    let request = CertReq {
        info,
        algorithm: ecdsa_sha256(),
        signature: BitString::from_bytes(signature.to_der().as_bytes()).expect("fits"),
    };
    Ok(request.to_der().expect("a request encodes"))
}

/// What a key certificate says about its key.
pub struct KeySubject<'a> {
    /// The key id.
    pub kid: &'a str,
    /// The issuer the key belongs to.
    pub issuer: &'a str,
    /// The key's algorithm.
    pub algorithm: Algorithm,
    /// The public key as the token returns it.
    pub public_key: &'a [u8],
    /// The signetd extension's value.
    pub attestation: &'a KeyAttestation,
}

/// Issues a key's attestation certificate, signed by the CA.
pub async fn key_certificate(
    signer: &dyn Signer,
    ca: &CaSigner,
    key: &KeySubject<'_>,
    days: u32,
) -> Result<Vec<u8>, SignError> {
    let spki = spki(key.algorithm, key.public_key);
    let key_id = key_identifier(&spki);
    let extensions = vec![
        ext(
            BasicConstraints::OID,
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        ),
        ext(
            KeyUsage::OID,
            true,
            &KeyUsage(KeyUsages::DigitalSignature.into()),
        ),
        ext(
            SubjectKeyIdentifier::OID,
            false,
            &SubjectKeyIdentifier(OctetString::new(key_id).expect("fits")),
        ),
        ext(
            AuthorityKeyIdentifier::OID,
            false,
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(ca.key_id.clone()).expect("fits")),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
        ),
        Extension {
            extn_id: extension::oid(),
            critical: false,
            extn_value: OctetString::new(key.attestation.to_der().expect("encodes")).expect("fits"),
        },
    ];
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial(),
        signature: ecdsa_sha256(),
        issuer: ca.name.clone(),
        validity: validity(days),
        subject: name(&[("CN", key.kid), ("OU", key.issuer), ("O", "signetd")]),
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    sign_tbs(signer, es256(&ca.kid, &ca.public_key), tbs).await
}

/// The CA key, an ES256 key, as the signer port names it.
fn es256<'a>(kid: &'a str, public_key: &'a [u8]) -> KeyRef<'a> {
    KeyRef {
        kid,
        algorithm: Algorithm::Es256,
        public_key,
    }
}

/// The signer's raw `r‖s` as an ECDSA signature, for DER encoding.
fn ecdsa_signature(raw: &[u8]) -> Result<p256::ecdsa::Signature, SignError> {
    p256::ecdsa::Signature::from_slice(raw)
        .map_err(|e| SignError::Unavailable(format!("the CA key made an invalid signature: {e}")))
}

/// SHA-256 of a DER certificate, the `x5t#S256` thumbprint.
pub fn thumbprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

use der::oid::AssociatedOid;
