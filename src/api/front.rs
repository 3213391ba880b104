//! What every request of the main router goes through, as one layer, outermost: its
//! request id and `request` span ([`super::request_id`]), its count in
//! `signetd_http_requests_total` ([`super::metrics`]), and CORS for the public documents
//! ([`super::cors`]).
//!
//! One layer rather than three for the same reason as [`super::gate`]: each axum
//! `from_fn` layer costs allocations and a boxed future per request.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::metrics::RequestLabels;
use super::{cors, request_id};
use crate::service::Service;

/// Gives the request its id and span, counts it once answered, and adds CORS headers
/// where they belong. Every response carries the id, refusals and fallbacks included.
pub async fn front(
    State(service): State<Arc<Service>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request_id::assign(&mut request);
    let span = request_id::span(id.to_str().unwrap_or_default(), &request);
    let labels = RequestLabels::of(&request);
    let mut response = async move {
        let response = cors::apply(&service, request, next).await;
        labels.count(&response);
        response
    }
    .instrument(span)
    .await;
    response.headers_mut().insert(request_id::HEADER, id);
    response
}
