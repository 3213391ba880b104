//! The facade a handler calls: validate, authorize, sign, audit.
//!
//! Handlers know HTTP; the HSM layer knows PKCS#11; this module knows what a request
//! means. Every method takes the [`Principal`] the transport established. [`verify`] is the
//! verifier for gateways; [`admin`] the lifecycle API; [`record`] what goes into the
//! audit log; `refusals` how refusals go there without making the log a lever for
//! callers no policy names.

pub mod admin;
pub mod follow;
pub mod leases;
pub mod limits;
mod publishing;
pub mod record;
mod refusals;
pub mod rollback;
pub mod settings;
pub mod spiffe;
pub mod transparency;
pub mod verify;
pub mod wiring;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use crate::algorithm::Algorithm;
use crate::attest::certificate;
use crate::audit::{AuditSink, Entry, Event};
use crate::config::Config;
use crate::error::Error;
use crate::hsm::{Hsm, KeyAttributes};
use crate::identity::Principal;
use crate::keys::{Jwk, KeyPurpose, KeyRegistry, KeyState, Published, RevokedTokens, StoredKey};
use crate::policy::{Action, Policy};
use crate::signer::{SignInput, Signer};
use crate::store::{ChangeFeed, KeyMetadata, LeaseStore, ReplayStore, RevocationStore};
use crate::token::{self, MintRequest, jws};

/// A minted token (`api::wire::MintedToken` on the wire).
#[derive(Debug)]
pub struct MintedToken {
    /// The compact JWS.
    pub token: String,
    /// The key that signed it.
    pub kid: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// Lowercase hex SHA-256 of the exact token string, for audit lookups.
    pub token_sha256: String,
}

/// Signature encodings `POST /v1/sign` can return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureFormat {
    /// The JWS form: raw `r‖s` for ES256, the plain signature for EdDSA.
    #[default]
    Jws,
    /// ASN.1 DER `ECDSA-Sig-Value` (ES256 only), as X.509 and most TLS stacks expect.
    Der,
}

/// What `POST /v1/sign` asks for: exactly one of `digest` and `message`, base64url.
#[derive(Debug)]
pub struct SignRequest {
    /// The issuer whose active key signs.
    pub issuer: String,
    /// A SHA-256 digest (ES256 only).
    pub digest: Option<String>,
    /// A message: hashed on the host for ES256, signed whole for EdDSA.
    pub message: Option<String>,
    /// The signature encoding.
    pub format: SignatureFormat,
}

/// A raw signature (`api::wire::SignedData` on the wire).
#[derive(Debug)]
pub struct SignedData {
    /// The signature, base64url.
    pub signature: String,
    /// The key that made it.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    /// Its encoding.
    pub format: SignatureFormat,
}

/// A key as `GET /v1/keys` and `signetd keys list` describe it
/// (`api::wire::KeyView` on the wire).
#[derive(Debug)]
pub struct KeyView {
    /// Key id.
    pub kid: String,
    /// Owning issuer.
    pub issuer: String,
    /// Algorithm.
    pub alg: Algorithm,
    /// Lifecycle state.
    pub state: KeyState,
    /// What the key signs: `jwt` or `raw`.
    pub purpose: KeyPurpose,
    /// Generation time, seconds since the epoch.
    pub created_at: u64,
    /// The public JWK.
    pub jwk: Jwk,
    /// What the token reports about the private key.
    pub token_attributes: KeyAttributes,
    /// The key's attestation certificate, PEM.
    pub certificate: String,
}

impl KeyView {
    /// Describes `key`; its JWK carries the attestation chain `ca_chain`.
    pub fn new(key: &StoredKey, ca_chain: &[Vec<u8>]) -> Self {
        KeyView {
            kid: key.kid.clone(),
            issuer: key.issuer.clone(),
            alg: key.algorithm,
            state: key.state,
            purpose: key.purpose,
            created_at: key.created_at,
            jwk: key.jwk(ca_chain),
            token_attributes: key.attributes,
            certificate: certificate::to_pem(std::slice::from_ref(&key.certificate)),
        }
    }
}

pub use crate::util::{hex, unix_now};

/// The daemon's request-level logic over one token and one config.
pub struct Service {
    /// The config, the policy and the rate limits: swapped whole by a reload.
    settings: RwLock<Arc<settings::Settings>>,
    hsm: Arc<Hsm>,
    keys: RwLock<Arc<KeyRegistry>>,
    /// The last good view of the token, and what is wrong with the latest reading.
    publishing: publishing::Publishing,
    /// Makes the signatures: the token, by key id.
    signer: Arc<dyn Signer>,
    /// Single-use jtis seen by `verify`.
    replay: Arc<dyn ReplayStore>,
    /// Revoked tokens, as stored.
    revocations: Arc<dyn RevocationStore>,
    /// Revoked tokens, as published and checked by verification.
    revoked: RevokedTokens,
    /// Key records and certificates: the token holds only the key pairs.
    key_records: Arc<dyn KeyMetadata>,
    /// Lifecycle ticks and admin calls take turns, so two of them never plan from the
    /// same state (two pending keys, a revocation overwritten by a retirement).
    lifecycle: tokio::sync::Mutex<()>,
    /// Reloads run one at a time (a config reload's runs outside the lifecycle's turn).
    reloading: tokio::sync::Mutex<()>,
    /// Leases among replicas sharing the state store.
    leases: Arc<dyn LeaseStore>,
    /// Changes others make to the state store, if it pushes them.
    changes: Option<Arc<dyn ChangeFeed>>,
    /// Who this daemon is when it holds a lease: its replica name (or host name), pid
    /// and a random part, so a restarted daemon is a new holder.
    holder: String,
    /// The audit log: nothing signed is returned before its record is durable.
    audit: Arc<dyn AuditSink>,
    /// Each key's state as last recorded, so a reload records changes made outside the
    /// daemon exactly once.
    recorded_states: Mutex<HashMap<String, KeyState>>,
    /// The furthest state of every key on record (the audit log, then this run): a
    /// store showing less was put back, and is rolled forward.
    witness: rollback::Witness,
    /// When this service started, seconds since the epoch: revocations in the store
    /// from before it that the audit log lacks are recorded by the rollback check.
    started_at: u64,
    /// Whether an unnamed second daemon on this store has been reported.
    second_instance_warned: std::sync::atomic::AtomicBool,
    /// Refusals of unnamed callers being counted, and refusal records dropped.
    refusals: refusals::Refusals,
}

/// `error`, once the records of what a failing start moved forward are written: the
/// next start finds it done, and would not say so.
async fn failed_start(audit: &dyn AuditSink, moved: Vec<Entry>, error: Error) -> Error {
    for entry in moved {
        record::note_to(audit, entry).await;
    }
    error
}

impl Service {
    /// Builds the ports from the config ([`wiring::Ports::from_config`]: the audit log
    /// among them), takes inventory of the token and builds the key registry. Anything
    /// odd in the token is logged loudly; nothing is deleted.
    pub async fn start(config: Config, hsm: Arc<Hsm>) -> Result<Self, Error> {
        let ports = wiring::Ports::from_config(&config, &hsm).await?;
        Self::new(config, hsm, ports).await
    }

    /// A service over `hsm` (the key pairs) and `ports`. Keys the state store and the
    /// token disagree about are logged and recorded (`key_missing`, `key_unknown`).
    pub async fn new(config: Config, hsm: Arc<Hsm>, ports: wiring::Ports) -> Result<Self, Error> {
        // Before anything is read for serving: state that went backwards is moved
        // forward first, or the daemon does not start.
        // A log that cannot be read now (a segment unreadable) is read at the first
        // reload that can. (A directory that is not there is a new log: nothing to read.)
        let started_at = unix_now();
        let witness = rollback::Witness::default();
        let mut rolled_forward = Vec::new();
        match witness.read_log(&config.audit.dir) {
            Ok(()) => {
                let caught_up = rollback::catch_up(
                    &witness,
                    &*ports.keys,
                    &*ports.revocations,
                    &*ports.replay,
                    started_at,
                    &mut rolled_forward,
                )
                .await;
                if let Err(e) = caught_up {
                    let e = Error::Internal(format!("state rollback: {e}"));
                    return Err(failed_start(&*ports.audit, rolled_forward, e).await);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit log: the state store is checked for rollback once it can be read");
            }
        }
        let read = publishing::read_checked(
            &hsm,
            &*ports.keys,
            &witness,
            started_at,
            &mut rolled_forward,
        )
        .await;
        let (reading, ca_problems) = match read {
            Ok(read) => read,
            Err(failure) => {
                let e = match failure {
                    publishing::ReadFailure::Unreadable(e) => e,
                    publishing::ReadFailure::Behind(e) => {
                        Error::Internal(format!("state rollback: {e}"))
                    }
                };
                return Err(failed_start(&*ports.audit, rolled_forward, e).await);
            }
        };
        // Where the store and the token disagree, reported at every start (below, once
        // the service can write audit records), and never repaired here.
        let mismatches = reading.inventory.mismatches.clone();
        let now = unix_now();
        let merged = publishing::merge(&config, &Default::default(), reading, now);
        let registry = publishing::registry(&config, &merged);
        let revoked = RevokedTokens::default();
        let expired_before = now.saturating_sub(verify::LEEWAY_SECONDS);
        let refreshed = revoked.refresh(&*ports.revocations, expired_before).await;
        if let Err(e) = refreshed {
            return Err(failed_start(&*ports.audit, rolled_forward, e.into()).await);
        }
        // Those the log records, too: the store may have been put back again since they
        // were put back into it, and the view never loses one before it expires. (Those
        // the store holds keep their own `revoked_at`.)
        for recorded in witness.revocations_since(expired_before) {
            revoked.insert(crate::store::RevokedToken {
                jti: recorded.jti,
                exp: recorded.exp,
                revoked_at: started_at,
            });
        }
        let problems: Vec<String> = ca_problems
            .into_iter()
            .chain(merged.problems.clone())
            .collect();
        // Mismatches are logged by `report_mismatches`, once, with their records.
        let mismatch_lines: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        for problem in problems.iter().filter(|p| !mismatch_lines.contains(p)) {
            tracing::error!(token = %hsm.token().label, "{problem}");
        }
        for name in config.issuers.keys() {
            match registry.active(name) {
                Some(key) => {
                    tracing::info!(issuer = %name, kid = %key.kid, alg = %key.algorithm, "issuer ready")
                }
                None => {
                    tracing::warn!(issuer = %name, "issuer has no active key; minting will fail until one is generated")
                }
            }
        }
        let recorded_states = rollback::recorded_at_start(&witness, &registry);
        let service = Service {
            audit: ports.audit,
            signer: ports.signer,
            revocations: ports.revocations,
            revoked,
            key_records: ports.keys,
            recorded_states: Mutex::new(recorded_states),
            witness,
            started_at,
            second_instance_warned: Default::default(),
            keys: RwLock::new(Arc::new(registry)),
            publishing: publishing::Publishing::new(&merged, problems, mismatches.clone()),
            replay: ports.replay,
            lifecycle: tokio::sync::Mutex::new(()),
            reloading: tokio::sync::Mutex::new(()),
            leases: ports.leases,
            changes: ports.changes,
            holder: leases::lease_holder(&config),
            refusals: refusals::Refusals::new(&config.audit),
            settings: RwLock::new(Arc::new(settings::Settings::new(config))),
            hsm,
        };
        for entry in rolled_forward {
            service.note(entry).await;
        }
        service.report_mismatches(&mismatches).await;
        Ok(service)
    }

    /// The registry as of now; cheap (an `Arc` clone under a read lock).
    pub fn registry(&self) -> Arc<KeyRegistry> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the lifecycle's turn: held by a tick or an admin call while it changes
    /// key states.
    pub async fn lifecycle_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lifecycle.lock().await
    }

    /// The token in use.
    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }

    /// Single-use jtis.
    pub fn replay_store(&self) -> &dyn ReplayStore {
        &*self.replay
    }

    /// Revoked tokens.
    pub fn revocation_store(&self) -> &dyn RevocationStore {
        &*self.revocations
    }

    /// Key records and certificates.
    pub fn key_records(&self) -> &dyn KeyMetadata {
        &*self.key_records
    }

    /// Who may do what, as of now.
    pub fn policy(&self) -> Arc<Policy> {
        self.settings().policy.clone()
    }

    /// The rate limits on minting and signing, as of now.
    pub fn rate_limits(&self) -> Arc<limits::RateLimits> {
        self.settings().rate_limits.clone()
    }

    /// The config the service runs with now (a reload may replace it).
    pub fn config(&self) -> Arc<Config> {
        self.settings().config.clone()
    }

    fn active_key(&self, name: &str) -> Result<Arc<StoredKey>, Error> {
        self.registry()
            .active(name)
            .cloned()
            .ok_or_else(|| Error::NoActiveKey(name.to_string()))
    }

    /// Mints a JWT for `caller` under the issuer's policy.
    pub async fn mint(
        &self,
        caller: &Principal,
        request: MintRequest,
    ) -> Result<MintedToken, Error> {
        let settings = self.settings();
        let issuer = settings.issuer(&request.issuer)?;
        settings
            .policy
            .decide(caller, Action::Mint(&request.issuer))?;
        settings.rate_limits.check(&request.issuer, caller)?;
        let claims = token::claims::build(issuer, &request, unix_now())?;
        let key = self.active_key(&request.issuer)?;
        if key.purpose != KeyPurpose::Jwt {
            tracing::error!(issuer = %request.issuer, kid = %key.kid, "the active key was generated for raw signatures; it never signs JWTs");
            return Err(Error::NoActiveKey(request.issuer));
        }
        let expected = self.audit_ready()?;
        let header = token::claims::header(issuer, key.algorithm, &key.kid)?;
        let signing_input = jws::signing_input(&header, &claims.payload);
        let mut entry = Entry::new(Event::Mint)
            .caller(caller)
            .issuer(&request.issuer)
            .kid(&key.kid)
            .ok();
        entry.jti = Some(claims.jti.clone());
        // The token exists only here until its record is durable; if the record cannot
        // be written, the token is dropped unseen.
        let algorithm = key.algorithm;
        let input = SignInput::Message(signing_input.clone().into_bytes());
        let (token, token_sha256) = self
            .sign_recorded(key.key_ref(), input, expected, move |signature| {
                let signature = low_s(algorithm, signature)?;
                let token = jws::compact(&signing_input, &signature);
                let token_sha256 = hex(&Sha256::digest(token.as_bytes()));
                entry.token_sha256 = Some(token_sha256.clone());
                Ok(((token, token_sha256), entry))
            })
            .await?;
        tracing::info!(%caller, issuer = %request.issuer, kid = %key.kid, jti = %claims.jti, %token_sha256, "minted token");
        Ok(MintedToken {
            token,
            kid: key.kid.clone(),
            jti: claims.jti,
            expires_at: claims.exp,
            token_sha256,
        })
    }

    /// Signs a digest or message with the issuer's active key, if the issuer allows raw
    /// signatures and names the caller.
    pub async fn sign(
        &self,
        caller: &Principal,
        request: SignRequest,
    ) -> Result<SignedData, Error> {
        let settings = self.settings();
        settings.issuer(&request.issuer)?;
        settings
            .policy
            .decide(caller, Action::RawSign(&request.issuer))?;
        settings.rate_limits.check(&request.issuer, caller)?;
        let key = self.active_key(&request.issuer)?;
        if key.purpose != KeyPurpose::Raw {
            // A JWT key never signs caller-chosen bytes, whatever the config says now.
            return Err(Error::RawSignDisabled(request.issuer));
        }
        let input = sign_input(key.algorithm, &request)?;
        if request.format == SignatureFormat::Der && key.algorithm != Algorithm::Es256 {
            return Err(Error::InvalidRequest(
                "format \"der\" applies to ES256 keys only".to_string(),
            ));
        }
        // What the key signs, hashed: an ES256 digest is already the SHA-256 of the
        // message, so a message and its digest give the same record.
        let input_sha256 = match &input {
            SignInput::Digest(d) => hex(d),
            SignInput::Message(m) => hex(&Sha256::digest(m)),
        };
        let expected = self.audit_ready()?;
        let mut entry = Entry::new(Event::Sign)
            .caller(caller)
            .issuer(&request.issuer)
            .kid(&key.kid)
            .ok();
        entry.token_sha256 = Some(input_sha256.clone());
        let (algorithm, format) = (key.algorithm, request.format);
        let signature = self
            .sign_recorded(key.key_ref(), input, expected, move |raw| {
                let raw = low_s(algorithm, raw)?;
                let signature = match format {
                    SignatureFormat::Jws => raw,
                    SignatureFormat::Der => es256_signature(&raw)?.to_der().as_bytes().to_vec(),
                };
                entry.signature_sha256 = Some(hex(&Sha256::digest(&signature)));
                Ok((signature, entry))
            })
            .await?;
        tracing::info!(%caller, issuer = %request.issuer, kid = %key.kid, %input_sha256, "signed data");
        Ok(SignedData {
            signature: crate::util::b64(signature),
            kid: key.kid.clone(),
            alg: key.algorithm,
            format: request.format,
        })
    }

    /// The published revocation list.
    pub fn revocations(&self) -> Published {
        let registry = self.registry();
        self.revoked.published(registry.revoked_keys().clone())
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Published {
        self.registry().jwks().clone()
    }

    /// `Cache-Control: max-age` for published documents.
    pub fn jwks_max_age(&self) -> u32 {
        self.config().jwks.max_age_seconds
    }

    /// Every key of the registry (the last good view of the store and the token).
    pub fn keys(&self) -> Vec<KeyView> {
        let registry = self.registry();
        registry
            .all()
            .into_iter()
            .map(|k| self.key_view(k, registry.ca_chain()))
            .collect()
    }

    /// One key by id, whatever its state.
    pub fn key(&self, kid: &str) -> Result<KeyView, Error> {
        let registry = self.registry();
        registry
            .get(kid)
            .map(|k| self.key_view(k, registry.ca_chain()))
            .ok_or_else(|| Error::UnknownKey(kid.to_string()))
    }

    /// A key's view, its JWK's `alg` named as its issuer names it in the JWKS.
    fn key_view(&self, key: &StoredKey, ca_chain: &[Vec<u8>]) -> KeyView {
        let mut view = KeyView::new(key, ca_chain);
        if let Some(issuer) = self.config().issuer(&key.issuer) {
            view.jwk.alg = issuer.jws_alg(key.algorithm).to_string();
        }
        view
    }

    /// A key's attestation chain as PEM: its certificate, then the CA chain.
    pub fn attestation_pem(&self, kid: &str) -> Result<String, Error> {
        let registry = self.registry();
        let key = registry
            .get(kid)
            .ok_or_else(|| Error::UnknownKey(kid.to_string()))?;
        let mut chain = vec![key.certificate.clone()];
        chain.extend_from_slice(registry.ca_chain());
        Ok(certificate::to_pem(&chain))
    }
}

/// An ES256 signature in low-S form (`s ≤ n/2`); other signatures unchanged.
///
/// ECDSA is malleable: if `(r, s)` verifies, so does `(r, n − s)`, a second token string
/// that every verifier accepts but whose SHA-256 the audit log never saw. Tokens have
/// exactly one valid form once signetd only makes, and its verifier only accepts, low S.
fn low_s(algorithm: Algorithm, signature: Vec<u8>) -> Result<Vec<u8>, Error> {
    if algorithm != Algorithm::Es256 {
        return Ok(signature);
    }
    let parsed = es256_signature(&signature)?;
    Ok(match parsed.normalize_s() {
        Some(low) => low.to_bytes().to_vec(),
        None => signature,
    })
}

fn es256_signature(raw: &[u8]) -> Result<p256::ecdsa::Signature, Error> {
    p256::ecdsa::Signature::from_slice(raw)
        .map_err(|e| Error::Internal(format!("token returned an invalid ECDSA signature: {e}")))
}

/// What a `POST /v1/sign` request asks `algorithm`'s key to sign: its base64url digest
/// or message decoded and checked, before any token is touched. Public so the fuzz
/// targets (fuzz/) reach it exactly as [`Service::sign`] does.
pub fn sign_input(algorithm: Algorithm, request: &SignRequest) -> Result<SignInput, Error> {
    let decode = |field: &str, text: &str| {
        crate::util::unb64(text).ok_or_else(|| {
            Error::InvalidRequest(format!("{field} is not base64url without padding"))
        })
    };
    match (&request.digest, &request.message, algorithm) {
        (Some(digest), None, Algorithm::Es256) => {
            let bytes: [u8; 32] = decode("digest", digest)?.try_into().map_err(|_| {
                Error::InvalidRequest("digest must be a 32-byte SHA-256 value".to_string())
            })?;
            Ok(SignInput::Digest(bytes))
        }
        (Some(_), None, Algorithm::EdDsa) => Err(Error::InvalidRequest(
            "EdDSA keys sign messages, not digests: send message".to_string(),
        )),
        (None, Some(message), _) => Ok(SignInput::Message(decode("message", message)?)),
        _ => Err(Error::InvalidRequest(
            "give exactly one of digest and message".to_string(),
        )),
    }
}
