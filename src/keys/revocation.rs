//! Revoked tokens, kept in the token as one small `CKO_DATA` object each
//! (`signetd-revoked/JTI`) until the token they revoke has expired. Like key states,
//! they survive restarts and travel with token backups.

use serde::{Deserialize, Serialize};

use super::state::APPLICATION;
use crate::hsm::{Hsm, HsmError, ObjectRef};

/// Prefix of the labels of token revocations.
pub const REVOKED_PREFIX: &str = "signetd-revoked/";

/// A revoked token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RevokedToken {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`: the revocation is listed until then.
    pub exp: u64,
    /// When it was revoked, seconds since the epoch.
    pub revoked_at: u64,
}

/// Every stored revocation, with its object handle.
pub async fn list(hsm: &Hsm) -> Result<Vec<(RevokedToken, ObjectRef)>, HsmError> {
    Ok(hsm
        .data_objects(APPLICATION)
        .await?
        .into_iter()
        .filter(|o| o.label.starts_with(REVOKED_PREFIX))
        .filter_map(|o| match serde_json::from_slice::<RevokedToken>(&o.value) {
            Ok(revoked) => Some((revoked, o.handle)),
            Err(e) => {
                tracing::error!(label = %o.label, error = %e, "unreadable token revocation; ignoring it");
                None
            }
        })
        .collect())
}

/// Records a revocation. Revoking a jti again keeps one record with the later `exp`
/// (the new one is written before the old is destroyed), and returns what is stored.
pub async fn revoke(hsm: &Hsm, revoked: &RevokedToken) -> Result<RevokedToken, HsmError> {
    let existing = list(hsm)
        .await?
        .into_iter()
        .find(|(r, _)| r.jti == revoked.jti);
    if let Some((stored, _)) = &existing
        && stored.exp >= revoked.exp
    {
        return Ok(stored.clone());
    }
    let value = serde_json::to_vec(revoked).expect("a revocation serializes");
    hsm.create_data(
        APPLICATION,
        format!("{REVOKED_PREFIX}{}", revoked.jti),
        value,
    )
    .await?;
    if let Some((_, handle)) = existing {
        hsm.destroy_object(handle).await?;
    }
    Ok(revoked.clone())
}

/// Destroys revocations of tokens that have expired; returns how many.
pub async fn prune(hsm: &Hsm, now: u64) -> Result<usize, HsmError> {
    let mut pruned = 0;
    for (revoked, handle) in list(hsm).await? {
        if revoked.exp < now {
            hsm.destroy_object(handle).await?;
            pruned += 1;
        }
    }
    Ok(pruned)
}
