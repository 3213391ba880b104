//! `POST /v1/verify`: a verifier for gateways, with revocation and single use.

use serde_json::{Map, Value};

use sha2::{Digest, Sha256};

use super::{Service, hex, unix_now};
use crate::audit::{Entry, Event};
use crate::error::Error;
use crate::identity::Principal;
use crate::keys::{KeyPurpose, KeyState};
use crate::policy::Action;
use crate::store::{Durable, ReplayRefusal, StoreError};
use crate::token::jws::Header;
use crate::token::verify::{self, Expected, VerifyError};
use crate::util::unb64;

/// Clock skew accepted on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = crate::token::VERIFY_LEEWAY_SECONDS;

/// What `POST /v1/verify` asks for.
#[derive(Debug)]
pub struct VerifyRequest {
    /// The compact JWS.
    pub token: String,
    /// The audience the caller expects; `aud` must contain it.
    pub audience: String,
    /// Reject a second verification of the same `jti` (needs permission).
    pub single_use: bool,
}

/// A valid token (`api::wire::Verified` on the wire).
#[derive(Debug)]
pub struct Verified {
    /// Always true; failures are errors with a code.
    pub valid: bool,
    /// The token's claims.
    pub claims: Map<String, Value>,
    /// The key that signed it.
    pub kid: String,
    /// The issuer (config name) whose key it is.
    pub issuer: String,
}

/// The `kid` a token names, read before anything is trusted.
fn kid_of(token: &str) -> Result<String, VerifyError> {
    token
        .split('.')
        .next()
        .and_then(unb64)
        .and_then(|h| serde_json::from_slice::<Header>(&h).ok())
        .and_then(|h| h.kid)
        .ok_or_else(|| VerifyError::Malformed("the header has no kid".to_string()))
}

impl Service {
    /// Verifies a token minted by this daemon: signature with the key its `kid` names,
    /// the `typ` and claims the issuer's profile gives its tokens, an allowed algorithm, key and token not revoked, `exp`/`nbf`/`iat` within
    /// [`LEEWAY_SECONDS`], lifetime within the issuer's maximum, the expected audience,
    /// and, on request, single use.
    ///
    /// A single-use verification is audited whatever its outcome, and succeeds only once
    /// its record is durable.
    pub async fn verify(
        &self,
        caller: &Principal,
        request: VerifyRequest,
    ) -> Result<Verified, Error> {
        if !request.single_use {
            return self.check(caller, &request).await.map(|(v, _)| v);
        }
        let token_sha256 = hex(&Sha256::digest(request.token.as_bytes()));
        let mut entry = Entry::new(Event::Verify).caller(caller);
        entry.token_sha256 = Some(token_sha256);
        let result = match self.audit_ready() {
            Ok(expected) => self.check(caller, &request).await.map(|v| (v, expected)),
            Err(e) => Err(e),
        };
        match result {
            Ok(((verified, durable), expected)) => {
                let mut entry = entry.issuer(&verified.issuer).kid(&verified.kid);
                entry.jti = verified
                    .claims
                    .get("jti")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                // Until when the store remembers the use, so that a store restored
                // from an older backup can be given it back (`rollback`).
                let exp = verified.claims.get("exp").and_then(Value::as_u64);
                let entry = entry.detail(super::rollback::used_detail(
                    exp.unwrap_or_default().saturating_add(LEEWAY_SECONDS),
                ));
                // The store's sync and the record's at once; the answer waits for both.
                let durable = durable.unwrap_or_else(crate::store::already_durable);
                let (synced, recorded) =
                    tokio::join!(durable, self.record(expected, entry.clone().ok()));
                if let Err(e) = synced {
                    // The jti stays consumed (the `ok` record says so), but its use
                    // might not survive a power loss: refused, and recorded as such.
                    tracing::error!(error = %e, "single use not made durable: the state store is unavailable");
                    let e = Error::Store(e);
                    self.note(entry.refused(e.code(), &e)).await;
                    return Err(e);
                }
                recorded?;
                Ok(verified)
            }
            Err(e) => {
                self.note(entry.refused(e.code(), &e)).await;
                Err(e)
            }
        }
    }

    /// Verifies `request`'s token; for single use, also consumes its jti, and returns
    /// what makes that durable.
    async fn check(
        &self,
        caller: &Principal,
        request: &VerifyRequest,
    ) -> Result<(Verified, Option<Durable>), Error> {
        if request.single_use {
            self.policy().decide(caller, Action::SingleUseVerify)?;
        }
        let registry = self.registry();
        let kid = kid_of(&request.token)?;
        let key = registry
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        // A raw-signing key never signs JWTs: treat it as unknown.
        let config = self.config();
        let issuer = config
            .issuer(&key.issuer)
            .filter(|i| !i.raw_sign && key.purpose == KeyPurpose::Jwt)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        let now = unix_now();
        let expected = Expected {
            issuer: Some(&issuer.iss),
            audience: Some(&request.audience),
            max_ttl: Some(issuer.max_ttl_seconds),
            now,
            leeway: LEEWAY_SECONDS,
            profile: Some(issuer.profile()),
        };
        // verify_with refuses the key itself if its algorithm is not the token's.
        let (_, claims) = verify::verify_with(&request.token, &expected, |named, _| {
            // Only the key checked above (the header was read twice; they agree).
            if named != kid {
                return Err(VerifyError::UnknownKey(named.to_string()));
            }
            // A key whose public key does not parse verifies nothing.
            registry
                .verifying_key(&kid)
                .ok_or(VerifyError::BadSignature)
        })?;
        match key.state {
            KeyState::Active | KeyState::Retired => {}
            KeyState::Revoked => return Err(VerifyError::KeyRevoked.into()),
            // A pending key has not signed yet, and an archived key's tokens have all
            // expired: neither is trusted, as neither is in the JWKS.
            KeyState::Pending | KeyState::Archived => {
                return Err(VerifyError::UnknownKey(kid).into());
            }
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .ok_or(VerifyError::MissingClaim("jti"))?;
        if self.revoked.contains(jti) {
            return Err(VerifyError::TokenRevoked.into());
        }
        let mut durable = None;
        if request.single_use {
            // A use the log recorded before the start, put back into the store then,
            // stays refused even if the store has lost it again since.
            if self.witness.used(jti, now) {
                return Err(VerifyError::Replayed.into());
            }
            let exp = claims
                .get("exp")
                .and_then(Value::as_u64)
                .unwrap_or_default();
            durable = Some(
                self.replay
                    .use_once(jti, exp, now, LEEWAY_SECONDS)
                    .await
                    .map_err(|refusal| match refusal {
                        ReplayRefusal::Replayed => VerifyError::Replayed.into(),
                        ReplayRefusal::Unavailable => Error::Store(StoreError(
                            "the single-use check could not reach the state store".into(),
                        )),
                    })?,
            );
        }
        let verified = Verified {
            valid: true,
            claims,
            kid,
            issuer: key.issuer.clone(),
        };
        Ok((verified, durable))
    }
}
