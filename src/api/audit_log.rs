//! The audit log as a C2SP transparency log: `GET /v1/audit/log/checkpoint` (public)
//! and `GET /v1/audit/log/tile/...` (auditors), under one prefix so a tlog-tiles client
//! takes `/v1/audit/log/` as the log's URL.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::openapi::errors;
use super::path::ApiPath;
use crate::identity::Principal;
use crate::service::Service;

/// The media type of a signed note (C2SP tlog-checkpoint).
const NOTE: &str = "text/plain; charset=utf-8";
/// The media type of tiles and entry bundles.
const TILE: &str = "application/octet-stream";

/// `GET /v1/audit/log/checkpoint`: the latest signed checkpoint.
#[utoipa::path(get, path = "/v1/audit/log/checkpoint", tag = "audit", operation_id = "auditCheckpoint",
    summary = "The audit log's latest signed checkpoint (C2SP tlog-checkpoint, signed note)",
    description = "Public: origin, tree size and root hash, signed by the audit key (Ed25519). The verifier key is printed by `signetd audit verifier-key`; the key's attestation chain is at `/v1/keys/{kid}/attestation`. Not cached: a witness or monitor polls it.",
    responses((status = 200, description = "The signed note", content_type = "text/plain; charset=utf-8", body = String,
        headers(("Cache-Control" = String, description = "`no-store`"))),
        errors::AuditCheckpoint))]
pub async fn checkpoint(State(service): State<Arc<Service>>) -> Result<Response, ApiError> {
    Ok(text(service.audit_checkpoint()?))
}

/// `GET /v1/audit/log/verifier-key`: the key the latest checkpoint opens with.
#[utoipa::path(get, path = "/v1/audit/log/verifier-key", tag = "audit", operation_id = "auditVerifierKey",
    summary = "The note verifier key of the audit key that signed the latest checkpoint",
    description = "Public: `name+keyid+base64key` (C2SP signed-note, Ed25519), the form every note verifier and witness takes. Trust it only after checking the audit key's attestation chain (`signetd audit verifier-key --root` does both).",
    responses((status = 200, description = "The verifier key, one line", content_type = "text/plain; charset=utf-8", body = String,
        headers(("Cache-Control" = String, description = "`no-store`"))),
        errors::AuditCheckpoint))]
pub async fn verifier_key(State(service): State<Arc<Service>>) -> Result<Response, ApiError> {
    let key = service.audit_verifier_key()?;
    Ok(text(key + "\n"))
}

/// A plain-text answer that is not to be cached.
fn text(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(NOTE)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// `GET /v1/audit/log/tile/{path}`: a hash tile or an entry bundle (auditors).
#[utoipa::path(get, path = "/v1/audit/log/tile/{*path}", tag = "audit", operation_id = "auditTile",
    summary = "A tile of the audit log's Merkle tree, or an entry bundle (C2SP tlog-tiles)",
    description = "For the callers `[audit] auditors` names: records name callers, issuers and token hashes. `L/N[.p/W]` is a hash tile (height 8), `entries/N[.p/W]` an entry bundle (each record's exact line after a big-endian u16 length); only tiles within the latest checkpoint's tree are served. Full tiles never change.",
    params(("path" = String, Path, description = "The tile's path after `tile/`, as C2SP tlog-tiles spells it: `0/x001/234`, `entries/000.p/17`")),
    responses((status = 200, description = "The tile's bytes", content_type = "application/octet-stream", body = Vec<u8>,
        headers(("Cache-Control" = String, description = "`private, max-age=31536000, immutable` for a full tile; `no-store` for a partial one"))),
        errors::AuditTile),
    security(("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn tile(
    State(service): State<Arc<Service>>,
    caller: Principal,
    ApiPath(path): ApiPath<String>,
) -> Result<Response, ApiError> {
    let bytes = service.audit_tile(&caller, &path).await?;
    // A full tile is final; a partial one grows into the next width.
    let cache = if path.contains(".p/") {
        "no-store"
    } else {
        "private, max-age=31536000, immutable"
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(TILE)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response())
}
