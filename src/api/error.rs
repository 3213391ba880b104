//! The one place an error becomes an HTTP response.
//!
//! [`ApiError`] is what handlers and extractors fail with: a domain [`Error`] from the
//! service, or a refusal only HTTP knows about (a path, method, media type, size, or a
//! body that does not parse). Either way the client gets a status and a
//! [`wire::ErrorBody`], and the response carries a [`Refusal`] for the audit middleware.
//! No axum rejection reaches a client unconverted: the extractors in [`super::body`]
//! and [`super::path`] turn each into one of these, and the router's fallbacks answer
//! unknown paths and methods with one.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::wire;
use crate::error::Error;

/// Everything a request can fail with over HTTP. Codes are part of the API contract:
/// clients match on them, so they are never renamed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the service refused, or failed at.
    #[error(transparent)]
    Domain(#[from] Error),
    /// The body is not syntactically valid JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON but not the shape the endpoint takes.
    #[error("{0}")]
    InvalidBody(String),
    /// A path segment cannot be read, such as one that is not UTF-8 once decoded.
    #[error("{0}")]
    InvalidPath(String),
    /// The request did not declare `Content-Type: application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The body did not arrive in time.
    #[error("the request body did not arrive within the time allowed")]
    RequestTimeout,
    /// The body exceeds the size limit.
    #[error("request body exceeds {0} bytes")]
    BodyTooLarge(usize),
    /// No such endpoint.
    #[error("no such endpoint")]
    NotFound,
    /// The endpoint exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The caller already holds as many connections as one principal may.
    #[error("this caller already holds {0} connections, the most one caller may hold")]
    TooManyConnections(usize),
    /// The request as a whole took longer than allowed.
    #[error("the request did not complete within {0} s")]
    DeadlineExceeded(u64),
}

impl ApiError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Domain(e) => e.code(),
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidBody(_) | ApiError::InvalidPath(_) => "invalid_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::BodyTooLarge(_) => "body_too_large",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooManyConnections(_) => "too_many_connections",
            ApiError::DeadlineExceeded(_) => "deadline_exceeded",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(e) => domain_status(e),
            ApiError::MalformedJson(_) | ApiError::InvalidBody(_) | ApiError::InvalidPath(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DeadlineExceeded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The body the client gets.
    pub fn body(&self) -> wire::ErrorBody {
        wire::ErrorBody {
            error: wire::ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                problems: match self {
                    ApiError::Domain(Error::NotReady(problems)) => Some(problems.clone()),
                    _ => None,
                },
            },
        }
    }
}

/// `Retry-After` of `hsm_unavailable`: about the first wait of the background recovery
/// (`docs/reliability.md`, "HSM faults").
const HSM_RETRY_AFTER_SECONDS: u64 = 2;

/// The HTTP status of each domain error.
fn domain_status(error: &Error) -> StatusCode {
    match error {
        Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated => StatusCode::UNAUTHORIZED,
        Error::CallerNotAllowed(_)
        | Error::CallerUnknown
        | Error::RawSignDisabled(_)
        | Error::MintDisabled(_)
        | Error::NotAdmin
        | Error::NotAuditor
        | Error::MetricsNotAllowed => StatusCode::FORBIDDEN,
        Error::UnknownIssuer(_)
        | Error::UnknownKey(_)
        | Error::NoSpiffeBundle(_)
        | Error::NoSuchTile(_) => StatusCode::NOT_FOUND,
        Error::AudienceNotAllowed(_)
        | Error::TtlExceedsMax { .. }
        | Error::ReservedClaim(_)
        | Error::MissingClaim(_)
        | Error::ForbiddenClaim(_)
        | Error::ClaimsTooLarge { .. }
        | Error::InvalidSpiffeId(_)
        | Error::TrustDomainNotAllowed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::InvalidToken(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::NoActiveKey(_)
        | Error::Hsm(_)
        | Error::Signer(_)
        | Error::Store(_)
        | Error::AuditUnavailable
        | Error::NoCheckpoint
        | Error::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The code and message of an error response, attached to the response so the audit
/// middleware can record the refusal without parsing the body.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The stable code.
    pub code: &'static str,
    /// The message the client got.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Backend details go to the log only; the client gets the coarse message.
        match &self {
            ApiError::Domain(Error::Hsm(detail)) => {
                tracing::error!(code = self.code(), error = %detail, "token operation failed")
            }
            ApiError::Domain(Error::Signer(detail)) => {
                tracing::error!(code = self.code(), error = %detail, "signing failed")
            }
            ApiError::Domain(Error::Store(detail)) => {
                tracing::error!(code = self.code(), error = %detail, "state store failed")
            }
            ApiError::Domain(Error::Internal(detail)) => {
                tracing::error!(code = self.code(), error = %detail, "internal error")
            }
            _ => tracing::debug!(code = self.code(), "request refused: {self}"),
        }
        let body = self.body();
        let refusal = Refusal {
            code: self.code(),
            message: body.error.message.clone(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        let retry_after = match &self {
            ApiError::Domain(Error::RateLimited {
                retry_after_seconds,
                ..
            }) => Some(*retry_after_seconds),
            // The token is recovering, or busy: worth trying again soon, not at once.
            _ if self.code() == "hsm_unavailable" => Some(HSM_RETRY_AFTER_SECONDS),
            _ if self.code() == "overloaded" => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response.extensions_mut().insert(refusal);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes and statuses are a contract; this pins the HTTP-only ones.
    #[test]
    fn http_refusals_keep_their_codes_and_statuses() {
        let cases = [
            (ApiError::MalformedJson("x".into()), 400, "malformed_json"),
            (ApiError::InvalidBody("x".into()), 400, "invalid_request"),
            (ApiError::InvalidPath("x".into()), 400, "invalid_request"),
            (
                ApiError::UnsupportedMediaType,
                415,
                "unsupported_media_type",
            ),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (ApiError::BodyTooLarge(1), 413, "body_too_large"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (Error::NotAdmin.into(), 403, "not_admin"),
            (ApiError::TooManyConnections(1), 429, "too_many_connections"),
            (ApiError::DeadlineExceeded(1), 503, "deadline_exceeded"),
            (Error::Internal("secret".into()).into(), 500, "internal"),
            (
                Error::Hsm(crate::hsm::HsmError::Overloaded).into(),
                503,
                "overloaded",
            ),
            (
                Error::Store(crate::store::StoreError("x".into())).into(),
                503,
                "state_unavailable",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!((error.status().as_u16(), error.code()), (status, code));
        }
    }

    #[test]
    fn rate_limited_is_429_with_retry_after() {
        let error = ApiError::from(Error::RateLimited {
            issuer: "x".into(),
            whose: "this caller's",
            retry_after_seconds: 7,
        });
        assert_eq!(
            (error.status().as_u16(), error.code()),
            (429, "rate_limited")
        );
        let response = error.into_response();
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(
            response.extensions().get::<Refusal>().unwrap().code,
            "rate_limited"
        );
    }

    #[test]
    fn the_body_and_the_refusal_say_the_same_and_hide_internals() {
        let response = ApiError::from(Error::Internal("secret detail".into())).into_response();
        let refusal = response.extensions().get::<Refusal>().unwrap();
        assert_eq!(refusal.code, "internal");
        assert_eq!(refusal.message, "internal error");
        let body = ApiError::from(Error::Internal("secret detail".into())).body();
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"internal","message":"internal error"}}"#
        );
    }
}
