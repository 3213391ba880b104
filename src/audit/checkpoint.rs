//! Checkpoints: the chain's head signed by the audit key, an ES256 key of the reserved
//! issuer [`AUDIT_ISSUER`], generated and attested in the token like every issuer key.
//!
//! A checkpoint is a compact JWS whose header carries the key's certificate chain in
//! `x5c`, so `signetd audit verify --root` (or any JOSE library plus an X.509 verifier)
//! can check it with nothing but the operator's root.

use std::sync::Arc;

use tokio::runtime::Handle;

use super::AuditError;
use super::record::{CHECKPOINT_TYP, CheckpointClaims};
use crate::algorithm::Algorithm;
use crate::attest::{self, AttestError, signed};
use crate::hsm::Hsm;
use crate::keys::{KeyPurpose, KeyState, store};
use crate::signer::KeyRef;
use crate::store::KeyMetadata;

/// The issuer name of the audit key. Config issuers may not use it.
pub const AUDIT_ISSUER: &str = "signetd-audit";

/// A signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The compact JWS over the claims.
    pub jws: String,
    /// The kid of an audit key generated to sign it, whose generation the log must
    /// record (and a checkpoint then cover).
    pub generated: Option<String>,
}

/// What the audit writer needs to sign checkpoints. A port, so the writer runs with a
/// fake signer in tests; [`CheckpointSigner`] signs in the token.
///
/// Calls block: the writer is a thread of its own, outside the async runtime.
pub trait CheckpointSigning: Send {
    /// Signs `claims` with the audit key, finding (or generating) it first.
    fn sign(&mut self, claims: &CheckpointClaims) -> Result<SignedCheckpoint, AuditError>;

    /// Forgets the resolved key, so the next signature looks it up again: it changed
    /// state in the token.
    fn forget_key(&mut self);
}

/// The audit key, resolved once.
#[derive(Clone, Debug)]
struct AuditKey {
    kid: String,
    public_key: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

/// Signs checkpoints in the token; finds (or, the first time, generates) the audit key
/// on demand.
pub struct CheckpointSigner {
    hsm: Arc<Hsm>,
    /// The key records (the state store).
    keys: Arc<dyn KeyMetadata>,
    /// Drives the token calls from the writer's thread.
    runtime: Handle,
    certificate_days: u32,
    key: Option<AuditKey>,
    /// A key generated here whose generation no checkpoint has reported yet.
    unreported: Option<String>,
}

impl CheckpointSigner {
    /// A signer over `hsm` and the key records `keys` whose calls run on `runtime`; a
    /// generated key's certificate is valid `certificate_days`.
    pub fn new(
        hsm: Arc<Hsm>,
        keys: Arc<dyn KeyMetadata>,
        certificate_days: u32,
        runtime: Handle,
    ) -> Self {
        CheckpointSigner {
            hsm,
            keys,
            runtime,
            certificate_days,
            key: None,
            unreported: None,
        }
    }

    /// The audit key, found or generated.
    async fn resolve(&mut self) -> Result<AuditKey, AuditError> {
        if let Some(key) = &self.key {
            return Ok(key.clone());
        }
        let unusable = |e: String| AuditError::NoKey(e);
        let inventory = store::inventory(&self.hsm, &*self.keys)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let stored = match inventory.of_issuer(AUDIT_ISSUER, KeyState::Active) {
            Some(key) => key.clone(),
            None => {
                let key = store::generate(
                    &self.hsm,
                    &*self.keys,
                    AUDIT_ISSUER,
                    Algorithm::Es256,
                    KeyPurpose::Raw,
                    self.certificate_days,
                    "audit",
                )
                .await
                .map_err(|e| match e {
                    store::KeyStoreError::Attest(AttestError::NoCa)
                    | store::KeyStoreError::Attest(AttestError::CaNotCertified) => unusable(
                        "there is no attestation CA to certify an audit key: run scripts/ceremony/root.sh (or `signetd attest init`)".to_string(),
                    ),
                    other => unusable(other.to_string()),
                })?;
                tracing::info!(kid = %key.kid, "generated the audit key");
                self.unreported = Some(key.kid.clone());
                key
            }
        };
        if stored.algorithm != Algorithm::Es256 {
            return Err(unusable(format!(
                "audit key {} is {}, not ES256",
                stored.kid, stored.algorithm
            )));
        }
        let ca = attest::ca::ready(&self.hsm, &*self.keys)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let mut chain = vec![stored.certificate.clone()];
        chain.extend(ca.chain);
        let key = AuditKey {
            kid: stored.kid.clone(),
            public_key: stored.public_key.clone(),
            chain,
        };
        self.key = Some(key.clone());
        Ok(key)
    }

    /// Signs `claims` in the token.
    async fn sign_in_token(
        &mut self,
        claims: &CheckpointClaims,
    ) -> Result<SignedCheckpoint, AuditError> {
        let key = self.resolve().await?;
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let signing_key = KeyRef {
            kid: &key.kid,
            algorithm: Algorithm::Es256,
            public_key: &key.public_key,
        };
        let jws = signed::sign(
            &*self.hsm,
            signing_key,
            CHECKPOINT_TYP,
            &key.chain,
            &[("kid", &key.kid)],
            &payload,
        )
        .await
        .map_err(|e| {
            // A lost session or a re-created key: look the key up again next time.
            self.key = None;
            AuditError::NoKey(format!("the token did not sign: {e}"))
        })?;
        Ok(SignedCheckpoint {
            jws: jws.compact(),
            generated: self.unreported.take(),
        })
    }
}

impl CheckpointSigning for CheckpointSigner {
    fn sign(&mut self, claims: &CheckpointClaims) -> Result<SignedCheckpoint, AuditError> {
        // The token layer is async; the writer's thread is outside the runtime, so it
        // may block on it.
        let runtime = self.runtime.clone();
        runtime.block_on(self.sign_in_token(claims))
    }

    fn forget_key(&mut self) {
        self.key = None;
    }
}
