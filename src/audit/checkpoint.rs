//! Checkpoints: the tree's head signed by the audit key, an Ed25519 key of the reserved
//! issuer [`AUDIT_ISSUER`], generated and attested in the token like every issuer key.
//!
//! A checkpoint is a C2SP signed note ([`super::note`]); its record carries the key's
//! certificate chain beside it (`x5c`), so `signetd audit verify --root` can check it
//! with nothing but the operator's root, and any note verifier with the published
//! verifier key. Logs written before signetd 0.2 were checkpointed by an ES256 key with a
//! JWS; such a key still active is retired and replaced by an Ed25519 one.

use std::sync::Arc;

use tokio::runtime::Handle;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AuditError;
use super::note::{self, TreeHead};
use crate::algorithm::Algorithm;
use crate::attest::{self, AttestError};
use crate::hsm::Hsm;
use crate::keys::{KeyPurpose, KeyState, store};
use crate::signer::{KeyRef, SignInput};
use crate::store::KeyMetadata;

/// The issuer name of the audit key. Config issuers may not use it.
pub const AUDIT_ISSUER: &str = "signetd-audit";

/// A signed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The signed note: the tree head and one signature line.
    pub note: String,
    /// The audit key that signed it.
    pub kid: String,
    /// That key's note verifier key for this log (`name+keyid+base64key`).
    pub verifier_key: String,
    /// The key's certificate chain (standard base64 DER), its own certificate first.
    pub x5c: Vec<String>,
    /// The kid of an audit key generated to sign it, whose generation the log must
    /// record (and a checkpoint then cover).
    pub generated: Option<String>,
    /// The kid of an ES256 audit key retired for it, likewise to be recorded.
    pub retired: Option<String>,
}

/// What the audit writer needs to sign checkpoints. A port, so the writer runs with a
/// fake signer in tests; [`CheckpointSigner`] signs in the token.
///
/// Calls block: the writer is a thread of its own, outside the async runtime.
pub trait CheckpointSigning: Send {
    /// Signs a checkpoint of `head` with the audit key, finding (or generating) it
    /// first.
    fn sign(&mut self, head: &TreeHead) -> Result<SignedCheckpoint, AuditError>;

    /// Forgets the resolved key, so the next signature looks it up again: it changed
    /// state in the token.
    fn forget_key(&mut self);
}

/// The audit key, resolved once.
#[derive(Clone, Debug)]
struct AuditKey {
    kid: String,
    public_key: Vec<u8>,
    x5c: Vec<String>,
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
    /// An ES256 key retired here whose retirement no checkpoint has reported yet.
    retired: Option<String>,
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
            retired: None,
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
        let failed = |e: store::KeyStoreError| {
            match e {
            store::KeyStoreError::Attest(AttestError::NoCa)
            | store::KeyStoreError::Attest(AttestError::CaNotCertified) => unusable(
                "there is no attestation CA to certify an audit key: run scripts/ceremony/root.sh (or `signetd attest init`)".to_string(),
            ),
            other => unusable(other.to_string()),
        }
        };
        let stored = match inventory.of_issuer(AUDIT_ISSUER, KeyState::Active).cloned() {
            Some(key) if key.algorithm == Algorithm::EdDsa => key,
            Some(old) => {
                // An earlier version's ES256 key: checkpoints are signed notes now, which
                // need Ed25519. The new key is made first (pending), so a token that
                // cannot make one leaves the old key as it was; then the old one is
                // retired and the new one activated, in one transaction. Old checkpoints
                // still verify (each carries its chain).
                let new = store::prepare_rotation(
                    &self.hsm,
                    &*self.keys,
                    AUDIT_ISSUER,
                    Algorithm::EdDsa,
                    KeyPurpose::Raw,
                    self.certificate_days,
                    "audit",
                )
                .await
                .map_err(failed)?;
                store::promote(&*self.keys, Some(&old.kid), &new.kid, "audit")
                    .await
                    .map_err(|e| unusable(format!("replacing the ES256 audit key: {e}")))?;
                tracing::info!(old = %old.kid, new = %new.kid, "replaced the ES256 audit key by an Ed25519 one: checkpoints are signed notes now");
                self.retired = Some(old.kid);
                self.unreported = Some(new.kid.clone());
                new
            }
            None => {
                let key = store::generate(
                    &self.hsm,
                    &*self.keys,
                    AUDIT_ISSUER,
                    Algorithm::EdDsa,
                    KeyPurpose::Raw,
                    self.certificate_days,
                    "audit",
                )
                .await
                .map_err(failed)?;
                tracing::info!(kid = %key.kid, "generated the audit key");
                self.unreported = Some(key.kid.clone());
                key
            }
        };
        let ca = attest::ca::ready(&self.hsm, &*self.keys)
            .await
            .map_err(|e| unusable(e.to_string()))?;
        let x5c = std::iter::once(&stored.certificate)
            .chain(&ca.chain)
            .map(|der| STANDARD.encode(der))
            .collect();
        let key = AuditKey {
            kid: stored.kid.clone(),
            public_key: stored.public_key.clone(),
            x5c,
        };
        self.key = Some(key.clone());
        Ok(key)
    }

    /// Signs a checkpoint of `head` in the token.
    async fn sign_in_token(&mut self, head: &TreeHead) -> Result<SignedCheckpoint, AuditError> {
        let key = self.resolve().await?;
        let text = head.text();
        let signing_key = KeyRef {
            kid: &key.kid,
            algorithm: Algorithm::EdDsa,
            public_key: &key.public_key,
        };
        let signature = self
            .hsm
            .sign(signing_key, SignInput::Message(text.clone().into_bytes()))
            .await
            .map_err(|e| {
                // A lost session or a re-created key: look the key up again next time.
                self.key = None;
                AuditError::NoKey(format!("the token did not sign: {e}"))
            })?;
        Ok(SignedCheckpoint {
            note: note::signed(&text, &head.origin, &key.public_key, signature),
            verifier_key: note::verifier_key(&head.origin, &key.public_key),
            kid: key.kid,
            x5c: key.x5c,
            generated: self.unreported.take(),
            retired: self.retired.take(),
        })
    }
}

impl CheckpointSigning for CheckpointSigner {
    fn sign(&mut self, head: &TreeHead) -> Result<SignedCheckpoint, AuditError> {
        // The token layer is async; the writer's thread is outside the runtime, so it
        // may block on it.
        let runtime = self.runtime.clone();
        runtime.block_on(self.sign_in_token(head))
    }

    fn forget_key(&mut self) {
        self.key = None;
    }
}
