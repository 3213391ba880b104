//! Every body that crosses the HTTP boundary, in one place.
//!
//! The service speaks in domain types; this module holds their serde twins and the
//! conversions between the two, so that the JSON a client sees is spelled out here and
//! nowhere else, and the OpenAPI document ([`crate::api::openapi`]) is derived from here. The
//! service never imports this module: [`crate::api`] depends on [`crate::service`], not
//! the other way round.
//!
//! - [`request`]: the bodies clients send, converted into the service's parameters.
//! - [`response`]: the bodies the daemon returns, converted from the service's results.
//! - [`spiffe`]: the SPIFFE bundle of a `jwt-svid` issuer.
//! - Here: the enums both share, and the error body.
//!
//! Names of request types match their domain twins on purpose: serde puts the type name
//! into some messages ("expected struct MintRequest"), which clients already see.
//!
//! Two documents are rendered elsewhere: the JWKS and the revocation list are rendered
//! once per registry build by [`crate::keys::KeyRegistry`] and served as cached bytes
//! with an `ETag`; [`documents`] holds their schemas only. [`crate::keys::Jwk`] is likewise reused as is inside [`KeyView`]: its shape
//! is fixed by RFC 7517, and it must match the JWKS byte for byte.

pub mod documents;
pub mod request;
pub mod response;
pub mod spiffe;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use request::{
    Audience, GenerateRequest, MintRequest, RevokeTokenRequest, SignRequest, VerifyRequest,
};
pub use response::{
    Health, HealthStatus, KeyAttributes, KeyList, KeyView, MintedToken, RevokedToken, SignedData,
    Verified,
};
pub use spiffe::SpiffeBundle;

/// A signature algorithm, as JWS spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl From<crate::Algorithm> for Algorithm {
    fn from(algorithm: crate::Algorithm) -> Self {
        match algorithm {
            crate::Algorithm::Es256 => Algorithm::Es256,
            crate::Algorithm::EdDsa => Algorithm::EdDsa,
        }
    }
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signing, and published.
    Active,
    /// No longer signing; published until its tokens have expired.
    Retired,
    /// Out of the JWKS; still retrievable by kid.
    Archived,
    /// Compromised: out of the JWKS, listed in revocations.
    Revoked,
}

impl From<crate::keys::KeyState> for KeyState {
    fn from(state: crate::keys::KeyState) -> Self {
        use crate::keys::KeyState as Domain;
        match state {
            Domain::Pending => KeyState::Pending,
            Domain::Active => KeyState::Active,
            Domain::Retired => KeyState::Retired,
            Domain::Archived => KeyState::Archived,
            Domain::Revoked => KeyState::Revoked,
        }
    }
}

/// What a key signs, fixed when it is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyPurpose {
    /// JWTs the daemon mints.
    Jwt,
    /// Caller-supplied bytes (`POST /v1/sign`).
    Raw,
}

impl From<crate::keys::KeyPurpose> for KeyPurpose {
    fn from(purpose: crate::keys::KeyPurpose) -> Self {
        match purpose {
            crate::keys::KeyPurpose::Jwt => KeyPurpose::Jwt,
            crate::keys::KeyPurpose::Raw => KeyPurpose::Raw,
        }
    }
}

/// Signature encodings `POST /v1/sign` takes and returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureFormat {
    /// The JWS form: raw `r‖s` for ES256, the plain signature for EdDSA.
    #[default]
    Jws,
    /// ASN.1 DER `ECDSA-Sig-Value` (ES256 only).
    Der,
}

impl From<SignatureFormat> for crate::service::SignatureFormat {
    fn from(format: SignatureFormat) -> Self {
        match format {
            SignatureFormat::Jws => Self::Jws,
            SignatureFormat::Der => Self::Der,
        }
    }
}

impl From<crate::service::SignatureFormat> for SignatureFormat {
    fn from(format: crate::service::SignatureFormat) -> Self {
        match format {
            crate::service::SignatureFormat::Jws => Self::Jws,
            crate::service::SignatureFormat::Der => Self::Der,
        }
    }
}

/// Every error response: `{"error":{"code":"…","message":"…"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The stable, machine-readable code clients match on.
    pub code: String,
    /// A human-readable explanation; never backend details.
    pub message: String,
    /// `not_ready` only: what keeps the daemon from signing, one entry per problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}
