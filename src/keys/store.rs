//! The token as the key database: generating keys with their state records, and taking
//! inventory of what the token holds.

use std::collections::HashMap;

use rand::RngCore;
use time::OffsetDateTime;

use super::jwk::Jwk;
use super::state::{self, KeyRecord, KeyState};
use crate::algorithm::Algorithm;
use crate::hsm::{DataHandle, Hsm, HsmError, KeyAttributes, KeyObjects};

/// A key pair in the token together with its lifecycle record.
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
    /// Handles of the key objects.
    pub objects: KeyObjects,
    /// Handle of the state record.
    pub record: DataHandle,
}

impl StoredKey {
    /// The public JWK of this key.
    pub fn jwk(&self) -> Jwk {
        Jwk::from_public_key(self.algorithm, &self.kid, &self.public_key)
    }
}

/// Everything signetd found in the token, and everything it could not make sense of.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Usable keys with their records.
    pub keys: Vec<StoredKey>,
    /// Keys or records that are incomplete or unreadable, described for the operator.
    /// They are reported at every start and never deleted automatically.
    pub problems: Vec<String>,
}

/// Why a key could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The issuer already signs with a key; replacing it is a rotation.
    #[error(
        "issuer {issuer:?} already has active key {kid}; replacing it is a rotation, not a generation"
    )]
    ActiveKeyExists {
        /// The issuer.
        issuer: String,
        /// Its active key.
        kid: String,
    },
    /// The token made a key that could leave it; it was destroyed.
    #[error(
        "the token generated a key that is not sensitive, never-extractable and local ({0:?}); it was destroyed"
    )]
    NotHardwareBound(KeyAttributes),
}

/// Reads every signetd key pair and state record from the token.
pub async fn inventory(hsm: &Hsm) -> Result<Inventory, HsmError> {
    let mut records: HashMap<String, (KeyRecord, DataHandle)> = HashMap::new();
    let mut inventory = Inventory::default();
    for object in hsm.data_objects(state::APPLICATION).await? {
        let Some(kid) = object.label.strip_prefix(state::STATE_LABEL_PREFIX) else {
            continue;
        };
        match serde_json::from_slice::<KeyRecord>(&object.value) {
            Ok(record) if record.kid == kid => {
                records.insert(kid.to_string(), (record, object.handle));
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
        if !pair.attributes.is_hardware_bound() {
            records.remove(&kid);
            inventory.problems.push(format!(
                "key {kid} ({}) could leave the token or was not generated in it ({:?}); it is neither used nor published",
                pair.label, pair.attributes
            ));
            continue;
        }
        let Some((record, handle)) = records.remove(&kid) else {
            inventory.problems.push(format!(
                "key {kid} ({}) has no state record (an interrupted generation?); it is neither used nor published",
                pair.label
            ));
            continue;
        };
        if record.alg != pair.algorithm || pair.label != state::key_label(&record.issuer, &kid) {
            inventory.problems.push(format!(
                "key {kid}: the token holds a {} key labelled {:?} but its record says {} for issuer {}",
                pair.algorithm, pair.label, record.alg, record.issuer
            ));
            continue;
        }
        inventory.keys.push(StoredKey {
            kid,
            issuer: record.issuer,
            algorithm: pair.algorithm,
            state: record.state,
            created_at: record.created_at,
            public_key: pair.public_key,
            attributes: pair.attributes,
            objects: pair.objects,
            record: handle,
        });
    }
    for (kid, (record, _)) in records {
        inventory.problems.push(format!(
            "key {kid} of issuer {} ({:?}) has a state record but its key objects are missing from the token",
            record.issuer, record.state
        ));
    }
    inventory
        .keys
        .sort_by(|a, b| (&a.issuer, a.created_at, &a.kid).cmp(&(&b.issuer, b.created_at, &b.kid)));
    Ok(inventory)
}

/// Generates the first key of `issuer` in the token, active at once.
///
/// Nothing is left half-written: if the key cannot be read back as hardware-bound, or its
/// state record cannot be stored, the key pair is destroyed again.
pub async fn generate(
    hsm: &Hsm,
    issuer: &str,
    algorithm: Algorithm,
) -> Result<StoredKey, KeyStoreError> {
    let existing = inventory(hsm).await?;
    if let Some(active) = existing
        .keys
        .iter()
        .find(|k| k.issuer == issuer && k.state == KeyState::Active)
    {
        return Err(KeyStoreError::ActiveKeyExists {
            issuer: issuer.to_string(),
            kid: active.kid.clone(),
        });
    }
    let now = OffsetDateTime::now_utc();
    let kid = new_kid(issuer, now);
    let pair = hsm
        .generate_key_pair(
            algorithm,
            kid.as_bytes().to_vec(),
            state::key_label(issuer, &kid),
        )
        .await?;
    if !pair.attributes.is_hardware_bound() {
        hsm.destroy_key_pair(pair.objects).await?;
        return Err(KeyStoreError::NotHardwareBound(pair.attributes));
    }
    let record = KeyRecord {
        v: 1,
        kid: kid.clone(),
        issuer: issuer.to_string(),
        alg: algorithm,
        state: KeyState::Active,
        created_at: now.unix_timestamp().max(0) as u64,
    };
    let value = serde_json::to_vec(&record).expect("a key record always serializes");
    let handle = match hsm
        .create_data(state::APPLICATION, record.label(), value)
        .await
    {
        Ok(handle) => handle,
        Err(e) => {
            if let Err(undo) = hsm.destroy_key_pair(pair.objects).await {
                tracing::error!(%kid, error = %undo, "cannot destroy key after failing to store its record");
            }
            return Err(e.into());
        }
    };
    Ok(StoredKey {
        kid,
        issuer: issuer.to_string(),
        algorithm,
        state: record.state,
        created_at: record.created_at,
        public_key: pair.public_key,
        attributes: pair.attributes,
        objects: pair.objects,
        record: handle,
    })
}

/// `ISSUER-YYYYMMDD-RANDOM`: sortable by day for operators, unique by 32 random bits.
fn new_kid(issuer: &str, now: OffsetDateTime) -> String {
    let mut random = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut random);
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{issuer}-{:04}{:02}{:02}-{hex}",
        now.year(),
        u8::from(now.month()),
        now.day()
    )
}
