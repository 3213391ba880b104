//! Reading the token: which keys exist, and which are complete.
//!
//! A complete key is four token objects: the key pair, its attestation certificate
//! (`signetd-cert/KID`) and its state record (`signetd-state/KID`). [`inventory`] returns
//! the complete ones and describes everything else as a problem for the operator;
//! incomplete keys are never used, published or deleted automatically.

use std::collections::HashMap;

use super::jwk::Jwk;
use super::state::{self, KeyPurpose, KeyRecord, KeyState};
use crate::algorithm::Algorithm;
use crate::attest;
use crate::hsm::{DataObject, Hsm, HsmError, KeyAttributes, KeyPairInfo};
use crate::signer::KeyRef;

/// A complete key in the token: key pair, attestation certificate and lifecycle record.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// The key id.
    pub kid: String,
    /// The issuer it belongs to.
    pub issuer: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its lifecycle state.
    pub state: KeyState,
    /// When it was generated, seconds since the epoch.
    pub created_at: u64,
    /// The public key (SEC1 uncompressed point, or 32 Ed25519 bytes).
    pub public_key: Vec<u8>,
    /// What the token reports about the private key.
    pub attributes: KeyAttributes,
    /// The state record as the token holds it. Its label and exact value name the object
    /// a state change replaces, so the new record (same label) is never mistaken for it.
    pub record: DataObject,
    /// The key's attestation certificate (DER), issued by the attestation CA.
    pub certificate: Vec<u8>,
    /// When it entered its current state, seconds since the epoch.
    pub changed_at: u64,
    /// What it signs.
    pub purpose: KeyPurpose,
}

impl StoredKey {
    /// This key as the signer port names it.
    pub fn key_ref(&self) -> KeyRef<'_> {
        KeyRef {
            kid: &self.kid,
            algorithm: self.algorithm,
            public_key: &self.public_key,
        }
    }

    /// A complete key from its parts as the token holds them.
    pub(super) fn assemble(
        pair: KeyPairInfo,
        record: KeyRecord,
        stored: DataObject,
        certificate: Vec<u8>,
    ) -> Self {
        StoredKey {
            changed_at: record.state_since(),
            purpose: record.purpose,
            kid: record.kid,
            issuer: record.issuer,
            algorithm: pair.algorithm,
            state: record.state,
            created_at: record.created_at,
            public_key: pair.public_key,
            attributes: pair.attributes,
            record: stored,
            certificate,
        }
    }

    /// The public JWK of this key, with its attestation chain (`ca_chain` is the CA's
    /// certificate and the chain above it).
    pub fn jwk(&self, ca_chain: &[Vec<u8>]) -> Jwk {
        let mut chain = vec![self.certificate.clone()];
        chain.extend_from_slice(ca_chain);
        Jwk::from_public_key(self.algorithm, &self.kid, &self.public_key).with_chain(&chain)
    }
}

/// Everything signetd found in the token, and everything it could not make sense of.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Complete, usable keys.
    pub keys: Vec<StoredKey>,
    /// Keys or records that are incomplete or unreadable, described for the operator.
    /// They are reported at every start and never deleted automatically.
    pub problems: Vec<String>,
}

impl Inventory {
    /// A key of `issuer` in `state` (the first, if several).
    pub fn of_issuer(&self, issuer: &str, state: KeyState) -> Option<&StoredKey> {
        self.keys
            .iter()
            .find(|k| k.issuer == issuer && k.state == state)
    }
}

/// Reads every signetd key pair, certificate and state record from the token.
pub async fn inventory(hsm: &Hsm) -> Result<Inventory, HsmError> {
    let mut records: HashMap<String, (KeyRecord, DataObject)> = HashMap::new();
    let mut inventory = Inventory::default();
    for object in hsm.data_objects(state::APPLICATION).await? {
        let Some(kid) = object.label.strip_prefix(state::STATE_LABEL_PREFIX) else {
            continue;
        };
        let kid = kid.to_string();
        match serde_json::from_slice::<KeyRecord>(&object.value) {
            Ok(record) if record.kid == kid => {
                // The higher revision wins; on a tie (two writers raced), revocation wins: it is
                // terminal, and losing it would silently trust a compromised key.
                let newer = records.get(&kid).is_none_or(|(have, _)| {
                    record.revision > have.revision
                        || (record.revision == have.revision
                            && record.state == KeyState::Revoked
                            && have.state != KeyState::Revoked)
                });
                let stale = if newer {
                    records
                        .insert(kid.clone(), (record, object))
                        .map(|(r, _)| r)
                } else {
                    Some(record)
                };
                if let Some(stale) = stale {
                    inventory.problems.push(format!(
                        "key {kid} has a superseded state record (revision {}, {:?}) left by an interrupted update; the newest is used",
                        stale.revision, stale.state
                    ));
                }
            }
            Ok(record) => inventory.problems.push(format!(
                "state record {:?} names key {:?}; ignoring it",
                object.label, record.kid
            )),
            Err(e) => inventory.problems.push(format!(
                "state record {:?} is unreadable: {e}",
                object.label
            )),
        }
    }
    let mut certificates: HashMap<String, Vec<u8>> = hsm
        .certificates(attest::ca::KEY_CERT_PREFIX)
        .await?
        .into_iter()
        .map(|c| {
            (
                c.label[attest::ca::KEY_CERT_PREFIX.len()..].to_string(),
                c.value,
            )
        })
        .collect();
    for pair in hsm.key_pairs(state::KEY_LABEL_PREFIX).await? {
        let pair = match pair {
            Ok(pair) => pair,
            Err(unreadable) => {
                inventory.problems.push(format!(
                    "key {:?} is unreadable: {}",
                    unreadable.label, unreadable.error
                ));
                continue;
            }
        };
        let kid = String::from_utf8_lossy(&pair.id).into_owned();
        let record = records.remove(&kid);
        let certificate = certificates.remove(&kid);
        match complete(&kid, pair, record, certificate) {
            Ok(key) => inventory.keys.push(key),
            Err(problem) => inventory.problems.push(problem),
        }
    }
    for (kid, (record, _)) in records {
        // Deleted by hand (pkcs11-tool) or lost: the certificate often remains.
        let remains = if certificates.contains_key(&kid) {
            "; its certificate remains"
        } else {
            ""
        };
        inventory.problems.push(format!(
            "key {kid} of issuer {} ({:?}) is missing: it has a state record but its private key is missing from the token{remains}; it can sign nothing, and a running daemon keeps publishing it until every token it signed has expired",
            record.issuer, record.state
        ));
    }
    inventory
        .keys
        .sort_by(|a, b| (&a.issuer, a.created_at, &a.kid).cmp(&(&b.issuer, b.created_at, &b.kid)));
    Ok(inventory)
}

/// Assembles a complete key, or describes what is wrong with it.
fn complete(
    kid: &str,
    pair: KeyPairInfo,
    record: Option<(KeyRecord, DataObject)>,
    certificate: Option<Vec<u8>>,
) -> Result<StoredKey, String> {
    let finish_or_undo = format!(
        "finish with `signetd keys finish --kid {kid}` or undo with `signetd keys destroy-incomplete --kid {kid}`"
    );
    if !pair.attributes.is_hardware_bound() {
        return Err(format!(
            "key {kid} ({}) could leave the token or was not generated in it ({:?}); it is neither used nor published",
            pair.label, pair.attributes
        ));
    }
    let Some((record, stored)) = record else {
        return Err(format!(
            "key {kid} ({}) has no state record (an interrupted generation?); it is neither used nor published: {finish_or_undo}",
            pair.label
        ));
    };
    if record.alg != pair.algorithm || pair.label != state::key_label(&record.issuer, kid) {
        return Err(format!(
            "key {kid}: the token holds a {} key labelled {:?} but its record says {} for issuer {}",
            pair.algorithm, pair.label, record.alg, record.issuer
        ));
    }
    let Some(certificate) = certificate else {
        return Err(format!(
            "key {kid} of issuer {} has no attestation certificate; it is neither used nor published: {finish_or_undo}",
            record.issuer
        ));
    };
    let certifies_key =
        attest::verify::parse(&certificate).is_ok_and(|c| c.public_key() == pair.public_key);
    if !certifies_key {
        return Err(format!(
            "key {kid}: its attestation certificate is not for this key; it is neither used nor published"
        ));
    }
    Ok(StoredKey::assemble(pair, record, stored, certificate))
}
