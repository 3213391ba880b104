//! The attestation CA: its key, its certificate (self-signed, or issued by the
//! operator's CA from a CSR), and the certificates it issues to issuer keys.
//!
//! The CA key pair is in the token (`CKA_ID` `signetd-attestation-ca`); its certificate
//! and the operator's chain above it are in the state store ([`KeyMetadata::ca_chain`]),
//! and each key's certificate is stored with the key's row by whoever makes the key. The
//! CA is in one of three states, reported by [`CaState`]: missing, key generated but not
//! yet certified (a CSR is out, or a ceremony stopped midway), or ready.

use std::time::SystemTime;

use super::certificate::to_pem;
use super::extension::KeyAttestation;
use super::profile::{self, CaSigner, KeySubject};
use super::verify;
use crate::algorithm::Algorithm;
use crate::hsm::{Hsm, HsmError, KeyPairInfo};
use crate::signer::{KeyRef, SignError};
use crate::store::{KeyMetadata, StoreError};

/// `CKA_ID` of the CA key pair and its certificate objects.
pub const CA_ID: &[u8] = b"signetd-attestation-ca";
/// `CKA_LABEL` of the CA key pair.
pub const CA_KEY_LABEL: &str = "signetd-ca/key";

/// Why an attestation step failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// The store has the CA's certificate, the token no CA key.
    #[error(
        "the state store holds an attestation CA certificate but the token has no attestation CA key \
         (the key was deleted, or the store belongs to another token)"
    )]
    CaKeyMissing,
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

/// Reads the CA's state: its key pair from the token, its chain from the store.
pub async fn load(hsm: &Hsm, meta: &dyn KeyMetadata) -> Result<CaState, AttestError> {
    let chain = meta.ca_chain().await?;
    let Some(pair) = hsm.key_pair_by_id(CA_ID.to_vec()).await? else {
        if chain.is_empty() {
            return Ok(CaState::Missing);
        }
        return Err(AttestError::CaKeyMissing);
    };
    let Some(own) = chain.first() else {
        return Ok(CaState::KeyOnly(pair));
    };
    let cert = verify::parse(own).map_err(AttestError::BadChain)?;
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
    Ok(CaState::Ready(AttestationCa {
        signer,
        public_key: pair.public_key,
        chain,
    }))
}

/// Loads the CA and requires it to be ready.
pub async fn ready(hsm: &Hsm, meta: &dyn KeyMetadata) -> Result<AttestationCa, AttestError> {
    match load(hsm, meta).await? {
        CaState::Ready(ca) => Ok(ca),
        CaState::KeyOnly(_) => Err(AttestError::CaNotCertified),
        CaState::Missing => Err(AttestError::NoCa),
    }
}

/// Generates the CA key in the token (the same non-extractable template as issuer keys).
pub async fn create_key(hsm: &Hsm, meta: &dyn KeyMetadata) -> Result<KeyPairInfo, AttestError> {
    match load(hsm, meta).await? {
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

/// Destroys a CA key that was never certified (undoing an interrupted root ceremony);
/// returns its public key, for the record of what was destroyed.
pub async fn destroy_uncertified(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
) -> Result<Vec<u8>, AttestError> {
    match load(hsm, meta).await? {
        CaState::KeyOnly(pair) => {
            hsm.destroy_key_pair(pair.id).await?;
            Ok(pair.public_key)
        }
        CaState::Missing => Err(AttestError::NoCa),
        CaState::Ready(_) => Err(AttestError::CaExists(
            "; a certified CA is never destroyed by signetd".to_string(),
        )),
    }
}

/// Certifies the CA key with a self-signed certificate valid for `days`.
pub async fn self_sign(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    pair: &KeyPairInfo,
    subject: &str,
    days: u32,
) -> Result<AttestationCa, AttestError> {
    let name = profile::name(&[("CN", subject), ("O", "signetd")]);
    let cert = profile::self_signed_ca(hsm, &ca_kid(), &pair.public_key, name, days).await?;
    store_chain(hsm, meta, vec![cert]).await
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
    meta: &dyn KeyMetadata,
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
    store_chain(hsm, meta, chain).await
}

/// Stores the CA's chain in the state store, unless another process stored one first,
/// and reads the CA back.
async fn store_chain(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    chain: Vec<Vec<u8>>,
) -> Result<AttestationCa, AttestError> {
    for der in &chain {
        verify::parse(der).map_err(AttestError::BadChain)?;
    }
    if !meta.put_ca_chain(&chain, crate::util::unix_now()).await? {
        return Err(AttestError::CaExists(
            " (another process certified it first)".to_string(),
        ));
    }
    match load(hsm, meta).await? {
        CaState::Ready(ca) => Ok(ca),
        _ => Err(AttestError::BadChain(
            "the stored chain did not load back".to_string(),
        )),
    }
}

/// Issues the attestation certificate (DER) of a key the token just described. Whoever
/// makes the key stores it with the key's row.
///
/// Refuses if the token reports the key as anything but sensitive, always-sensitive,
/// never-extractable and local.
pub async fn attest_key(
    hsm: &Hsm,
    ca: &AttestationCa,
    pair: &KeyPairInfo,
    kid: &str,
    issuer: &str,
    days: u32,
) -> Result<Vec<u8>, AttestError> {
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
    verify::parse(&cert).map_err(AttestError::BadChain)?;
    Ok(cert)
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
