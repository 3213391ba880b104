//! The PKCS#11 room: the only module that imports `cryptoki`.
//!
//! [`Hsm::open`] loads the module, initializes it with OS locking, selects the token,
//! and starts a session pool of worker threads that each own one logged-in session.
//! Every other method hands a small job to that pool and awaits its reply, so async
//! handlers never block on the token. Handles are resolved by the callers once
//! ([`Hsm::key_pairs`] at start-up) and reused for every request.

mod context;
mod error;
mod key_management;
mod objects;
pub mod provision;
mod session_pool;
mod signing;
mod uri;

use std::path::PathBuf;
use std::time::Duration;

use cryptoki::object::ObjectHandle;
use secrecy::SecretString;

pub use context::TokenIdentity;
pub use error::HsmError;
pub use objects::{
    CertificateObject, DataObject, KeyAttributes, KeyPairInfo, ObjectRef, UnreadableKey,
};
pub use signing::SignInput;
pub use uri::TokenSelector;

use crate::algorithm::Algorithm;
use session_pool::SessionPool;

/// Everything needed to reach the token. `Debug` shows the PIN as redacted.
#[derive(Debug)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    /// Which token to use.
    pub token: TokenSelector,
    /// The user PIN; handed to `C_Login` and nowhere else.
    pub pin: SecretString,
    /// Number of worker threads, each with its own session.
    pub sessions: usize,
    /// How long a request waits for the token before giving up.
    pub timeout: Duration,
}

/// Handles of the two halves of a key pair, valid for the life of the [`Hsm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyObjects {
    pub(crate) private: ObjectHandle,
    pub(crate) public: ObjectHandle,
}

/// A logged-in connection to one token, with its pool of sessions.
pub struct Hsm {
    pool: SessionPool,
    /// Serializes operations on the token's object store (search, create, destroy).
    /// SoftHSM2 fails object creation (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT)
    /// when another thread searches the store at the same moment; these operations are
    /// rare (start-up, lifecycle ticks, operator commands), so they take turns. Signing
    /// never takes this lock.
    store: tokio::sync::Mutex<()>,
    token: TokenIdentity,
    module: PathBuf,
}

impl Hsm {
    /// Loads the module, selects the token and logs in every worker session.
    ///
    /// Blocking: call it before serving, or from `spawn_blocking`.
    pub fn open(settings: HsmSettings) -> Result<Self, HsmError> {
        let ctx = context::load(&settings.module)?;
        let (slot, token) = context::select_token(&ctx, &settings.token)?;
        let pool =
            SessionPool::start(ctx, slot, settings.pin, settings.sessions, settings.timeout)?;
        tracing::info!(
            token = %token.label,
            serial = %token.serial,
            sessions = pool.size(),
            "PKCS#11 token ready"
        );
        Ok(Hsm {
            pool,
            store: tokio::sync::Mutex::new(()),
            token,
            module: settings.module,
        })
    }

    /// The token in use.
    pub fn token(&self) -> &TokenIdentity {
        &self.token
    }

    /// Path of the PKCS#11 module in use.
    pub fn module(&self) -> &std::path::Path {
        &self.module
    }

    /// Generates a non-extractable key pair in the token and reads it back.
    pub async fn generate_key_pair(
        &self,
        algorithm: Algorithm,
        id: Vec<u8>,
        label: String,
    ) -> Result<KeyPairInfo, HsmError> {
        self.store_op(move |s| key_management::generate(s, algorithm, &id, &label))
            .await
    }

    /// Destroys both halves of a key pair (to undo an incomplete generation).
    pub async fn destroy_key_pair(&self, keys: KeyObjects) -> Result<(), HsmError> {
        self.store_op(move |s| {
            key_management::destroy(s, keys);
            Ok(())
        })
        .await
    }

    /// Every key pair whose private label starts with `label_prefix`. Pairs that cannot
    /// be read come back as [`UnreadableKey`] so they can be reported, not forgotten.
    pub async fn key_pairs(
        &self,
        label_prefix: &str,
    ) -> Result<Vec<Result<KeyPairInfo, UnreadableKey>>, HsmError> {
        let prefix = label_prefix.to_string();
        self.store_op(move |s| objects::key_pairs(s, &prefix)).await
    }

    /// Creates a private data object of `application`.
    pub async fn create_data(
        &self,
        application: &str,
        label: String,
        value: Vec<u8>,
    ) -> Result<ObjectRef, HsmError> {
        let application = application.to_string();
        self.store_op(move |s| objects::create_data(s, &application, &label, &value))
            .await
    }

    /// Every data object of `application`.
    pub async fn data_objects(&self, application: &str) -> Result<Vec<DataObject>, HsmError> {
        let application = application.to_string();
        self.store_op(move |s| objects::data_objects(s, &application))
            .await
    }

    /// The key pair with `CKA_ID` = `id`, if the token has one.
    pub async fn key_pair_by_id(&self, id: Vec<u8>) -> Result<Option<KeyPairInfo>, HsmError> {
        self.store_op(move |s| objects::key_pair_by_id(s, &id))
            .await
    }

    /// Stores a DER certificate as a private token object.
    pub async fn create_certificate(
        &self,
        id: Vec<u8>,
        label: String,
        subject_der: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<ObjectRef, HsmError> {
        self.store_op(move |s| objects::create_certificate(s, &id, &label, &subject_der, &value))
            .await
    }

    /// Every certificate object whose label starts with `label_prefix`.
    pub async fn certificates(
        &self,
        label_prefix: &str,
    ) -> Result<Vec<CertificateObject>, HsmError> {
        let prefix = label_prefix.to_string();
        self.store_op(move |s| objects::certificates(s, &prefix))
            .await
    }

    /// Destroys a data or certificate object.
    pub async fn destroy_object(&self, object: ObjectRef) -> Result<(), HsmError> {
        self.store_op(move |s| s.destroy_object(object.0).map_err(HsmError::from))
            .await
    }

    /// Runs an object-store operation, one at a time (see the `store` field).
    async fn store_op<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&cryptoki::session::Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let _turn = self.store.lock().await;
        self.pool.run(f).await
    }

    /// Signs with the private half of `keys`.
    pub async fn sign(
        &self,
        keys: KeyObjects,
        algorithm: Algorithm,
        input: SignInput,
    ) -> Result<Vec<u8>, HsmError> {
        self.pool
            .run(move |s| signing::sign(s, keys.private, algorithm, &input))
            .await
    }

    /// Asks a worker for its session state: proves a worker is free, the token answers,
    /// and the session is still logged in.
    pub async fn ping(&self) -> Result<(), HsmError> {
        self.pool
            .run(|s| match s.get_session_info()?.session_state() {
                cryptoki::session::SessionState::RwUser => Ok(()),
                other => Err(HsmError::NoSession(format!(
                    "session is {other:?}, not logged in"
                ))),
            })
            .await
    }
}
