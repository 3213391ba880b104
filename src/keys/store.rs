//! Changing keys: generating attested keys, moving keys through their states, and the
//! operator's repairs of interrupted generations.
//!
//! The token holds the key pairs; everything else about a key is a row in the state
//! store ([`KeyMetadata`]). Generation makes the key pair in the token first, then
//! writes its certificate and record in one store transaction; if that fails, the key
//! pair is destroyed. If the process dies in between, [`inventory`] reports a key pair
//! the store does not know, and [`finish`] or [`destroy_incomplete`] completes or undoes
//! it. State changes are compare-and-set transactions in the store, so the daemon and a
//! CLI command changing one key are ordered by the database.

use rand::RngCore;
use time::OffsetDateTime;

use super::state::{self, KeyPurpose, KeyState};
use crate::algorithm::Algorithm;
use crate::attest::{self, AttestError, AttestationCa};
use crate::hsm::{Hsm, HsmError, KeyPairInfo};
use crate::store::{KeyMetadata, KeyRow, KeyWriteError, StateMove, StoreError};

pub use super::inventory::{Inventory, InventoryError, Mismatch, StoredKey, inventory};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The token failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

impl From<InventoryError> for KeyStoreError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::Hsm(e) => KeyStoreError::Hsm(e),
            InventoryError::Store(e) => KeyStoreError::Store(e),
        }
    }
}

fn now() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

/// `issuer`'s key in `state` as the store records it.
async fn in_state(
    meta: &dyn KeyMetadata,
    issuer: &str,
    state: KeyState,
) -> Result<Option<KeyRow>, StoreError> {
    Ok(meta
        .keys()
        .await?
        .into_iter()
        .find(|k| k.issuer == issuer && k.state == state))
}

/// Generates the first key of `issuer` in the token, attested and active at once.
/// `actor` names who asked, for the key's state history.
pub async fn generate(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    issuer: &str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    certificate_days: u32,
    actor: &str,
) -> Result<StoredKey, KeyStoreError> {
    if let Some(active) = in_state(meta, issuer, KeyState::Active).await? {
        return Err(KeyStoreError::ActiveKeyExists {
            issuer: issuer.to_string(),
            kid: active.kid,
        });
    }
    let ca = attest::ca::ready(hsm, meta).await?;
    let new = NewKey {
        issuer,
        algorithm,
        purpose,
        state: KeyState::Active,
        certificate_days,
        actor,
    };
    create(hsm, meta, &ca, new).await
}

/// Generates the next key of `issuer` as `pending`: published at once, not yet signing.
/// Activating it, and retiring the current key, is the lifecycle's job.
pub async fn prepare_rotation(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    issuer: &str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    certificate_days: u32,
    actor: &str,
) -> Result<StoredKey, KeyStoreError> {
    if in_state(meta, issuer, KeyState::Active).await?.is_none() {
        return Err(no_active(issuer));
    }
    if let Some(pending) = in_state(meta, issuer, KeyState::Pending).await? {
        return Err(KeyStoreError::Rotation {
            issuer: issuer.to_string(),
            why: format!("key {} is already pending", pending.kid),
        });
    }
    let ca = attest::ca::ready(hsm, meta).await?;
    let new = NewKey {
        issuer,
        algorithm,
        purpose,
        state: KeyState::Pending,
        certificate_days,
        actor,
    };
    create(hsm, meta, &ca, new).await
}

fn no_active(issuer: &str) -> KeyStoreError {
    KeyStoreError::Rotation {
        issuer: issuer.to_string(),
        why: "it has no active key to rotate from; generate a new one with `signetd keys generate` (scripts/ceremony/issuer-key.sh)".to_string(),
    }
}

/// What a key the store refused conflicts with, as the key room reports it.
fn refused(e: KeyWriteError) -> KeyStoreError {
    match e {
        KeyWriteError::ActiveExists { issuer, kid } => {
            KeyStoreError::ActiveKeyExists { issuer, kid }
        }
        KeyWriteError::PendingExists { issuer, kid } => KeyStoreError::Rotation {
            issuer,
            why: format!("key {kid} is already pending"),
        },
        KeyWriteError::NoActive(issuer) => no_active(&issuer),
        KeyWriteError::Store(e) => KeyStoreError::Store(e),
        other => KeyStoreError::Key(other.to_string()),
    }
}

/// A key [`create`] is to make.
struct NewKey<'a> {
    issuer: &'a str,
    algorithm: Algorithm,
    purpose: KeyPurpose,
    state: KeyState,
    certificate_days: u32,
    actor: &'a str,
}

/// Key pair in the token, then certificate and record in one store transaction; the key
/// pair is destroyed if the rest fails, so nothing is left half-made.
async fn create(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    ca: &AttestationCa,
    new: NewKey<'_>,
) -> Result<StoredKey, KeyStoreError> {
    let created_at = now();
    let kid = new_kid(new.issuer, OffsetDateTime::now_utc());
    let pair = hsm
        .generate_key_pair(
            new.algorithm,
            kid.as_bytes().to_vec(),
            state::key_label(new.issuer, &kid),
        )
        .await?;
    let certificate = match attest::ca::attest_key(
        hsm,
        ca,
        &pair,
        &kid,
        new.issuer,
        new.certificate_days,
    )
    .await
    {
        Ok(certificate) => certificate,
        Err(e) => {
            undo(hsm, &kid).await;
            return Err(e.into());
        }
    };
    let row = KeyRow {
        kid: kid.clone(),
        issuer: new.issuer.to_string(),
        algorithm: new.algorithm,
        purpose: new.purpose,
        token_id: pair.id.clone(),
        state: new.state,
        created_at,
        updated_at: created_at,
        certificate,
    };
    let needs_active = new.state == KeyState::Pending;
    if let Err(e) = meta.add_key(&row, new.actor, needs_active).await {
        undo(hsm, &kid).await;
        return Err(refused(e));
    }
    Ok(StoredKey::assemble(pair, row))
}

/// Destroys the key pair [`create`] made for `kid`.
async fn undo(hsm: &Hsm, kid: &str) {
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

/// Completes a key whose generation was interrupted (a key pair the store does not
/// know): issues its certificate and records it, `pending` if its issuer already has an
/// active key, else `active`. A key that could leave the token is refused and nothing is
/// written. Certificate or record objects an earlier version left for it in the token
/// are destroyed once the store has the key.
pub async fn finish(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    kid: &str,
    certificate_days: u32,
    actor: &str,
) -> Result<StoredKey, KeyStoreError> {
    let (pair, issuer) = find_pair(hsm, kid).await?;
    let rows = meta.keys().await?;
    if let Some(row) = rows.iter().find(|k| k.token_id == pair.id) {
        return Err(KeyStoreError::Key(format!(
            "key {} is complete ({}); nothing to finish",
            row.kid, row.state
        )));
    }
    let ca = attest::ca::ready(hsm, meta).await?;
    let certificate =
        attest::ca::attest_key(hsm, &ca, &pair, kid, &issuer, certificate_days).await?;
    let active_exists = rows
        .iter()
        .any(|k| k.issuer == issuer && k.state == KeyState::Active);
    let created_at = now();
    let row = KeyRow {
        kid: kid.to_string(),
        issuer,
        algorithm: pair.algorithm,
        // An interrupted generation's purpose is unknown: JWT, the purpose that is never
        // trusted with caller-chosen bytes (a raw-signing issuer will refuse it; destroy
        // it and generate again).
        purpose: KeyPurpose::Jwt,
        token_id: pair.id.clone(),
        state: if active_exists {
            KeyState::Pending
        } else {
            KeyState::Active
        },
        created_at,
        updated_at: created_at,
        certificate,
    };
    meta.add_key(&row, actor, false).await.map_err(refused)?;
    crate::store::destroy_token_key_leftovers(hsm, kid).await?;
    inventory(hsm, meta)
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

/// Destroys a key pair whose generation never completed (one the state store does not
/// know), with whatever objects an earlier version left for it. A key the store knows
/// is never destroyed this way.
pub async fn destroy_incomplete(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    kid: &str,
) -> Result<(), KeyStoreError> {
    let (pair, _) = find_pair(hsm, kid).await?;
    if meta.keys().await?.iter().any(|k| k.token_id == pair.id) {
        return Err(KeyStoreError::Key(format!(
            "key {kid} is complete; signetd destroys only incomplete keys (retire or revoke it instead)"
        )));
    }
    crate::store::destroy_token_key_leftovers(hsm, kid).await?;
    hsm.destroy_key_pair(pair.id).await?;
    Ok(())
}

/// Moves a key to state `to`, if [`KeyState::may_become`] allows it; `actor` names who
/// asked. The change is a compare-and-set in the store: if another process changed the
/// key since it was read, this one fails and says so. Returns the key's new record.
///
/// The token is not consulted: a key whose private key is gone can still be retired or
/// revoked.
pub async fn transition(
    meta: &dyn KeyMetadata,
    kid: &str,
    to: KeyState,
    actor: &str,
) -> Result<KeyRow, KeyStoreError> {
    let key = meta
        .keys()
        .await?
        .into_iter()
        .find(|k| k.kid == kid)
        .ok_or_else(|| KeyStoreError::Key(format!("no key {kid} in the state store")))?;
    if !key.state.may_become(to) {
        return Err(KeyStoreError::Key(format!(
            "key {kid} is {} and cannot become {to}",
            key.state
        )));
    }
    let at = now();
    meta.set_state(kid, key.state, to, at, actor)
        .await
        .map_err(moved_not)?;
    Ok(KeyRow {
        state: to,
        updated_at: at,
        ..key
    })
}

/// Makes pending key `next` its issuer's active key, retiring `current` (the active
/// key, if the issuer has one) in the same transaction: no crash between the two leaves
/// the issuer with neither, and each is still a compare-and-set, so if another process
/// moved either key first, neither moves.
pub async fn promote(
    meta: &dyn KeyMetadata,
    current: Option<&str>,
    next: &str,
    actor: &str,
) -> Result<(), KeyStoreError> {
    let retire = current.map(|kid| StateMove {
        kid,
        from: KeyState::Active,
        to: KeyState::Retired,
    });
    let activate = StateMove {
        kid: next,
        from: KeyState::Pending,
        to: KeyState::Active,
    };
    let moves: Vec<StateMove> = retire.into_iter().chain([activate]).collect();
    meta.set_states(&moves, now(), actor)
        .await
        .map_err(moved_not)
}

/// A state change the store refused, for the caller.
fn moved_not(e: KeyWriteError) -> KeyStoreError {
    match e {
        KeyWriteError::Store(e) => KeyStoreError::Store(e),
        other => KeyStoreError::Key(other.to_string()),
    }
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
