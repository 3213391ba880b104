//! The body extractor, which turns every rejection into an [`ApiError`] with a stable
//! code, and the caller, which is never rejected.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::identity::Principal;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client may take to send its body. Without a deadline, a caller trickling
/// bytes could hold connection slots forever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON body, one of the [`super::wire`] request types. Requires
/// `Content-Type: application/json`; at most [`MAX_BODY_BYTES`].
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let parsed = tokio::time::timeout(
            BODY_READ_TIMEOUT,
            axum::Json::<T>::from_request(request, state),
        )
        .await
        .map_err(|_| ApiError::RequestTimeout)?;
        match parsed {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::MalformedJson(e.body_text())),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::InvalidBody(e.body_text())),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge(MAX_BODY_BYTES))
            }
            Err(e) => Err(ApiError::InvalidBody(e.body_text())),
        }
    }
}

/// The caller the transport attached to the request. A request without one is anonymous:
/// failing closed if a transport ever forgets to attach it.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Anonymous(None)))
    }
}
