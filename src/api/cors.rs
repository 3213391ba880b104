//! CORS on the public documents only: the JWKS, the keys, the revocation list and SPIFFE
//! bundles, for verifiers that run in a browser. Origins come from `[cors]`; with none
//! (the default) no response carries a CORS header.
//!
//! The router's middleware sees every request, so this module chooses by method and
//! path: only `GET`, `HEAD` and the preflight `OPTIONS` of a public path pass through
//! tower-http's CORS layer. Signing, admin and verify requests never do, so no browser
//! page can read their answers, even on a path (`/v1/keys`, `/v1/revocations`) that
//! also has a public `GET`. Credentials are never allowed: the public documents need
//! none, and the signing routes' callers are identified by the connection, not cookies.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::service::Service;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Runs `request`, adding CORS headers when it is for a public document from a
/// configured origin.
pub async fn apply(service: &Service, request: Request, next: Next) -> Response {
    // Read per request, from whatever config the service holds now.
    let layer = {
        let origins = &service.config().cors.allowed_origins;
        (!origins.is_empty() && is_public(request.method(), request.uri().path()))
            .then(|| layer(origins))
    };
    match layer {
        Some(layer) => match layer.layer(next).oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => next.run(request).await,
    }
}

fn layer(origins: &[String]) -> CorsLayer {
    // Validated as origins at load, so every one is a header value.
    let origins = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok());
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers([header::IF_NONE_MATCH])
        .expose_headers([header::ETAG])
        .allow_credentials(false)
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Whether `method path` reads a public document (or is the preflight for one).
pub fn is_public(method: &Method, path: &str) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let segments: Vec<&str> = path.split('/').collect();
    let named = |s: &str| !s.is_empty();
    match segments.as_slice() {
        ["", ".well-known", "jwks.json"] | ["", "v1", "keys"] | ["", "v1", "revocations"] => true,
        ["", "v1", "keys", kid] => named(kid),
        ["", "v1", "keys", kid, "attestation"] => named(kid),
        ["", "v1", "issuers", name, "spiffe-bundle"] => named(name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_reads() {
        for path in [
            "/.well-known/jwks.json",
            "/v1/keys",
            "/v1/keys/demo-1",
            "/v1/keys/demo-1/attestation",
            "/v1/revocations",
            "/v1/issuers/demo/spiffe-bundle",
        ] {
            for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
                assert!(is_public(&method, path), "{method} {path}");
            }
            assert!(!is_public(&Method::POST, path), "POST {path}");
            assert!(!is_public(&Method::DELETE, path), "DELETE {path}");
        }
        for path in [
            "/v1/tokens",
            "/v1/sign",
            "/v1/verify",
            "/v1/issuers/demo/rotate",
            "/v1/keys/demo-1/retire",
            "/v1/keys/demo-1/revoke",
            "/v1/keys//attestation",
            "/v1/keys/",
            "/healthz",
            "/readyz",
            "/v1/issuers//spiffe-bundle",
            "/.well-known/jwks.json/x",
        ] {
            assert!(!is_public(&Method::GET, path), "{path}");
            assert!(!is_public(&Method::OPTIONS, path), "{path}");
        }
    }
}
