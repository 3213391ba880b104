//! Thin handlers: extract, call the service, map the error.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::ApiJson;
use crate::error::Error;
use crate::policy::Caller;
use crate::service::{KeyView, MintedToken, Service, SignRequest, SignedData};
use crate::token::MintRequest;

type Svc = State<Arc<Service>>;

/// `POST /v1/tokens`.
pub async fn mint(
    State(svc): Svc,
    caller: Caller,
    ApiJson(request): ApiJson<MintRequest>,
) -> Result<Json<MintedToken>, Error> {
    svc.mint(&caller, request).await.map(Json)
}

/// `POST /v1/sign`.
pub async fn sign(
    State(svc): Svc,
    caller: Caller,
    ApiJson(request): ApiJson<SignRequest>,
) -> Result<Json<SignedData>, Error> {
    svc.sign(&caller, request).await.map(Json)
}

/// `GET /.well-known/jwks.json`: cacheable for the configured lifetime, revalidated by ETag.
pub async fn jwks(State(svc): Svc, headers: HeaderMap) -> Response {
    let published = svc.jwks();
    let cache = HeaderValue::from_str(&format!("public, max-age={}", svc.jwks_max_age()))
        .expect("a number is a valid header value");
    let etag = HeaderValue::from_str(&published.etag).expect("an etag is a valid header value");
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == published.etag
        });
    let common = [(header::CACHE_CONTROL, cache), (header::ETAG, etag)];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (common, [content_type], published.body.to_vec()).into_response()
}

/// `GET /v1/keys`.
pub async fn keys(State(svc): Svc) -> Json<serde_json::Value> {
    Json(json!({"keys": svc.keys()}))
}

/// `GET /v1/keys/{kid}`.
pub async fn key(State(svc): Svc, Path(kid): Path<String>) -> Result<Json<KeyView>, Error> {
    svc.key(&kid).map(Json)
}

/// `GET /v1/keys/{kid}/attestation`: the key's certificate, then the CA chain, as PEM.
pub async fn attestation(State(svc): Svc, Path(kid): Path<String>) -> Result<Response, Error> {
    let pem = svc.attestation_pem(&kid)?;
    let content_type = HeaderValue::from_static("application/pem-certificate-chain");
    Ok(([(header::CONTENT_TYPE, content_type)], pem).into_response())
}

/// `GET /healthz`: the process serves requests.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the token answers.
pub async fn readyz(State(svc): Svc) -> Result<Json<serde_json::Value>, Error> {
    svc.ready().await.map(|()| Json(json!({"status": "ready"})))
}

/// Any unknown path.
pub async fn not_found() -> Error {
    Error::NotFound
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}
