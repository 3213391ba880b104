//! The SPIFFE bundle (SPIFFE Trust Domain and Bundle §4; JWT-SVID §6): a JWK Set whose
//! keys are JWT authorities (`use: "jwt-svid"`), with the SPIFFE members.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service;

/// `GET /v1/issuers/{name}/spiffe-bundle`.
///
/// `spiffe_sequence` is left out (it is optional): it must grow with every change of the
/// bundle, across restarts and replicas, and signetd keeps no counter that does.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpiffeBundle {
    /// The JWT authorities.
    pub keys: Vec<SpiffeJwk>,
    /// How often a consumer should fetch the bundle again, in seconds.
    pub spiffe_refresh_hint: u64,
}

/// A JWT authority: only the members the bundle and JWT-SVID specifications define
/// (which say to include no others), so no `alg`, and no `x5c` (in a SPIFFE bundle that
/// names X.509 authorities; the attestation chain is at `/v1/keys/{kid}/attestation`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SpiffeJwk {
    /// `EC`.
    pub kty: String,
    /// `P-256`.
    pub crv: String,
    /// The x coordinate, base64url.
    pub x: String,
    /// The y coordinate, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The key id, as in the JWKS and the tokens' `kid`.
    pub kid: String,
    /// Always `jwt-svid`.
    #[serde(rename = "use")]
    #[schema(value_type = String, pattern = "^jwt-svid$")]
    pub use_: &'static str,
}

impl From<service::spiffe::SpiffeBundle> for SpiffeBundle {
    fn from(bundle: service::spiffe::SpiffeBundle) -> Self {
        SpiffeBundle {
            keys: bundle
                .keys
                .into_iter()
                .map(|jwk| SpiffeJwk {
                    kty: jwk.kty,
                    crv: jwk.crv,
                    x: jwk.x,
                    y: jwk.y,
                    kid: jwk.kid,
                    use_: "jwt-svid",
                })
                .collect(),
            spiffe_refresh_hint: bundle.refresh_hint_seconds,
        }
    }
}
