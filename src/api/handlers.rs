//! Thin handlers: extract a [`wire`] body, call the service with its domain twin, and
//! turn the result back into a [`wire`] body or an [`ApiError`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::ApiJson;
use super::error::ApiError;
use super::path::ApiPath;
use super::wire;
use crate::identity::Principal;
use crate::keys::{KeyState, Published};
use crate::service::Service;
use crate::telemetry::{Operation, timed};

type Svc = State<Arc<Service>>;

/// `POST /v1/tokens`.
pub async fn mint(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::MintRequest>,
) -> Result<Json<wire::MintedToken>, ApiError> {
    let minted = timed(Operation::Mint, svc.mint(&caller, request.into())).await?;
    Ok(Json(minted.into()))
}

/// `POST /v1/sign`.
pub async fn sign(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::SignRequest>,
) -> Result<Json<wire::SignedData>, ApiError> {
    let signed = timed(Operation::Sign, svc.sign(&caller, request.into())).await?;
    Ok(Json(signed.into()))
}

/// `GET /.well-known/jwks.json`: cacheable for the configured lifetime, revalidated by ETag.
pub async fn jwks(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.jwks(), svc.jwks_max_age(), &headers)
}

/// `GET /v1/revocations`: revoked keys and unexpired revoked tokens, cached like the JWKS.
pub async fn revocations(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.revocations(), svc.jwks_max_age(), &headers)
}

/// `GET /v1/issuers/{name}/spiffe-bundle`: a `jwt-svid` issuer's keys as a SPIFFE
/// bundle, cached like the JWKS it mirrors.
pub async fn spiffe_bundle(
    State(svc): Svc,
    ApiPath(issuer): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let bundle = wire::SpiffeBundle::from(svc.spiffe_bundle(&issuer)?);
    Ok(published(
        &Published::render(&bundle),
        svc.jwks_max_age(),
        &headers,
    ))
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
    ApiJson(request): ApiJson<wire::VerifyRequest>,
) -> Result<Json<wire::Verified>, ApiError> {
    let verified = timed(Operation::Verify, svc.verify(&caller, request.into())).await?;
    Ok(Json(verified.into()))
}

/// `POST /v1/keys` (admins).
pub async fn admin_generate(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::GenerateRequest>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc.admin_generate(&caller, &request.issuer).await?;
    Ok(Json(key.into()))
}

/// `POST /v1/issuers/{name}/rotate` (admins).
pub async fn admin_rotate(
    State(svc): Svc,
    caller: Principal,
    ApiPath(issuer): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc.admin_rotate(&caller, &issuer).await?;
    Ok(Json(key.into()))
}

/// `POST /v1/keys/{kid}/retire` (admins).
pub async fn admin_retire(
    State(svc): Svc,
    caller: Principal,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc
        .admin_set_state(&caller, &kid, KeyState::Retired)
        .await?;
    Ok(Json(key.into()))
}

/// `POST /v1/keys/{kid}/revoke` (admins).
pub async fn admin_revoke(
    State(svc): Svc,
    caller: Principal,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc
        .admin_set_state(&caller, &kid, KeyState::Revoked)
        .await?;
    Ok(Json(key.into()))
}

/// `POST /v1/revocations` (admins): revoke a token by jti.
pub async fn admin_revoke_token(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::RevokeTokenRequest>,
) -> Result<Json<wire::RevokedToken>, ApiError> {
    let revoked = svc.admin_revoke_token(&caller, request.into()).await?;
    Ok(Json(revoked.into()))
}

/// `GET /v1/keys`.
pub async fn keys(State(svc): Svc) -> Json<wire::KeyList> {
    Json(svc.keys().into())
}

/// `GET /v1/keys/{kid}`.
pub async fn key(
    State(svc): Svc,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    Ok(Json(svc.key(&kid)?.into()))
}

/// `GET /v1/keys/{kid}/attestation`: the key's certificate, then the CA chain, as PEM.
pub async fn attestation(
    State(svc): Svc,
    ApiPath(kid): ApiPath<String>,
) -> Result<Response, ApiError> {
    let pem = svc.attestation_pem(&kid)?;
    let content_type = HeaderValue::from_static("application/pem-certificate-chain");
    Ok(([(header::CONTENT_TYPE, content_type)], pem).into_response())
}

/// `GET /healthz`: the process serves requests.
pub async fn healthz() -> Json<wire::Health> {
    Json(wire::Health {
        status: wire::HealthStatus::Ok,
        warnings: Vec::new(),
    })
}

/// `GET /readyz`: the daemon can sign now; with what it found that does not stop it.
pub async fn readyz(State(svc): Svc) -> Result<Json<wire::Health>, ApiError> {
    svc.ready().await?;
    Ok(Json(wire::Health {
        status: wire::HealthStatus::Ready,
        warnings: svc.readiness_warnings(),
    }))
}

/// Any unknown path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
