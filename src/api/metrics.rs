//! `GET /metrics`, and the router's count of requests by route, code and transport.
//! (The handlers time the operations behind the signing and verify routes with
//! [`telemetry::timed`].)
//!
//! The families themselves are [`crate::telemetry`]'s. Who may read them is the
//! policy's decision ([`Action::ReadMetrics`]); the `[metrics] listen` listener serves
//! only [`exposition`], to anyone who reaches it.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::error::Error;
use crate::identity::Principal;
use crate::policy::Action;
use crate::service::Service;
use crate::telemetry::{self, Transport};

/// The Prometheus text format's media type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics` on the daemon's listeners: for the callers the policy allows.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    summary = "Prometheus metrics, text exposition format 0.0.4",
    description = "Any local caller on the Unix socket; over TLS the certificates `[metrics] callers` names; anonymous callers only with `[metrics] allow_anonymous`. docs/metrics.md lists the families.",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        super::openapi::errors::Metrics),
    security((), ("peerCredentials" = []), ("mutualTLS" = [])))]
pub async fn metrics(
    State(service): State<Arc<Service>>,
    caller: Principal,
) -> Result<Response, ApiError> {
    service.policy().decide(&caller, Action::ReadMetrics)?;
    exposition().await
}

/// `GET /metrics` on the `[metrics] listen` listener, to anyone who reaches it. Not in
/// the API document: that listener serves nothing else.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metricsListener",
    responses((status = 200, description = "The metrics", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn exposition() -> Result<Response, ApiError> {
    let text = telemetry::render()
        .ok_or_else(|| Error::Internal("no metrics recorder is installed".to_string()))?;
    let media_type = HeaderValue::from_static(TEXT_FORMAT);
    Ok(([(header::CONTENT_TYPE, media_type)], text).into_response())
}

/// Counts every answered request by its route template (never the raw path: a caller
/// chooses that), status code and transport. Outermost on the `[metrics] listen`
/// router; the main router counts in [`super::front`].
pub async fn count_requests(request: Request, next: Next) -> Response {
    let labels = RequestLabels::of(&request);
    let response = next.run(request).await;
    labels.count(&response);
    response
}

/// What a request is counted under, read before it is handled.
pub struct RequestLabels {
    /// `None`: no route matched.
    route: Option<MatchedPath>,
    transport: Transport,
}

impl RequestLabels {
    /// The route template the router matched, and the transport the request came by.
    pub fn of(request: &Request) -> RequestLabels {
        let route = request.extensions().get::<MatchedPath>().cloned();
        // Attached by the accept loop; only a request made some other way lacks it.
        let transport = request
            .extensions()
            .get::<Transport>()
            .copied()
            .unwrap_or(Transport::Tcp);
        RequestLabels { route, transport }
    }

    /// Counts the request with the status it was answered with.
    pub fn count(&self, response: &Response) {
        let route = self
            .route
            .as_ref()
            .map_or("(unmatched)", MatchedPath::as_str);
        telemetry::http_request(route, response.status().as_u16(), self.transport);
    }
}
