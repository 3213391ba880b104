//! Thin handlers: extract a [`wire`] body, call the service with its domain twin, and
//! turn the result back into a [`wire`] body or an [`ApiError`].

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::body::ApiJson;
use super::error::ApiError;
use super::openapi::errors;
use super::path::ApiPath;
use super::wire;
use crate::identity::Principal;
use crate::keys::{KeyState, Published};
use crate::service::Service;
use crate::telemetry::{Operation, timed};

type Svc = State<Arc<Service>>;

/// `POST /v1/tokens`.
#[utoipa::path(post, path = "/v1/tokens", tag = "signing", operation_id = "mint",
    summary = "Mint a JWT",
    description = "The daemon sets `iss`, `iat`, `exp`, `jti` and the header; the caller's audience, TTL and claims are checked against the issuer's policy.",
    request_body = wire::MintRequest,
    responses((status = 200, description = "The token, signed and audited", body = wire::MintedToken), errors::Mint),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn mint(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::MintRequest>,
) -> Result<Json<wire::MintedToken>, ApiError> {
    let minted = timed(Operation::Mint, svc.mint(&caller, request.into())).await?;
    Ok(Json(minted.into()))
}

/// `POST /v1/sign`.
#[utoipa::path(post, path = "/v1/sign", tag = "signing", operation_id = "sign",
    summary = "Make a raw signature (raw-signing issuers only)",
    description = "Send exactly one of `digest` (ES256 only) and `message`.",
    request_body = wire::SignRequest,
    responses((status = 200, description = "The signature, audited", body = wire::SignedData), errors::Sign),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn sign(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::SignRequest>,
) -> Result<Json<wire::SignedData>, ApiError> {
    let signed = timed(Operation::Sign, svc.sign(&caller, request.into())).await?;
    Ok(Json(signed.into()))
}

/// `GET /.well-known/jwks.json`: cacheable for the configured lifetime, revalidated by ETag.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "public", operation_id = "jwks",
    summary = "The JWK Set of the JWT issuers' published keys",
    params(errors::IfNoneMatch),
    responses((status = 200, description = "The JWK Set", body = wire::documents::JwkSet, headers(
        ("Cache-Control" = String, description = "`public, max-age=N`, N = `jwks.max_age_seconds`"),
        ("ETag" = String, description = "A strong entity tag of the document"))),
        errors::NotModified, errors::Public))]
pub async fn jwks(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.jwks(), svc.jwks_max_age(), &headers)
}

/// `GET /v1/revocations`: revoked keys and unexpired revoked tokens, cached like the JWKS.
#[utoipa::path(get, path = "/v1/revocations", tag = "public", operation_id = "revocations",
    summary = "Revoked keys, and revoked tokens until they expire",
    params(errors::IfNoneMatch),
    responses((status = 200, description = "The revocation list", body = wire::documents::RevocationList, headers(
        ("Cache-Control" = String, description = "`public, max-age=N`, N = `jwks.max_age_seconds`"),
        ("ETag" = String, description = "A strong entity tag of the document"))),
        errors::NotModified, errors::Public))]
pub async fn revocations(State(svc): Svc, headers: HeaderMap) -> Response {
    published(&svc.revocations(), svc.jwks_max_age(), &headers)
}

/// `GET /v1/issuers/{name}/spiffe-bundle`: a `jwt-svid` issuer's keys as a SPIFFE
/// bundle, cached like the JWKS it mirrors.
#[utoipa::path(get, path = "/v1/issuers/{name}/spiffe-bundle", tag = "public", operation_id = "spiffeBundle",
    summary = "A `jwt-svid` issuer's keys as a SPIFFE trust bundle",
    params(("name" = String, Path, description = "Issuer name"), errors::IfNoneMatch),
    responses((status = 200, description = "The SPIFFE bundle", body = wire::SpiffeBundle, headers(
        ("Cache-Control" = String, description = "`public, max-age=N`, N = `jwks.max_age_seconds`"),
        ("ETag" = String, description = "A strong entity tag of the document"))),
        errors::NotModified, errors::ByIssuer))]
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
#[utoipa::path(post, path = "/v1/verify", tag = "verify", operation_id = "verify",
    summary = "Verify a token: signature, times, issuer, audience, revocations, replays",
    description = "Anyone may verify; `single_use` needs a caller named in `verify.single_use_callers`. A rejected token is a 422 whose code says why.",
    request_body = wire::VerifyRequest,
    responses((status = 200, description = "The token is valid", body = wire::Verified), errors::Verify),
    security((), ("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn verify(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::VerifyRequest>,
) -> Result<Json<wire::Verified>, ApiError> {
    let verified = timed(Operation::Verify, svc.verify(&caller, request.into())).await?;
    Ok(Json(verified.into()))
}

/// `POST /v1/keys` (admins).
#[utoipa::path(post, path = "/v1/keys", tag = "admin", operation_id = "generateKey",
    summary = "Generate and attest an issuer's first key",
    request_body = wire::GenerateRequest,
    responses((status = 200, description = "The new key, active", body = wire::KeyView), errors::AdminWithBody),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn admin_generate(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::GenerateRequest>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc.admin_generate(&caller, &request.issuer).await?;
    Ok(Json(key.into()))
}

/// `POST /v1/issuers/{name}/rotate` (admins).
#[utoipa::path(post, path = "/v1/issuers/{name}/rotate", tag = "admin", operation_id = "rotateIssuer",
    summary = "Generate an issuer's next key as pending",
    params(("name" = String, Path, description = "The issuer's name in the config")),
    responses((status = 200, description = "The new key, pending", body = wire::KeyView), errors::Admin),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn admin_rotate(
    State(svc): Svc,
    caller: Principal,
    ApiPath(issuer): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    let key = svc.admin_rotate(&caller, &issuer).await?;
    Ok(Json(key.into()))
}

/// `POST /v1/keys/{kid}/retire` (admins).
#[utoipa::path(post, path = "/v1/keys/{kid}/retire", tag = "admin", operation_id = "retireKey",
    summary = "Stop a key signing",
    params(("kid" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key, retired", body = wire::KeyView), errors::Admin),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
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
#[utoipa::path(post, path = "/v1/keys/{kid}/revoke", tag = "admin", operation_id = "revokeKey",
    summary = "Revoke a key: out of the JWKS at once",
    params(("kid" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key, revoked", body = wire::KeyView), errors::Admin),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
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
#[utoipa::path(post, path = "/v1/revocations", tag = "admin", operation_id = "revokeToken",
    summary = "Revoke a token until its exp",
    request_body = wire::RevokeTokenRequest,
    responses((status = 200, description = "The revocation", body = wire::RevokedToken), errors::RevokeToken),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn admin_revoke_token(
    State(svc): Svc,
    caller: Principal,
    ApiJson(request): ApiJson<wire::RevokeTokenRequest>,
) -> Result<Json<wire::RevokedToken>, ApiError> {
    let revoked = svc.admin_revoke_token(&caller, request.into()).await?;
    Ok(Json(revoked.into()))
}

/// `GET /v1/keys`.
#[utoipa::path(get, path = "/v1/keys", tag = "public", operation_id = "listKeys",
    summary = "Every key, whatever its state, with what the token reports about it",
    responses((status = 200, description = "The keys", body = wire::KeyList), errors::Public))]
pub async fn keys(State(svc): Svc) -> Json<wire::KeyList> {
    Json(svc.keys().into())
}

/// `GET /v1/keys/{kid}`.
#[utoipa::path(get, path = "/v1/keys/{kid}", tag = "public", operation_id = "getKey",
    summary = "One key, whatever its state, with its attestation certificate",
    params(("kid" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key", body = wire::KeyView), errors::ByKid))]
pub async fn key(
    State(svc): Svc,
    ApiPath(kid): ApiPath<String>,
) -> Result<Json<wire::KeyView>, ApiError> {
    Ok(Json(svc.key(&kid)?.into()))
}

/// `GET /v1/keys/{kid}/attestation`: the key's certificate, then the CA chain, as PEM.
#[utoipa::path(get, path = "/v1/keys/{kid}/attestation", tag = "public", operation_id = "getAttestation",
    summary = "A key's attestation chain",
    params(("kid" = String, Path, description = "Key id")),
    responses((status = 200, description = "The key's certificate, then the CA chain, as PEM",
        body = String, content_type = "application/pem-certificate-chain"), errors::ByKid))]
pub async fn attestation(
    State(svc): Svc,
    ApiPath(kid): ApiPath<String>,
) -> Result<Response, ApiError> {
    let pem = svc.attestation_pem(&kid)?;
    let content_type = HeaderValue::from_static("application/pem-certificate-chain");
    Ok(([(header::CONTENT_TYPE, content_type)], pem).into_response())
}

/// `GET /healthz`: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz",
    summary = "Liveness: the process serves requests",
    responses((status = 200, description = "`{\"status\":\"ok\"}`", body = wire::Health), errors::Public))]
pub async fn healthz() -> Json<wire::Health> {
    Json(wire::Health {
        status: wire::HealthStatus::Ok,
        warnings: Vec::new(),
    })
}

/// `GET /readyz`: the daemon can sign now; with what it found that does not stop it.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz",
    summary = "Readiness: the daemon can sign now",
    responses((status = 200, description = "`{\"status\":\"ready\"}`, with `warnings` when something does not stop signing", body = wire::Health),
        errors::Ready))]
pub async fn readyz(State(svc): Svc) -> Result<Json<wire::Health>, ApiError> {
    svc.ready().await?;
    Ok(Json(wire::Health {
        status: wire::HealthStatus::Ready,
        warnings: svc.readiness_warnings(),
    }))
}

/// The OpenAPI document's bytes, which [`super::router`] attaches to the public routes.
#[derive(Clone, Copy)]
pub struct OpenApiJson(pub &'static [u8]);

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "public", operation_id = "openapi",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document", body = serde_json::Value), errors::Public))]
pub async fn openapi(axum::Extension(OpenApiJson(json)): axum::Extension<OpenApiJson>) -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], json).into_response()
}

/// Any unknown path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
