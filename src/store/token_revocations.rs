//! The [`RevocationStore`] in the PKCS#11 token: one small `CKO_DATA` object per revoked
//! token (`signetd-revoked/JTI`) until the token it revokes has expired. Like key
//! states, revocations survive restarts and travel with token backups.

use std::sync::Arc;

use super::{RevocationStore, RevokedToken, StoreError};
use crate::hsm::{DATA_APPLICATION as APPLICATION, DataObject, Hsm, HsmError};
use crate::util::BoxFuture;

/// Prefix of the labels of token revocations.
pub const REVOKED_PREFIX: &str = "signetd-revoked/";

/// Revocations as data objects in the token.
pub struct TokenRevocations {
    hsm: Arc<Hsm>,
}

impl TokenRevocations {
    /// Revocations kept in `hsm`'s token.
    pub fn new(hsm: Arc<Hsm>) -> Self {
        TokenRevocations { hsm }
    }
}

impl RevocationStore for TokenRevocations {
    fn revoke<'a>(
        &'a self,
        revoked: &'a RevokedToken,
    ) -> BoxFuture<'a, Result<RevokedToken, StoreError>> {
        Box::pin(async move { Ok(revoke(&self.hsm, revoked).await?) })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<RevokedToken>, StoreError>> {
        Box::pin(async move { Ok(list(&self.hsm).await?.into_iter().map(|(r, _)| r).collect()) })
    }

    fn prune(&self, before: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move { Ok(prune(&self.hsm, before).await?) })
    }
}

/// Every stored revocation, with the object that holds it (its label and exact value
/// name it, to destroy it).
pub(super) async fn list(hsm: &Hsm) -> Result<Vec<(RevokedToken, DataObject)>, HsmError> {
    Ok(hsm
        .data_objects(APPLICATION)
        .await?
        .into_iter()
        .filter(|o| o.label.starts_with(REVOKED_PREFIX))
        .filter_map(|o| match serde_json::from_slice::<RevokedToken>(&o.value) {
            Ok(revoked) => Some((revoked, o)),
            Err(e) => {
                tracing::error!(label = %o.label, error = %e, "unreadable token revocation; ignoring it");
                None
            }
        })
        .collect())
}

/// Records a revocation. Revoking a jti again keeps one record with the later `exp`
/// (the new one is written before the old is destroyed), and returns what is stored.
async fn revoke(hsm: &Hsm, revoked: &RevokedToken) -> Result<RevokedToken, HsmError> {
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
    if let Some((_, old)) = existing {
        // The old record's exact value names it: the new one, under the same label,
        // has a later `exp` and so another value.
        hsm.destroy_data(APPLICATION, &old.label, &old.value)
            .await?;
    }
    Ok(revoked.clone())
}

/// Destroys revocations of tokens that expired before `now`; returns how many.
async fn prune(hsm: &Hsm, now: u64) -> Result<usize, HsmError> {
    let mut pruned = 0;
    for (revoked, object) in list(hsm).await? {
        if revoked.exp < now
            && hsm
                .destroy_data(APPLICATION, &object.label, &object.value)
                .await?
        {
            pruned += 1;
        }
    }
    Ok(pruned)
}
