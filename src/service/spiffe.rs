//! `GET /v1/issuers/{name}/spiffe-bundle`: a `jwt-svid` issuer's keys as a SPIFFE
//! bundle (SPIFFE Trust Domain and Bundle §4), for SPIFFE consumers that fetch a trust
//! domain's JWT authorities from a bundle endpoint.

use super::Service;
use crate::algorithm::Algorithm;
use crate::config::ProfileConfig;
use crate::error::Error;
use crate::keys::{Jwk, KeyPurpose};

/// A SPIFFE bundle of one issuer (`api::wire::SpiffeBundle` on the wire).
#[derive(Debug)]
pub struct SpiffeBundle {
    /// The issuer's trust domain.
    pub trust_domain: String,
    /// The keys the JWKS publishes for the issuer (pending, active and retired), ES256
    /// only: those are the keys a JWT-SVID of the issuer can be signed with.
    pub keys: Vec<Jwk>,
    /// How often consumers should fetch the bundle again, in seconds.
    pub refresh_hint_seconds: u64,
}

impl Service {
    /// The SPIFFE bundle of `issuer`, a `jwt-svid` issuer; the same keys as the JWKS
    /// holds for it, from the same registry.
    pub fn spiffe_bundle(&self, issuer: &str) -> Result<SpiffeBundle, Error> {
        let config = self.config();
        let policy = config
            .issuer(issuer)
            .ok_or_else(|| Error::UnknownIssuer(issuer.to_string()))?;
        if policy.profile != ProfileConfig::JwtSvid {
            return Err(Error::NoSpiffeBundle(issuer.to_string()));
        }
        let registry = self.registry();
        let keys = registry
            .all()
            .into_iter()
            .filter(|k| {
                k.issuer == issuer
                    && k.purpose == KeyPurpose::Jwt
                    && k.state.is_published()
                    && k.algorithm == Algorithm::Es256
            })
            .map(|k| k.jwk(&[]))
            .collect();
        // Default: the JWKS's cache lifetime, which prepublication already outlasts, so
        // a consumer that follows the hint has each key before it signs.
        let refresh_hint_seconds = policy
            .spiffe_refresh_hint_seconds
            .unwrap_or(u64::from(config.jwks.max_age_seconds));
        Ok(SpiffeBundle {
            trust_domain: policy.trust_domain.clone().unwrap_or_default(),
            keys,
            refresh_hint_seconds,
        })
    }
}
