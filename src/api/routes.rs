//! The route table: every route of the API, once.
//!
//! Each route is one `routes!(handler)` line in its group; the path and method come from
//! the handler's `#[utoipa::path]` attribute. [`super::router`] serves these groups, each
//! behind its layers, and [`super::openapi::document`] describes the same groups, so a
//! route cannot be served without being documented or documented without being served.
//! (`tests/openapi.rs` checks that nothing in `src/api` routes around this table.)

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::handlers;
use crate::service::Service;

/// A group of routes with their OpenAPI operations.
pub type Routes = OpenApiRouter<Arc<Service>>;

/// Minting and raw signing: identified callers that some issuer names.
pub fn signing() -> Routes {
    OpenApiRouter::new()
        .routes(routes!(handlers::mint))
        .routes(routes!(handlers::sign))
}

/// The lifecycle API: admins only.
pub fn admin() -> Routes {
    OpenApiRouter::new()
        .routes(routes!(handlers::admin_generate))
        .routes(routes!(handlers::admin_rotate))
        .routes(routes!(handlers::admin_retire))
        .routes(routes!(handlers::admin_revoke))
        .routes(routes!(handlers::admin_revoke_token))
}

/// Verification: anyone (single use: the callers the config names).
pub fn verify() -> Routes {
    OpenApiRouter::new().routes(routes!(handlers::verify))
}

/// Public documents and probes: anyone, on every transport.
pub fn public() -> Routes {
    OpenApiRouter::new()
        .routes(routes!(handlers::revocations))
        .routes(routes!(handlers::jwks))
        .routes(routes!(handlers::keys))
        .routes(routes!(handlers::key))
        .routes(routes!(handlers::attestation))
        .routes(routes!(handlers::spiffe_bundle))
        .routes(routes!(handlers::healthz))
        .routes(routes!(handlers::readyz))
        .routes(routes!(handlers::openapi))
        .routes(routes!(super::metrics::metrics))
        .routes(routes!(super::audit_log::checkpoint))
        .routes(routes!(super::audit_log::verifier_key))
        .routes(routes!(super::audit_log::tile))
}

/// The `[metrics] listen` listener's one route (not part of the API document).
pub fn metrics_listener() -> OpenApiRouter {
    OpenApiRouter::new().routes(routes!(super::metrics::exposition))
}

/// Every group, without the layers [`super::router`] puts in front of them: what the
/// OpenAPI document describes.
pub fn all() -> Routes {
    signing().merge(admin()).merge(verify()).merge(public())
}
