//! The lifecycle API: generating, rotating, retiring and revoking keys, and revoking
//! tokens. Admins only (`[admin]` in the config); every change is logged with its caller
//! and takes effect in the registry before the call returns.

use super::record::key_event;
use super::{KeyView, Service, unix_now};
use crate::audit::{Entry, Event};
use crate::error::Error;
use crate::identity::Principal;
use crate::keys::{KeyState, KeyStoreError, store};
use crate::policy::Action;
use crate::store::RevokedToken;
use crate::token::HARD_MAX_TTL_SECONDS;

/// A token revocation (`POST /v1/revocations`).
#[derive(Debug)]
pub struct RevokeTokenRequest {
    /// The `jti` to revoke.
    pub jti: String,
    /// The token's `exp`, so the revocation is listed exactly as long as needed; default
    /// now plus the hard TTL cap, which outlives any token signetd mints.
    pub exp: Option<u64>,
}

impl RevokeTokenRequest {
    /// The revocation to store at `now`, as both the API and `signetd token revoke`
    /// write it: without `exp`, listed until now plus the hard TTL cap. Refuses a jti
    /// that is empty or over 128 characters and an `exp` in the past or past that cap.
    pub fn revocation(self, now: u64) -> Result<RevokedToken, Error> {
        let latest = now + HARD_MAX_TTL_SECONDS;
        let exp = self.exp.unwrap_or(latest);
        if self.jti.is_empty() || self.jti.len() > 128 || exp > latest || exp < now {
            return Err(Error::InvalidRequest(format!(
                "jti must be 1 to 128 characters and exp between now ({now}) and {latest} (now plus the hard TTL cap)"
            )));
        }
        Ok(RevokedToken {
            jti: self.jti,
            exp,
            revoked_at: now,
        })
    }
}

impl From<KeyStoreError> for Error {
    fn from(e: KeyStoreError) -> Self {
        match e {
            KeyStoreError::Hsm(e) => Error::Hsm(e),
            KeyStoreError::Store(e) => Error::Store(e),
            other => Error::Conflict(other.to_string()),
        }
    }
}

impl Service {
    fn require_admin(&self, caller: &Principal) -> Result<(), Error> {
        self.policy().decide(caller, Action::Admin)
    }

    async fn view(&self, kid: &str) -> Result<KeyView, Error> {
        self.reload().await?;
        self.key(kid)
    }

    /// Generates an issuer's first key (`POST /v1/keys`).
    pub async fn admin_generate(&self, caller: &Principal, issuer: &str) -> Result<KeyView, Error> {
        self.admin_new_key(caller, issuer, false).await
    }

    /// Generates the issuer's next key as pending (`POST /v1/issuers/{name}/rotate`); the
    /// lifecycle activates it after the pre-publication delay.
    pub async fn admin_rotate(&self, caller: &Principal, issuer: &str) -> Result<KeyView, Error> {
        self.admin_new_key(caller, issuer, true).await
    }

    /// An issuer's first key, or (`rotate`) its next, pending key.
    async fn admin_new_key(
        &self,
        caller: &Principal,
        issuer: &str,
        rotate: bool,
    ) -> Result<KeyView, Error> {
        self.require_admin(caller)?;
        self.audit_healthy()?;
        let _turn = self.lifecycle_turn().await;
        let settings = self.settings();
        let config = settings.issuer(issuer)?;
        let (hsm, algorithm, purpose) = (self.hsm(), config.algorithm, config.key_purpose());
        let (meta, days) = (
            self.key_records(),
            settings.config.attestation.key_certificate_days,
        );
        let actor = format!("admin {caller}");
        let key = if rotate {
            store::prepare_rotation(hsm, meta, issuer, algorithm, purpose, days, &actor).await?
        } else {
            store::generate(hsm, meta, issuer, algorithm, purpose, days, &actor).await?
        };
        tracing::info!(%caller, %issuer, kid = %key.kid, rotate, "admin added a key");
        let event = if rotate {
            Event::KeyRotate
        } else {
            Event::KeyGenerate
        };
        self.note_key_change(event, caller.into(), issuer, &key.kid, key.state)
            .await;
        self.view(&key.kid).await
    }

    /// Retires (`POST /v1/keys/{kid}/retire`) or revokes (`.../revoke`) a key.
    pub async fn admin_set_state(
        &self,
        caller: &Principal,
        kid: &str,
        to: KeyState,
    ) -> Result<KeyView, Error> {
        self.require_admin(caller)?;
        self.audit_healthy()?;
        let _turn = self.lifecycle_turn().await;
        let Some(issuer) = self.registry().get(kid).map(|k| k.issuer.clone()) else {
            return Err(Error::UnknownKey(kid.to_string()));
        };
        store::transition(self.key_records(), kid, to, &format!("admin {caller}")).await?;
        tracing::warn!(%caller, %kid, state = ?to, "admin changed a key's state");
        self.note_key_change(key_event(to), caller.into(), &issuer, kid, to)
            .await;
        self.view(kid).await
    }

    /// Revokes a token by `jti` (`POST /v1/revocations`).
    pub async fn admin_revoke_token(
        &self,
        caller: &Principal,
        request: RevokeTokenRequest,
    ) -> Result<RevokedToken, Error> {
        self.require_admin(caller)?;
        self.audit_healthy()?;
        // No lifecycle turn and no reload: a token revocation changes no key, and is
        // published by one insert (see keys::revoked), so thousands cost no more each.
        let revoked = request.revocation(unix_now())?;
        let revoked = self.revocation_store().revoke(&revoked).await?;
        tracing::warn!(%caller, jti = %revoked.jti, "admin revoked a token");
        let mut entry = Entry::new(Event::TokenRevoke)
            .caller(caller)
            .ok()
            .detail(format!("listed until {}", revoked.exp));
        entry.jti = Some(revoked.jti.clone());
        self.note(entry).await;
        self.revoked.insert(revoked.clone());
        Ok(revoked)
    }
}
