//! The path-parameter extractor: a rejected path is an [`ApiError`], never axum's text.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::error::Error;

/// Path parameters, like axum's `Path`, but failing with a JSON error body that the
/// audit middleware can record.
///
/// A segment the client got wrong (`/v1/keys/%FF`: not UTF-8 once decoded) is
/// `invalid_request` (400). A route whose parameters do not fit its handler is a bug in
/// the router, so it is `internal` (500) and logged, as axum itself would rate it.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                Err(Error::Internal(rejection.body_text()).into())
            }
            Err(rejection) => Err(ApiError::InvalidPath(rejection.body_text())),
        }
    }
}
