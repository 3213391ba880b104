//! Token revocations as versions before the state store kept them: one `CKO_DATA` object
//! per revoked token (`signetd-revoked/JTI`) in the PKCS#11 token. Only read now, by
//! the one-off import into the state store ([`super::SqlStore::import_token_revocations`]).

use super::RevokedToken;
use crate::hsm::{DATA_APPLICATION as APPLICATION, DataObject, Hsm, HsmError};

/// Prefix of the labels of token revocations.
pub const REVOKED_PREFIX: &str = "signetd-revoked/";

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
