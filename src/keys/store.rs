//! Changing the token: generating attested keys with their state records, moving keys
//! through their states, and the operator's repairs of interrupted generations.
//!
//! Generation creates the key pair, its certificate and its record in that order and
//! destroys what it made if a later step fails. If the process dies between steps,
//! [`inventory`] reports the incomplete key, and [`finish`] or [`destroy_incomplete`]
//! completes or undoes it.

use rand::RngCore;
use time::OffsetDateTime;

use super::state::{self, KeyPurpose, KeyRecord, KeyState};
use crate::algorithm::Algorithm;
use crate::attest::{self, AttestError, AttestationCa};
use crate::hsm::{CertificateObject, DataObject, Hsm, HsmError, KeyPairInfo};

pub use super::inventory::{Inventory, StoredKey, inventory};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// Attestation failed (no CA, or a key that could leave the token).
    #[error(transparent)]
    Attest(#[from] AttestError),
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
    /// A rotation needs a key to rotate from, and only one next key at a time.
    #[error("cannot prepare a rotation for issuer {issuer:?}: {why}")]
    Rotation {
        /// The issuer.
        issuer: String,
        /// Why not.
        why: String,
    },
    /// No key with this id, or not in a state the operation applies to.
    #[error("{0}")]
    Key(String),
}

/// Generates the first key of `issuer` in the token, attested and active at once.
pub async fn generate(
    hsm: &Hsm,
    issuer: &str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    certificate_days: u32,
) -> Result<StoredKey, KeyStoreError> {
    let existing = inventory(hsm).await?;
    if let Some(active) = existing.of_issuer(issuer, KeyState::Active) {
        return Err(KeyStoreError::ActiveKeyExists {
            issuer: issuer.to_string(),
            kid: active.kid.clone(),
        });
    }
    let ca = attest::ca::ready(hsm).await?;
    create(
        hsm,
        &ca,
        issuer,
        algorithm,
        purpose,
        KeyState::Active,
        certificate_days,
    )
    .await
}

/// Generates the next key of `issuer` as `pending`: published at once, not yet signing.
/// Activating it, and retiring the current key, is the lifecycle's job.
pub async fn prepare_rotation(
    hsm: &Hsm,
    issuer: &str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    certificate_days: u32,
) -> Result<StoredKey, KeyStoreError> {
    let existing = inventory(hsm).await?;
    let of_issuer = |state| existing.of_issuer(issuer, state);
    let rotation = |why: String| KeyStoreError::Rotation {
        issuer: issuer.to_string(),
        why,
    };
    if of_issuer(KeyState::Active).is_none() {
        return Err(rotation(
            "it has no active key to rotate from; generate a new one with `signetd keys generate` (scripts/ceremony/issuer-key.sh)".to_string(),
        ));
    }
    if let Some(pending) = of_issuer(KeyState::Pending) {
        return Err(rotation(format!("key {} is already pending", pending.kid)));
    }
    let ca = attest::ca::ready(hsm).await?;
    create(
        hsm,
        &ca,
        issuer,
        algorithm,
        purpose,
        KeyState::Pending,
        certificate_days,
    )
    .await
}

/// Key pair, then certificate, then record; whatever was made is destroyed if a later
/// step fails, so nothing is left half-written.
async fn create(
    hsm: &Hsm,
    ca: &AttestationCa,
    issuer: &str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    state: KeyState,
    certificate_days: u32,
) -> Result<StoredKey, KeyStoreError> {
    let now = OffsetDateTime::now_utc();
    let kid = new_kid(issuer, now);
    let pair = hsm
        .generate_key_pair(
            algorithm,
            kid.as_bytes().to_vec(),
            state::key_label(issuer, &kid),
        )
        .await?;
    let certificate =
        match attest::ca::attest_key(hsm, ca, &pair, &kid, issuer, certificate_days).await {
            Ok(done) => done,
            Err(e) => {
                undo(hsm, &kid, None).await;
                return Err(e.into());
            }
        };
    let record = KeyRecord {
        v: 1,
        kid: kid.clone(),
        issuer: issuer.to_string(),
        alg: algorithm,
        state,
        created_at: now.unix_timestamp().max(0) as u64,
        revision: 0,
        changed_at: 0,
        purpose,
    };
    let stored = DataObject {
        label: record.label(),
        value: serde_json::to_vec(&record).expect("a key record always serializes"),
    };
    if let Err(e) = hsm
        .create_data(
            state::APPLICATION,
            stored.label.clone(),
            stored.value.clone(),
        )
        .await
    {
        undo(hsm, &kid, Some(&certificate)).await;
        return Err(e.into());
    }
    Ok(StoredKey::assemble(pair, record, stored, certificate.value))
}

/// Destroys what [`create`] made of key `kid`: its certificate (named by id, label and
/// value), if it was stored, and its key pair.
async fn undo(hsm: &Hsm, kid: &str, certificate: Option<&CertificateObject>) {
    if let Some(cert) = certificate {
        match hsm
            .destroy_certificate(&cert.id, &cert.label, &cert.value)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(%kid, "the certificate of an incomplete key was already gone")
            }
            Err(e) => {
                tracing::error!(%kid, error = %e, "cannot destroy the certificate of an incomplete key")
            }
        }
    }
    if let Err(e) = hsm.destroy_key_pair(kid.as_bytes().to_vec()).await {
        tracing::error!(%kid, error = %e, "cannot destroy an incomplete key");
    }
}

/// The key pair labelled as a signetd key with this kid, and the issuer its label names.
async fn find_pair(hsm: &Hsm, kid: &str) -> Result<(KeyPairInfo, String), KeyStoreError> {
    let pair = hsm
        .key_pair_by_id(kid.as_bytes().to_vec())
        .await?
        .ok_or_else(|| KeyStoreError::Key(format!("no key {kid} in the token")))?;
    let issuer = pair
        .label
        .strip_prefix(state::KEY_LABEL_PREFIX)
        .and_then(|rest| rest.strip_suffix(&format!("/{kid}")))
        .ok_or_else(|| {
            KeyStoreError::Key(format!(
                "key {kid} is not labelled as a signetd key ({:?})",
                pair.label
            ))
        })?
        .to_string();
    Ok((pair, issuer))
}

/// Completes a key whose generation was interrupted: issues its missing certificate and
/// writes its missing record (`pending` if its issuer already has an active key, else
/// `active`). A key that could leave the token is refused and nothing is written.
pub async fn finish(
    hsm: &Hsm,
    kid: &str,
    certificate_days: u32,
) -> Result<StoredKey, KeyStoreError> {
    let (pair, issuer) = find_pair(hsm, kid).await?;
    let has_cert = !hsm
        .certificates(&format!("{}{kid}", attest::ca::KEY_CERT_PREFIX))
        .await?
        .is_empty();
    let existing = inventory(hsm).await?;
    if let Some(key) = existing.keys.iter().find(|k| k.kid == kid) {
        return Err(KeyStoreError::Key(format!(
            "key {} is complete ({:?}); nothing to finish",
            key.kid, key.state
        )));
    }
    if !has_cert {
        let ca = attest::ca::ready(hsm).await?;
        attest::ca::attest_key(hsm, &ca, &pair, kid, &issuer, certificate_days).await?;
    }
    let has_record = hsm
        .data_objects(state::APPLICATION)
        .await?
        .iter()
        .any(|o| o.label == format!("{}{kid}", state::STATE_LABEL_PREFIX));
    if !has_record {
        let active_exists = existing.of_issuer(&issuer, KeyState::Active).is_some();
        let record = KeyRecord {
            v: 1,
            kid: kid.to_string(),
            issuer: issuer.clone(),
            alg: pair.algorithm,
            state: if active_exists {
                KeyState::Pending
            } else {
                KeyState::Active
            },
            created_at: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
            revision: 0,
            changed_at: 0,
            // An interrupted generation's purpose is unknown: JWT, the purpose that
            // is never trusted with caller-chosen bytes (a raw-signing issuer will
            // refuse it; destroy it and generate again).
            purpose: KeyPurpose::Jwt,
        };
        let value = serde_json::to_vec(&record).expect("a key record always serializes");
        hsm.create_data(state::APPLICATION, record.label(), value)
            .await?;
    }
    inventory(hsm)
        .await?
        .keys
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| {
            KeyStoreError::Key(format!(
                "key {kid} is still incomplete; see `signetd keys list`"
            ))
        })
}

/// Destroys a key whose generation never completed (no certificate or no record), with
/// whatever parts of it exist. A complete key is never destroyed this way.
pub async fn destroy_incomplete(hsm: &Hsm, kid: &str) -> Result<(), KeyStoreError> {
    let (pair, _) = find_pair(hsm, kid).await?;
    if inventory(hsm).await?.keys.iter().any(|k| k.kid == kid) {
        return Err(KeyStoreError::Key(format!(
            "key {kid} is complete; signetd destroys only incomplete keys (retire or revoke it instead)"
        )));
    }
    for cert in hsm
        .certificates(&format!("{}{kid}", attest::ca::KEY_CERT_PREFIX))
        .await?
    {
        hsm.destroy_certificate(&cert.id, &cert.label, &cert.value)
            .await?;
    }
    for record in hsm.data_objects(state::APPLICATION).await? {
        if record.label == format!("{}{kid}", state::STATE_LABEL_PREFIX) {
            hsm.destroy_data(state::APPLICATION, &record.label, &record.value)
                .await?;
        }
    }
    hsm.destroy_key_pair(pair.id).await?;
    Ok(())
}

/// Moves a key to state `to`, if [`KeyState::may_become`] allows it.
pub async fn transition(hsm: &Hsm, kid: &str, to: KeyState) -> Result<StoredKey, KeyStoreError> {
    let key = inventory(hsm)
        .await?
        .keys
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyStoreError::Key(format!("no complete key {kid} in the token")))?;
    if !key.state.may_become(to) {
        return Err(KeyStoreError::Key(format!(
            "key {kid} is {:?} and cannot become {to:?}",
            key.state
        )));
    }
    let current = hsm
        .data_objects(state::APPLICATION)
        .await?
        .into_iter()
        .find(|o| *o == key.record)
        .and_then(|o| serde_json::from_slice::<KeyRecord>(&o.value).ok())
        .ok_or_else(|| {
            KeyStoreError::Key(format!("the state record of key {kid} is unreadable"))
        })?;
    let record = KeyRecord {
        state: to,
        revision: current.revision + 1,
        changed_at: OffsetDateTime::now_utc().unix_timestamp().max(0) as u64,
        ..current
    };
    let stored = replace_record(hsm, &key.record, &record).await?;
    Ok(StoredKey {
        state: to,
        record: stored,
        changed_at: record.changed_at,
        ..key
    })
}

/// Writes `record` as a new data object, then destroys the one it supersedes. A crash in
/// between leaves both; inventory then uses the higher revision and reports the other.
///
/// Both have the same label; the old one is named by its exact value, which differs from
/// the new one's (a higher revision), so only the superseded record is destroyed.
async fn replace_record(
    hsm: &Hsm,
    old: &DataObject,
    record: &KeyRecord,
) -> Result<DataObject, KeyStoreError> {
    let new = DataObject {
        label: record.label(),
        value: serde_json::to_vec(record).expect("a key record always serializes"),
    };
    hsm.create_data(state::APPLICATION, new.label.clone(), new.value.clone())
        .await?;
    if !hsm
        .destroy_data(state::APPLICATION, &old.label, &old.value)
        .await?
    {
        return Err(KeyStoreError::Key(format!(
            "key {}: the state record it replaced was already gone (changed by another process?); see `signetd keys list`",
            record.kid
        )));
    }
    Ok(new)
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
