//! The PKCS#11 room: the only module that imports `cryptoki`.
//!
//! [`Hsm::open`] loads the module, initializes it with OS locking, selects the token,
//! and starts a session pool of worker threads that each own one logged-in session.
//! Every other method hands a small job to that pool and awaits its reply, so async
//! handlers never block on the token.
//!
//! No PKCS#11 object handle leaves this module. Keys are named by their `CKA_ID` (for
//! issuer keys, the kid); [`Hsm`] implements the [`Signer`] port by mapping the id to
//! the private key's handle, kept once found and looked up again when the token says it
//! is stale. Data and certificate objects are named by their content: a [`DataObject`]
//! by application, label and exact value, a [`CertificateObject`] by `CKA_ID`, label and
//! exact value. [`Hsm::destroy_data`] and [`Hsm::destroy_certificate`] search for that
//! content when they run, so no handle is kept between operations.

mod context;
mod curve;
mod error;
mod handles;
mod key_management;
mod objects;
pub mod provision;
mod recovery;
mod session_copies;
mod session_pool;
mod signing;
mod uri;

use std::any::Any;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use secrecy::SecretString;

pub use context::TokenIdentity;
pub use error::HsmError;
pub use objects::{CertificateObject, DataObject, KeyAttributes, KeyPairInfo, UnreadableKey};
pub use recovery::{HealthChanges, HsmHealth};
pub use uri::TokenSelector;

use crate::algorithm::Algorithm;
use crate::signer::{AfterSign, KeyRef, SignError, SignInput, Signer};
use crate::util::BoxFuture;
use handles::Lookup;
use objects::KeyObjects;
use recovery::{Core, Setup};
use session_pool::{SessionPool, Then};

/// `CKA_APPLICATION` of the data objects versions before the state store wrote (key
/// state records, revocations); signetd now reads them only to import them.
pub const DATA_APPLICATION: &str = "signetd";

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
    /// Requests that may wait for a worker (default: 256 per session).
    pub queue: Option<usize>,
    /// Whether signing uses session copies of the keys (`[pkcs11] session_copies`).
    pub session_copies: bool,
}

/// A logged-in connection to one token, with its pool of sessions.
pub struct Hsm {
    /// The session pool, the library context and the token's health (see `recovery`).
    core: Arc<Core>,
    /// Serializes operations on the token's object store (search, create, destroy).
    /// SoftHSM2 fails object creation (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT)
    /// when another thread searches the store at the same moment; these operations are
    /// rare (start-up, lifecycle ticks, operator commands), so they take turns. Signing
    /// takes it only to look up a key it keeps no handle for.
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
        let pin = Arc::new(settings.pin);
        let pool = SessionPool::start(
            ctx.clone(),
            slot,
            pin.clone(),
            settings.sessions,
            settings.timeout,
            settings.queue,
        )?;
        tracing::info!(
            token = %token.label,
            serial = %token.serial,
            sessions = pool.size(),
            "PKCS#11 token ready"
        );
        let setup = Setup {
            module: settings.module.clone(),
            selector: settings.token,
            pin,
            sessions: pool.size(),
            timeout: settings.timeout,
            queue: settings.queue,
            session_copies: settings.session_copies,
        };
        Ok(Hsm {
            core: Arc::new(Core::new(ctx, pool, setup)),
            store: tokio::sync::Mutex::new(()),
            token,
            module: settings.module,
        })
    }

    /// The token's health: [`HsmHealth::Outage`] from a device or token error until the
    /// background recovery has re-initialized the library and found the token and its
    /// keys again.
    pub fn health(&self) -> HsmHealth {
        self.core.health()
    }

    /// Every change of the token's health from now on, each one, in the order they
    /// happened: an outage that begins and ends between two reads is still there (what
    /// the audit log's `hsm_outage` and `hsm_recovered` records need).
    pub fn health_changes(&self) -> HealthChanges {
        self.core.health_changes()
    }

    /// Declares the token lost although no call failed: a module that shows an empty
    /// token where keys were (SoftHSM2 whose store went away) is recovered only by
    /// re-initializing the library. Starts an outage, as a device error would.
    pub fn report_lost(&self, cause: String) {
        self.core.begin_outage(cause);
    }

    /// PKCS#11 calls abandoned past their deadline since the session pool started, and
    /// worker threads still stuck in one (each replaced by a new worker).
    pub fn hung_calls(&self) -> (u64, usize) {
        self.core.hung_calls()
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
        let (info, objects) = self
            .store_op(move |s| key_management::generate(s, algorithm, &id, &label))
            .await?;
        self.remember(&info, objects);
        Ok(info)
    }

    /// Destroys both halves of the key pair with `CKA_ID` `id` (to undo an incomplete
    /// generation); a pair that is not there is nothing to destroy.
    pub async fn destroy_key_pair(&self, id: Vec<u8>) -> Result<(), HsmError> {
        self.core.handles.remove(&id);
        // Other workers' copies of it end with their sessions; signetd never signs with
        // them again (no handle is kept for the id).
        self.store_op(move |s| {
            session_copies::destroy_copy_of(s, &String::from_utf8_lossy(&id));
            if let Some((_, keys)) = objects::key_pair_by_id(s, &id)? {
                key_management::destroy(s, keys);
            }
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
        let found = self
            .store_op(move |s| objects::key_pairs(s, &prefix))
            .await?;
        Ok(found
            .into_iter()
            .map(|entry| {
                entry.map(|(info, objects)| {
                    self.remember(&info, objects);
                    info
                })
            })
            .collect())
    }

    /// Creates a private data object of `application`. It is named afterwards by
    /// `application`, `label` and `value` (see [`Hsm::destroy_data`]).
    pub async fn create_data(
        &self,
        application: &str,
        label: String,
        value: Vec<u8>,
    ) -> Result<(), HsmError> {
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
        let found = self
            .store_op(move |s| objects::key_pair_by_id(s, &id))
            .await?;
        Ok(found.map(|(info, objects)| {
            self.remember(&info, objects);
            info
        }))
    }

    /// Keeps the private key's handle of a pair just read from the token, for signing.
    fn remember(&self, info: &KeyPairInfo, objects: KeyObjects) {
        self.core.remember(info, objects);
    }

    /// Stores a DER certificate as a private token object.
    pub async fn create_certificate(
        &self,
        id: Vec<u8>,
        label: String,
        subject_der: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), HsmError> {
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

    /// Destroys the private data object of `application` with exactly this `label` and
    /// `value`, as found in the token now; returns false if there is none.
    ///
    /// The exact value tells a superseded record from the one that replaces it under the
    /// same label: writing the new record and then destroying the old one never destroys
    /// both. Should several objects match exactly (indistinguishable copies), one call
    /// destroys one of them.
    pub async fn destroy_data(
        &self,
        application: &str,
        label: &str,
        value: &[u8],
    ) -> Result<bool, HsmError> {
        let (application, label, value) =
            (application.to_string(), label.to_string(), value.to_vec());
        self.store_op(move |s| objects::destroy_data(s, &application, &label, &value))
            .await
    }

    /// Destroys the private certificate object with exactly this `CKA_ID`, `label` and
    /// `value` (the DER certificate), as found in the token now; returns false if there is
    /// none. Should several objects match exactly, one call destroys one of them.
    pub async fn destroy_certificate(
        &self,
        id: &[u8],
        label: &str,
        value: &[u8],
    ) -> Result<bool, HsmError> {
        let (id, label, value) = (id.to_vec(), label.to_string(), value.to_vec());
        self.store_op(move |s| objects::destroy_certificate(s, &id, &label, &value))
            .await
    }

    /// Runs an object-store operation, one at a time (see the `store` field).
    async fn store_op<R, F>(&self, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&cryptoki::session::Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let _turn = self.store.lock().await;
        self.core.run(f).await
    }

    /// [`Hsm::store_op`] for part of a request with a deadline: waiting for its turn
    /// counts against it too.
    async fn store_op_by<R, F>(&self, deadline: Instant, f: F) -> Result<R, HsmError>
    where
        F: FnOnce(&cryptoki::session::Session) -> Result<R, HsmError> + Send + 'static,
        R: Send + 'static,
    {
        let _turn = tokio::time::timeout_at(deadline.into(), self.store.lock())
            .await
            .map_err(|_| HsmError::Timeout(self.core.timeout()))?;
        self.core.run_by(deadline, f).await
    }

    /// Signs `input` with `key`, found by its id (`CKA_ID`).
    ///
    /// One `C_Sign` on a kept handle. The key is looked up in the token (once) when no
    /// handle is kept for its id, when the kept one is for another key, or when the token
    /// says the handle is stale; signing has no side effect in the token, so repeating it
    /// is safe. A token key under that id that is not `key` (another algorithm or public
    /// key: deleted and re-created) never signs.
    pub async fn sign(&self, key: KeyRef<'_>, input: SignInput) -> Result<Vec<u8>, SignError> {
        self.sign_then(key, input, |signature| signature).await
    }

    /// [`Hsm::sign`], then `then` with the signature on the worker that made it, so
    /// what the caller does next with it (its audit record) needs no hand-off back to
    /// the caller's thread first. `then` runs once, after the call has finished and
    /// outside `timeout_ms`, and not at all if signing fails.
    pub async fn sign_then<T: Send + 'static>(
        &self,
        key: KeyRef<'_>,
        input: SignInput,
        then: impl FnOnce(Vec<u8>) -> T + Send + 'static,
    ) -> Result<T, SignError> {
        let algorithm = key.algorithm;
        // Signing has no side effect in the token: on a lost session it is tried once
        // more on a fresh one, and on a stale handle once more after a lookup.
        self.on_key_then(
            key,
            Copies::Use,
            move |s, handle| signing::sign(s, handle, algorithm, &input),
            Then::new(then),
        )
        .await
    }

    /// Runs `op` on the private key handle of `key`: the kept one, or one looked up by
    /// `CKA_ID` when none is kept, when the kept one is for another key, or (once) when
    /// the token says it is stale. With [`Copies::Use`], `op` gets the worker session's
    /// copy of that key ([`session_copies`]). `op` must be safe to repeat. One
    /// `timeout_ms` covers it all: every lookup and every try (a stale handle's, a lost
    /// session's) gets only what the ones before it left.
    async fn on_key<R, F>(&self, key: KeyRef<'_>, copies: Copies, op: F) -> Result<R, SignError>
    where
        F: Fn(&cryptoki::session::Session, cryptoki::object::ObjectHandle) -> Result<R, HsmError>
            + Send
            + Sync
            + 'static,
        R: Send + 'static,
    {
        self.on_key_then(key, copies, op, Then::new(|r| r)).await
    }

    /// [`Hsm::on_key`], then `then` with `op`'s result on the worker whose try
    /// succeeded.
    async fn on_key_then<R, T, F>(
        &self,
        key: KeyRef<'_>,
        copies: Copies,
        op: F,
        then: Then<R, T>,
    ) -> Result<T, SignError>
    where
        F: Fn(&cryptoki::session::Session, cryptoki::object::ObjectHandle) -> Result<R, HsmError>
            + Send
            + Sync
            + 'static,
        R: Send + 'static,
        T: Send + 'static,
    {
        let id = key.kid.as_bytes();
        let op = Arc::new(op);
        let deadline = self.core.deadline();
        let mut looked_up = false;
        loop {
            let handle = match self.core.handles.find(key) {
                Lookup::Found(handle) => handle,
                Lookup::Mismatch if looked_up => {
                    return Err(SignError::KeyMismatch(key.kid.to_string()));
                }
                Lookup::Missing if looked_up => {
                    return Err(SignError::UnknownKey(key.kid.to_string()));
                }
                Lookup::Mismatch | Lookup::Missing => {
                    looked_up = true;
                    self.look_up(id, deadline).await?;
                    continue;
                }
            };
            let job = op.clone();
            let copy_of = (copies == Copies::Use && self.core.session_copies())
                .then(|| (key.kid.to_string(), key.public_key.to_vec()));
            let done = self
                .core
                .run_repeatable_then_by(
                    deadline,
                    move |s| match &copy_of {
                        Some((kid, public_key)) => {
                            session_copies::with_signing_object(s, kid, handle, public_key, |h| {
                                job(s, h)
                            })
                        }
                        None => job(s, handle),
                    },
                    then.clone(),
                )
                .await;
            match done {
                Err(e) if !looked_up && e.stale_handle() => {
                    tracing::warn!(kid = %key.kid, error = %e, "key handle is stale; looking the key up again");
                    self.core.handles.remove_if(id, handle);
                    looked_up = true;
                    self.look_up(id, deadline).await?;
                }
                other => return other.map_err(SignError::from),
            }
        }
    }

    /// Finds the key pair with `CKA_ID` `id` in the token and keeps its handle, or
    /// forgets any handle kept for `id` if the token has no such pair; by `deadline`.
    async fn look_up(&self, id: &[u8], deadline: Instant) -> Result<(), HsmError> {
        let wanted = id.to_vec();
        let found = self
            .store_op_by(deadline, move |s| objects::key_pair_by_id(s, &wanted))
            .await?;
        match found {
            Some((info, objects)) => self.remember(&info, objects),
            None => self.core.handles.remove(id),
        }
        Ok(())
    }

    /// Whether `key` can sign now, without signing: its private key's handle is known
    /// (looked up by `CKA_ID` if not, or if stale) and the token still answers for it
    /// (one attribute read). For `/readyz`.
    pub async fn check_key(&self, key: KeyRef<'_>) -> Result<(), SignError> {
        // The token object, not a session copy: a copy outlives its key's deletion from
        // the token, and this check is how `/readyz` learns of one.
        self.on_key(key, Copies::TokenObject, |s, handle| {
            s.get_attributes(handle, &[cryptoki::object::AttributeType::Id])?;
            Ok(())
        })
        .await
    }

    /// Asks a worker for its session state: proves a worker is free, the token answers,
    /// and the session is still logged in.
    pub async fn ping(&self) -> Result<(), HsmError> {
        self.core
            .run(|s| match s.get_session_info()?.session_state() {
                cryptoki::session::SessionState::RwUser => Ok(()),
                other => Err(HsmError::NoSession(format!(
                    "session is {other:?}, not logged in"
                ))),
            })
            .await
    }
}

/// Whether [`Hsm::on_key`]'s operation runs on the worker session's copy of the key
/// (`[pkcs11] session_copies` allowing) or on the token object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copies {
    Use,
    TokenObject,
}

impl Signer for Hsm {
    fn sign<'a>(
        &'a self,
        key: KeyRef<'a>,
        input: SignInput,
    ) -> BoxFuture<'a, Result<Vec<u8>, SignError>> {
        Box::pin(Hsm::sign(self, key, input))
    }

    fn sign_then<'a>(
        &'a self,
        key: KeyRef<'a>,
        input: SignInput,
        then: AfterSign,
    ) -> BoxFuture<'a, Result<Box<dyn Any + Send>, SignError>> {
        Box::pin(Hsm::sign_then(self, key, input, then))
    }
}
