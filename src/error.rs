//! The one domain error type, with stable codes.
//!
//! The service returns [`Error`]; it knows nothing of HTTP. `api::error::ApiError` wraps
//! it, next to the refusals only HTTP has (paths, methods, media types, sizes, bodies
//! that do not parse), and maps both to a status in exactly one place. [`Error::code`] is
//! part of the API contract: clients match on it, so codes are never renamed. The `Display` text is what a client sees; backend details (which
//! PKCS#11 call failed, and why) stay in [`Error::Hsm`]'s source and go to the log only.

use crate::hsm::HsmError;
use crate::signer::SignError;
use crate::store::StoreError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is out of range or the fields do not fit together (the shape of a body
    /// is checked where it is parsed, in `api`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The caller has no identity this endpoint accepts.
    #[error(
        "this endpoint needs an authenticated caller: use the Unix socket, or HTTPS with a client certificate"
    )]
    Unauthenticated,
    /// The caller is known but the issuer's policy does not name it.
    #[error("caller is not allowed to use issuer {0:?}")]
    CallerNotAllowed(String),
    /// No issuer's policy names the caller at all.
    #[error("caller is not allowed to use any issuer")]
    CallerUnknown,
    /// `POST /v1/sign` on a JWT issuer: JWT keys never make raw signatures.
    #[error("issuer {0:?} mints JWTs and does not make raw signatures (raw_sign = false)")]
    RawSignDisabled(String),
    /// `POST /v1/tokens` on a raw-signing issuer: raw-signing keys never sign JWTs.
    #[error("issuer {0:?} makes raw signatures and does not mint JWTs (raw_sign = true)")]
    MintDisabled(String),
    /// No such issuer in the config.
    #[error("unknown issuer {0:?}")]
    UnknownIssuer(String),
    /// No such key id.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// `aud` names an audience the issuer does not allow.
    #[error("audience {0:?} is not allowed for this issuer")]
    AudienceNotAllowed(String),
    /// `ttl_seconds` is above the issuer's maximum.
    #[error("ttl_seconds {requested} exceeds this issuer's maximum of {max}")]
    TtlExceedsMax {
        /// What the caller asked for.
        requested: u64,
        /// The issuer's `max_ttl_seconds`.
        max: u64,
    },
    /// A custom claim tries to set a claim the daemon or request fields own.
    #[error("claim {0:?} is set by the daemon and cannot be given in claims")]
    ReservedClaim(String),
    /// A claim the issuer requires is absent.
    #[error("claim {0:?} is required by this issuer")]
    MissingClaim(String),
    /// A claim the issuer forbids is present.
    #[error("claim {0:?} is not allowed by this issuer")]
    ForbiddenClaim(String),
    /// The custom claims are too large.
    #[error("claims take {size} bytes; this issuer allows {max}")]
    ClaimsTooLarge {
        /// Serialized size of the claims.
        size: usize,
        /// The issuer's `max_claims_bytes`.
        max: usize,
    },
    /// A `jwt-svid` issuer's `sub` is not a workload's SPIFFE ID; the text says why.
    #[error("sub is not a SPIFFE ID of a workload: {0}")]
    InvalidSpiffeId(String),
    /// A `jwt-svid` issuer's `sub` is a SPIFFE ID of another trust domain (named here).
    #[error("sub is in trust domain {0:?}, not this issuer's")]
    TrustDomainNotAllowed(String),
    /// `GET /v1/issuers/{name}/spiffe-bundle` for an issuer whose profile is not `jwt-svid`.
    #[error(
        "issuer {0:?} does not mint JWT-SVIDs (profile = \"jwt-svid\"), so it has no SPIFFE bundle"
    )]
    NoSpiffeBundle(String),
    /// The issuer has no active key to sign with.
    #[error("issuer {0:?} has no active key; generate one with `signetd keys generate`")]
    NoActiveKey(String),
    /// A token given to `POST /v1/verify` is not valid; the code says why.
    #[error("{0}")]
    InvalidToken(#[from] crate::token::verify::VerifyError),
    /// A lifecycle call from a caller that is not an admin.
    #[error("only admins may change keys or revocations")]
    NotAdmin,
    /// A certificate holder that `[metrics] callers` does not name asked for metrics.
    #[error("this caller may not read metrics: [metrics] callers does not name it")]
    MetricsNotAllowed,
    /// A caller that `[audit] auditors` does not name asked for the log's records or
    /// tiles.
    #[error("only auditors may read the audit log: [audit] auditors does not name this caller")]
    NotAuditor,
    /// No such tile of the audit log's tree (a malformed path, or past what the latest
    /// checkpoint covers).
    #[error("{0}")]
    NoSuchTile(String),
    /// The audit log has no signed checkpoint to serve yet.
    #[error("the audit log has no signed checkpoint yet")]
    NoCheckpoint,
    /// A lifecycle call that the key's state does not allow.
    #[error("{0}")]
    Conflict(String),
    /// The audit log cannot be written, so nothing is signed; details are logged.
    #[error("the audit log cannot be written; signing is refused until it can")]
    AuditUnavailable,
    /// The token or its module failed; details are logged, not returned.
    #[error("the key store is unavailable")]
    Hsm(#[from] HsmError),
    /// The signer could not sign; details are logged, not returned.
    #[error("the key store is unavailable")]
    Signer(#[from] SignError),
    /// The state store failed; details are logged, not returned.
    #[error("the state store is unavailable")]
    Store(#[from] StoreError),
    /// A bug or an impossible state; details are logged, not returned.
    #[error("internal error")]
    Internal(String),
    /// `/readyz`: the daemon cannot sign now; each entry names one reason.
    #[error("not ready: {}", .0.join("; "))]
    NotReady(Vec<String>),
    /// The caller's or the issuer's request allowance is used up for now.
    #[error(
        "too many requests: {whose} limit for issuer {issuer:?} is used up; retry after {retry_after_seconds} s"
    )]
    RateLimited {
        /// The issuer asked for.
        issuer: String,
        /// Whose allowance: "this caller's" or "the issuer's".
        whose: &'static str,
        /// Whole seconds until a retry can succeed (`Retry-After`).
        retry_after_seconds: u64,
    },
}

impl Error {
    /// The stable, machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Unauthenticated => "unauthenticated",
            Error::CallerNotAllowed(_) | Error::CallerUnknown | Error::MetricsNotAllowed => {
                "caller_not_allowed"
            }
            Error::RawSignDisabled(_) => "raw_sign_disabled",
            Error::MintDisabled(_) => "mint_disabled",
            Error::UnknownIssuer(_) => "unknown_issuer",
            Error::UnknownKey(_) => "unknown_key",
            Error::AudienceNotAllowed(_) => "audience_not_allowed",
            Error::TtlExceedsMax { .. } => "ttl_exceeds_max",
            Error::ReservedClaim(_) => "reserved_claim",
            Error::MissingClaim(_) => "missing_claim",
            Error::ForbiddenClaim(_) => "forbidden_claim",
            Error::ClaimsTooLarge { .. } => "claims_too_large",
            Error::InvalidSpiffeId(_) => "invalid_spiffe_id",
            Error::TrustDomainNotAllowed(_) => "trust_domain_not_allowed",
            Error::NoSpiffeBundle(_) => "no_spiffe_bundle",
            Error::NoActiveKey(_) => "no_active_key",
            Error::InvalidToken(e) => e.code(),
            Error::NotAdmin => "not_admin",
            Error::NotAuditor => "not_auditor",
            Error::NoSuchTile(_) => "no_such_tile",
            Error::NoCheckpoint => "no_checkpoint",
            Error::Conflict(_) => "invalid_state",
            Error::AuditUnavailable => "audit_unavailable",
            Error::Hsm(HsmError::Timeout(_)) => "hsm_timeout",
            Error::Hsm(HsmError::Overloaded) | Error::Signer(SignError::Overloaded) => "overloaded",
            Error::Hsm(_) => "hsm_unavailable",
            Error::Signer(SignError::Timeout(_)) => "hsm_timeout",
            Error::Signer(_) => "hsm_unavailable",
            Error::Store(_) => "state_unavailable",
            Error::Internal(_) => "internal",
            Error::RateLimited { .. } => "rate_limited",
            Error::NotReady(_) => "not_ready",
        }
    }
}
