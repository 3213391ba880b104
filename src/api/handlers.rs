//! Thin handlers: extract, call the service, map the error.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::body::ApiJson;
use crate::error::Error;
use crate::identity::Principal;
use crate::keys::{KeyState, Published};
use crate::service::admin::{GenerateRequest, RevokeTokenRequest};
use crate::service::verify::{Verified, VerifyRequest};
use crate::service::{KeyView, MintedToken, Service, SignRequest, SignedData};
use crate::store::RevokedToken;
use crate::token::MintRequest;

type Svc = State<Arc<Service>>;

/// `POST /v1/tokens`.
pub async fn mint(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<MintRequest>,
) -> Result<Json<MintedToken>, Error> {
    svc.mint(&caller, request).await.map(Json)
}

/// `POST /v1/sign`.
pub async fn sign(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<SignRequest>,
) -> Result<Json<SignedData>, Error> {
    svc.sign(&caller, request).await.map(Json)
}

/// `GET /.well-known/jwks.json`: cacheable for the configured lifetime, revalidated by ETag.
pub async fn jwks(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.jwks(), svc.jwks_max_age(), &headers)
}

/// `GET /v1/revocations`: revoked keys and unexpired revoked tokens, cached like the JWKS.
pub async fn revocations(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.revocations(), svc.jwks_max_age(), &headers)
}

/// A published document with `Cache-Control`, a strong `ETag`, and `304` when the
/// client's `If-None-Match` already names it.
fn published(document: &Published, max_age: u32, headers: &HeaderMap) -> Response {
    let cache = HeaderValue::from_str(&format!("public, max-age={max_age}"))
        .expect("a number is a valid header value");
    let etag = HeaderValue::from_str(&document.etag).expect("an etag is a valid header value");
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == document.etag
        });
    let common = [(header::CACHE_CONTROL, cache), (header::ETAG, etag)];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (common, [content_type], document.body.to_vec()).into_response()
}

/// `POST /v1/verify`.
pub async fn verify(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<VerifyRequest>,
) -> Result<Json<Verified>, Error> {
    svc.verify(&caller, request).await.map(Json)
}

/// `POST /v1/keys` (admins).
pub async fn admin_generate(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<GenerateRequest>,
) -> Result<Json<KeyView>, Error> {
    svc.admin_generate(&caller, &request.issuer).await.map(Json)
}

/// `POST /v1/issuers/{name}/rotate` (admins).
pub async fn admin_rotate(
    State(svc): Svc,
    caller: Principal,
    Path(issuer): Path<String>,
) -> Result<Json<KeyView>, Error> {
    svc.admin_rotate(&caller, &issuer).await.map(Json)
}

/// `POST /v1/keys/{kid}/retire` (admins).
pub async fn admin_retire(
    State(svc): Svc,
    caller: Principal,
    Path(kid): Path<String>,
) -> Result<Json<KeyView>, Error> {
    svc.admin_set_state(&caller, &kid, KeyState::Retired)
        .await
        .map(Json)
}

/// `POST /v1/keys/{kid}/revoke` (admins).
pub async fn admin_revoke(
    State(svc): Svc,
    caller: Principal,
    Path(kid): Path<String>,
) -> Result<Json<KeyView>, Error> {
    svc.admin_set_state(&caller, &kid, KeyState::Revoked)
        .await
        .map(Json)
}

/// `POST /v1/revocations` (admins): revoke a token by jti.
pub async fn admin_revoke_token(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<RevokeTokenRequest>,
) -> Result<Json<RevokedToken>, Error> {
    svc.admin_revoke_token(&caller, request).await.map(Json)
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
