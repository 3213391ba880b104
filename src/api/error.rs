//! The one place a domain [`Error`] becomes an HTTP response.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::wire;
use crate::error::Error;
use crate::token::verify::VerifyError;

/// The code and message of an error response, attached to the response so the audit
/// middleware can record the refusal without parsing the body.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// The stable code.
    pub code: &'static str,
    /// The message the client got.
    pub message: String,
}

/// The HTTP status of each error.
pub fn status(error: &Error) -> StatusCode {
    match error {
        Error::MalformedJson(_) | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated => StatusCode::UNAUTHORIZED,
        Error::CallerNotAllowed(_)
        | Error::CallerUnknown
        | Error::RawSignDisabled(_)
        | Error::MintDisabled(_) => StatusCode::FORBIDDEN,
        Error::UnknownIssuer(_) | Error::UnknownKey(_) | Error::NotFound => StatusCode::NOT_FOUND,
        Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::AudienceNotAllowed(_)
        | Error::TtlExceedsMax { .. }
        | Error::ReservedClaim(_)
        | Error::MissingClaim(_)
        | Error::ForbiddenClaim(_)
        | Error::ClaimsTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::InvalidToken(VerifyError::ReplayStoreFull) => StatusCode::SERVICE_UNAVAILABLE,
        Error::InvalidToken(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotAdmin => StatusCode::FORBIDDEN,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::NoActiveKey(_) | Error::Hsm(_) | Error::AuditUnavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        // Backend details go to the log only; the client gets the coarse message.
        match &self {
            Error::Hsm(detail) => {
                tracing::error!(code = self.code(), error = %detail, "token operation failed")
            }
            Error::Internal(detail) => {
                tracing::error!(code = self.code(), error = %detail, "internal error")
            }
            _ => tracing::debug!(code = self.code(), "request refused: {self}"),
        }
        let refusal = Refusal {
            code: self.code(),
            message: self.to_string(),
        };
        let body = wire::ErrorBody {
            error: wire::ErrorDetail {
                code: refusal.code.to_string(),
                message: refusal.message.clone(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(refusal);
        response
    }
}
