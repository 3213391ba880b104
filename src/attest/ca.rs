//! The attestation CA in the token: its key, its certificate (self-signed, or issued by
//! the operator's CA from a CSR), and the certificates it issues to issuer keys.
//!
//! Everything lives in the token: the CA key pair (`CKA_ID` `signetd-attestation-ca`),
//! its certificate, the operator's chain above it, and each key's certificate
//! (`signetd-cert/KID`). The CA is in one of three states, reported by [`CaState`]:
//! missing, key generated but not yet certified (a CSR is out, or a ceremony stopped
//! midway), or ready.

use std::time::SystemTime;

use der::Encode;

use super::certificate::to_pem;
use super::extension::KeyAttestation;
use super::profile::{self, CaSigner, KeySubject};
use super::verify;
use crate::algorithm::Algorithm;
use crate::hsm::{CertificateObject, Hsm, HsmError, KeyPairInfo};
use crate::signer::{KeyRef, SignError};

/// `CKA_ID` of the CA key pair and its certificate objects.
pub const CA_ID: &[u8] = b"signetd-attestation-ca";
/// `CKA_LABEL` of the CA key pair.
pub const CA_KEY_LABEL: &str = "signetd-ca/key";
/// `CKA_LABEL` of the CA's certificate.
pub const CA_CERT_LABEL: &str = "signetd-ca/certificate";
/// Prefix of the labels of the chain above the CA: `signetd-ca/chain/01`, `/02`, ...
pub const CA_CHAIN_PREFIX: &str = "signetd-ca/chain/";
/// Prefix of the labels of key certificates: `signetd-cert/KID`.
pub const KEY_CERT_PREFIX: &str = "signetd-cert/";

/// Why an attestation step failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The CA key could not sign.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// There is no attestation CA yet.
    #[error(
        "the token has no attestation CA: run scripts/ceremony/root.sh (or `signetd attest init-ca`)"
    )]
    NoCa,
    /// The CA key exists but has no certificate yet.
    #[error(
        "the attestation CA key has no certificate yet: import the operator CA's chain \
         (`signetd attest import-chain`), self-sign it (`signetd attest init-ca --self-signed`), \
         or undo with `signetd attest init-ca --undo`"
    )]
    CaNotCertified,
    /// The CA already exists.
    #[error("the token already has an attestation CA{0}")]
    CaExists(String),
    /// A key that could leave the token is never attested.
    #[error(
        "refusing to attest key {kid}: the token reports it is not sensitive, never-extractable and local ({attributes:?})"
    )]
    NotHardwareBound {
        /// The key.
        kid: String,
        /// What the token reported.
        attributes: crate::hsm::KeyAttributes,
    },
    /// An imported chain does not fit the CA key.
    #[error("the chain cannot be imported: {0}")]
    BadChain(String),
}

/// The CA, ready to issue certificates.
#[derive(Clone, Debug)]
pub struct AttestationCa {
    /// Signs key certificates.
    pub signer: CaSigner,
    /// The CA's public key (SEC1 uncompressed point).
    pub public_key: Vec<u8>,
    /// The CA's certificate, then the operator's chain above it (DER, in order).
    pub chain: Vec<Vec<u8>>,
}

impl AttestationCa {
    /// The CA chain as PEM.
    pub fn chain_pem(&self) -> String {
        to_pem(&self.chain)
    }

    /// The top of the chain: the self-signed CA certificate, or the operator's highest
    /// certificate (normally its root).
    pub fn top(&self) -> &[u8] {
        self.chain.last().expect("a ready CA has a certificate")
    }
}

/// Where the CA is in its life.
#[derive(Debug)]
pub enum CaState {
    /// No CA key.
    Missing,
    /// The CA key exists but is not certified yet.
    KeyOnly(KeyPairInfo),
    /// Ready to issue.
    Ready(AttestationCa),
}

/// Reads the CA's state from the token.
pub async fn load(hsm: &Hsm) -> Result<CaState, AttestError> {
    let Some(pair) = hsm.key_pair_by_id(CA_ID.to_vec()).await? else {
        return Ok(CaState::Missing);
    };
    let mut certs = hsm.certificates("signetd-ca/").await?;
    let Some(own) = certs.iter().position(|c| c.label == CA_CERT_LABEL) else {
        return Ok(CaState::KeyOnly(pair));
    };
    let own = certs.remove(own);
    let mut above: Vec<_> = certs
        .into_iter()
        .filter(|c| c.label.starts_with(CA_CHAIN_PREFIX))
        .collect();
    above.sort_by(|a, b| a.label.cmp(&b.label));
    let cert = verify::parse(&own.value).map_err(AttestError::BadChain)?;
    if cert.public_key() != pair.public_key {
        return Err(AttestError::BadChain(
            "the stored CA certificate is not for the CA key".to_string(),
        ));
    }
    let signer = CaSigner {
        name: cert.tbs_certificate.subject.clone(),
        key_id: profile::key_identifier(&cert.tbs_certificate.subject_public_key_info),
        kid: ca_kid(),
        public_key: pair.public_key.clone(),
    };
    let mut chain = vec![own.value];
    chain.extend(above.into_iter().map(|c| c.value));
    Ok(CaState::Ready(AttestationCa {
        signer,
        public_key: pair.public_key,
        chain,
    }))
}

/// Loads the CA and requires it to be ready.
pub async fn ready(hsm: &Hsm) -> Result<AttestationCa, AttestError> {
    match load(hsm).await? {
        CaState::Ready(ca) => Ok(ca),
        CaState::KeyOnly(_) => Err(AttestError::CaNotCertified),
        CaState::Missing => Err(AttestError::NoCa),
    }
}

/// Generates the CA key in the token (the same non-extractable template as issuer keys).
pub async fn create_key(hsm: &Hsm) -> Result<KeyPairInfo, AttestError> {
    match load(hsm).await? {
        CaState::Missing => {}
        CaState::KeyOnly(_) => {
            return Err(AttestError::CaExists(
                " key (not yet certified)".to_string(),
            ));
        }
        CaState::Ready(_) => return Err(AttestError::CaExists(String::new())),
    }
    let pair = hsm
        .generate_key_pair(Algorithm::Es256, CA_ID.to_vec(), CA_KEY_LABEL.to_string())
        .await?;
    if !pair.attributes.is_hardware_bound() {
        hsm.destroy_key_pair(pair.id).await?;
        return Err(AttestError::NotHardwareBound {
            kid: "attestation CA".to_string(),
            attributes: pair.attributes,
        });
    }
    Ok(pair)
}

/// Destroys a CA key that was never certified (undoing an interrupted root ceremony).
pub async fn destroy_uncertified(hsm: &Hsm) -> Result<(), AttestError> {
    match load(hsm).await? {
        CaState::KeyOnly(pair) => Ok(hsm.destroy_key_pair(pair.id).await?),
        CaState::Missing => Err(AttestError::NoCa),
        CaState::Ready(_) => Err(AttestError::CaExists(
            "; a certified CA is never destroyed by signetd".to_string(),
        )),
    }
}

/// Certifies the CA key with a self-signed certificate valid for `days`.
pub async fn self_sign(
    hsm: &Hsm,
    pair: &KeyPairInfo,
    subject: &str,
    days: u32,
) -> Result<AttestationCa, AttestError> {
    let name = profile::name(&[("CN", subject), ("O", "signetd")]);
    let cert = profile::self_signed_ca(hsm, &ca_kid(), &pair.public_key, name, days).await?;
    store_chain(hsm, pair, vec![cert]).await
}

/// A PKCS#10 request (DER) for the CA key, for the operator's own CA.
pub async fn request(hsm: &Hsm, pair: &KeyPairInfo, subject: &str) -> Result<Vec<u8>, AttestError> {
    let name = profile::name(&[("CN", subject), ("O", "signetd")]);
    Ok(profile::ca_request(hsm, &ca_kid(), &pair.public_key, name).await?)
}

/// Imports the chain the operator's CA returned: the CA's certificate first, then the
/// certificates above it. The first must certify the CA key, each must be signed by the
/// next, and every issuer must be a CA.
pub async fn import_chain(
    hsm: &Hsm,
    pair: &KeyPairInfo,
    chain: Vec<Vec<u8>>,
) -> Result<AttestationCa, AttestError> {
    let first = chain
        .first()
        .ok_or_else(|| AttestError::BadChain("the chain is empty".to_string()))?;
    let cert = verify::parse(first).map_err(AttestError::BadChain)?;
    if cert.public_key() != pair.public_key {
        return Err(AttestError::BadChain(
            "the first certificate is not for this token's attestation CA key".to_string(),
        ));
    }
    if !verify::is_attestation_ca(&cert) {
        return Err(AttestError::BadChain(
            "the CA's certificate must be a CA certificate (basicConstraints cA) with keyCertSign and \
             digitalSignature key usage: the CA key signs certificates and ceremony transcripts"
                .to_string(),
        ));
    }
    let top = chain.last().expect("non-empty").clone();
    let (verdict, _) = verify::verify_chain(&chain, &top, SystemTime::now());
    if let Some(failure) = verdict.first_failure() {
        return Err(AttestError::BadChain(format!(
            "{}: {}",
            failure.name, failure.detail
        )));
    }
    store_chain(hsm, pair, chain).await
}

async fn store_chain(
    hsm: &Hsm,
    pair: &KeyPairInfo,
    chain: Vec<Vec<u8>>,
) -> Result<AttestationCa, AttestError> {
    // What was stored so far, by id, label and value: what names a certificate object.
    let mut stored: Vec<CertificateObject> = Vec::new();
    let result = async {
        for (i, der) in chain.iter().enumerate() {
            let cert = verify::parse(der).map_err(AttestError::BadChain)?;
            let subject = cert.tbs_certificate.subject.to_der().expect("names encode");
            let label = if i == 0 {
                CA_CERT_LABEL.to_string()
            } else {
                format!("{CA_CHAIN_PREFIX}{i:02}")
            };
            hsm.create_certificate(CA_ID.to_vec(), label.clone(), subject, der.clone())
                .await?;
            stored.push(CertificateObject {
                label,
                id: CA_ID.to_vec(),
                value: der.clone(),
            });
        }
        Ok::<(), AttestError>(())
    }
    .await;
    if let Err(e) = result {
        for object in stored {
            let _ = hsm
                .destroy_certificate(&object.id, &object.label, &object.value)
                .await;
        }
        return Err(e);
    }
    match load(hsm).await? {
        CaState::Ready(ca) => {
            let _ = pair;
            Ok(ca)
        }
        _ => Err(AttestError::BadChain(
            "the stored chain did not load back".to_string(),
        )),
    }
}

/// Issues and stores the attestation certificate of a key the token just described, and
/// returns the stored object (its `value` is the DER certificate).
///
/// Refuses, creating nothing, if the token reports the key as anything but sensitive,
/// always-sensitive, never-extractable and local.
pub async fn attest_key(
    hsm: &Hsm,
    ca: &AttestationCa,
    pair: &KeyPairInfo,
    kid: &str,
    issuer: &str,
    days: u32,
) -> Result<CertificateObject, AttestError> {
    if !pair.attributes.is_hardware_bound() {
        return Err(AttestError::NotHardwareBound {
            kid: kid.to_string(),
            attributes: pair.attributes,
        });
    }
    let attestation = KeyAttestation::new(pair.algorithm, &pair.id, pair.attributes, hsm.token());
    let subject = KeySubject {
        kid,
        issuer,
        algorithm: pair.algorithm,
        public_key: &pair.public_key,
        attestation: &attestation,
    };
    let cert = profile::key_certificate(hsm, &ca.signer, &subject, days).await?;
    let parsed = verify::parse(&cert).map_err(AttestError::BadChain)?;
    let subject_der = parsed
        .tbs_certificate
        .subject
        .to_der()
        .expect("names encode");
    let object = CertificateObject {
        label: format!("{KEY_CERT_PREFIX}{kid}"),
        id: pair.id.clone(),
        value: cert,
    };
    hsm.create_certificate(
        object.id.clone(),
        object.label.clone(),
        subject_der,
        object.value.clone(),
    )
    .await?;
    Ok(object)
}

/// The CA key, for signing transcripts through the signer port.
pub fn signing_key(ca: &AttestationCa) -> KeyRef<'_> {
    KeyRef {
        kid: &ca.signer.kid,
        algorithm: Algorithm::Es256,
        public_key: &ca.signer.public_key,
    }
}

/// [`CA_ID`] as the key id the signer port takes.
fn ca_kid() -> String {
    String::from_utf8_lossy(CA_ID).into_owned()
}
