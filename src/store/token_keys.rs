//! Key metadata as versions before the state store kept it in the PKCS#11 token: a
//! private `CKO_DATA` object per key state (`signetd-state/KID`, JSON), a private
//! `CKO_CERTIFICATE` per key (`signetd-cert/KID`), and the attestation CA's certificate
//! and chain (`signetd-ca/certificate`, `signetd-ca/chain/NN`). Read only to import them
//! into the store ([`super::SqlStore::import_token_keys`]) and to clear what an
//! interrupted generation of such a version left ([`destroy_leftovers`]).

use serde::Deserialize;

use crate::algorithm::{Algorithm, KeyPurpose};
use crate::hsm::{CertificateObject, DATA_APPLICATION, DataObject, Hsm, HsmError};
use crate::keys::state::KeyState;

/// Prefix of the labels of key state records.
pub const STATE_LABEL_PREFIX: &str = "signetd-state/";
/// Prefix of the labels of key certificates.
pub const KEY_CERT_PREFIX: &str = "signetd-cert/";
/// Label of the attestation CA's certificate.
pub const CA_CERT_LABEL: &str = "signetd-ca/certificate";
/// Prefix of the labels of the chain above the CA: `signetd-ca/chain/01`, `/02`, ...
pub const CA_CHAIN_PREFIX: &str = "signetd-ca/chain/";

/// A key state record as earlier versions wrote it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenKeyRecord {
    /// Format version, always 1; named so that `deny_unknown_fields` accepts it.
    #[allow(dead_code)]
    pub v: u32,
    pub kid: String,
    pub issuer: String,
    pub alg: Algorithm,
    pub state: KeyState,
    pub created_at: u64,
    /// Incremented at every state change; of two records of one key, the higher wins.
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub changed_at: u64,
    #[serde(default)]
    pub purpose: KeyPurpose,
}

/// Every key-metadata object in the token.
#[derive(Debug, Default)]
pub(super) struct TokenKeyObjects {
    /// State records that parse and name the kid of their label, with their objects.
    pub records: Vec<(TokenKeyRecord, DataObject)>,
    /// State records that do not: left in the token and reported.
    pub unreadable: Vec<String>,
    /// Key certificates (`signetd-cert/KID`).
    pub key_certificates: Vec<CertificateObject>,
    /// The CA's certificate and the chain above it, in chain order.
    pub ca_chain: Vec<CertificateObject>,
}

impl TokenKeyObjects {
    /// Whether the token holds none of them.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.unreadable.is_empty()
            && self.key_certificates.is_empty()
            && self.ca_chain.is_empty()
    }
}

/// Reads every key-metadata object from the token.
pub(super) async fn list(hsm: &Hsm) -> Result<TokenKeyObjects, HsmError> {
    let mut found = TokenKeyObjects::default();
    for object in hsm.data_objects(DATA_APPLICATION).await? {
        let Some(kid) = object.label.strip_prefix(STATE_LABEL_PREFIX) else {
            continue;
        };
        match serde_json::from_slice::<TokenKeyRecord>(&object.value) {
            Ok(record) if record.kid == kid => found.records.push((record, object)),
            Ok(record) => found.unreadable.push(format!(
                "state record {:?} names key {:?}",
                object.label, record.kid
            )),
            Err(e) => found.unreadable.push(format!(
                "state record {:?} is unreadable: {e}",
                object.label
            )),
        }
    }
    found.key_certificates = hsm.certificates(KEY_CERT_PREFIX).await?;
    let mut ca: Vec<CertificateObject> = hsm
        .certificates("signetd-ca/")
        .await?
        .into_iter()
        .filter(|c| c.label == CA_CERT_LABEL || c.label.starts_with(CA_CHAIN_PREFIX))
        .collect();
    // The CA's own certificate first, then the chain in label order (01, 02, ...).
    ca.sort_by(|a, b| {
        (a.label != CA_CERT_LABEL, &a.label).cmp(&(b.label != CA_CERT_LABEL, &b.label))
    });
    if ca.first().is_some_and(|c| c.label == CA_CERT_LABEL) {
        found.ca_chain = ca;
    }
    Ok(found)
}

/// Destroys the state records and certificate objects an earlier version left for key
/// `kid` (an interrupted generation: a certificate without a record); returns how many.
pub async fn destroy_leftovers(hsm: &Hsm, kid: &str) -> Result<usize, HsmError> {
    let mut destroyed = 0;
    for cert in hsm
        .certificates(&format!("{KEY_CERT_PREFIX}{kid}"))
        .await?
        .into_iter()
        .filter(|c| c.label == format!("{KEY_CERT_PREFIX}{kid}"))
    {
        if hsm
            .destroy_certificate(&cert.id, &cert.label, &cert.value)
            .await?
        {
            destroyed += 1;
        }
    }
    let label = format!("{STATE_LABEL_PREFIX}{kid}");
    for record in hsm.data_objects(DATA_APPLICATION).await? {
        if record.label == label
            && hsm
                .destroy_data(DATA_APPLICATION, &record.label, &record.value)
                .await?
        {
            destroyed += 1;
        }
    }
    Ok(destroyed)
}
