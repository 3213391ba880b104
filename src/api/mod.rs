//! The HTTP room: one axum router, served on the Unix socket, on TLS and on plain TCP.
//!
//! [`router`] serves the route table of [`routes`] (each route's path and method come
//! from its handler's `#[utoipa::path]`), and [`openapi`] describes the same table as an
//! OpenAPI 3.1 document; [`serve`] runs the accept loops of
//! [`transport`] until the shutdown future completes, then drains connections.
//!
//! - [`wire`]: every request, response and error body, with conversions to and from the
//!   service's domain types. Nothing else here or in the service derives serde for HTTP.
//! - [`error`]: [`error::ApiError`], the domain error plus the refusals only HTTP knows
//!   (path, method, media type, size, body parsing), and the one mapping to a status and
//!   a `{"error":{"code","message"}}` body.
//! - [`body`] and [`path`]: extractors that fail with an [`error::ApiError`], so no axum
//!   rejection reaches a client as text, and every refusal on an audited route is
//!   recorded.
//! - [`front`]: the one layer every request goes through, outermost: its
//!   [`request_id`] (the `X-Request-Id` of every response, and the `request` span every
//!   log line of a request is written in), its count in [`metrics`], and [`cors`]
//!   headers for the configured origins on the public documents only.
//! - [`gate`]: the one route layer in front of each group of routes: the refusal audit,
//!   the request's deadline, the policy's first check, and the declared body size.
//! - [`limits`]: connection slots per principal, and the HTTP/1 server's head-size and
//!   idle limits.

pub mod audit_log;
pub mod body;
pub mod cors;
pub mod error;
pub mod front;
pub mod gate;
pub mod handlers;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod request_id;
pub mod routes;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use transport::{
    SocketFile, TlsListener, TlsReload, TlsReloader, bind_unix, check_socket_directory,
};

use crate::service::Service;
use crate::service::settings::TlsReloadTrigger;

/// How long in-flight requests may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The listeners the daemon serves on.
pub struct Listeners {
    /// The Unix socket: every endpoint, callers identified by the kernel.
    pub unix: UnixListener,
    /// The plain HTTP listener (on loopback): its peers are anonymous, so it serves
    /// public endpoints only.
    pub http: Option<TcpListener>,
    /// The HTTPS listener: callers identified by their client certificates.
    pub tls: Option<TlsListener>,
    /// The `[metrics] listen` listener: `GET /metrics` and nothing else, to anyone.
    pub metrics: Option<TcpListener>,
    /// Most concurrent connections per listener.
    pub max_connections: usize,
}

/// The router, the same on every transport: the groups of [`routes`], each behind its
/// [`gate`], and every route behind [`front`].
pub fn router(service: Arc<Service>) -> Router {
    let signing = routes::signing().route_layer(middleware::from_fn_with_state(
        gate::Gate::signing(service.clone()),
        gate::guard,
    ));
    let admin = routes::admin().route_layer(middleware::from_fn_with_state(
        gate::Gate::admin(service.clone()),
        gate::guard,
    ));
    let verify = routes::verify().route_layer(middleware::from_fn_with_state(
        gate::Gate::verify(service.clone()),
        gate::guard,
    ));
    let (router, _) = signing
        .merge(admin)
        .merge(verify)
        .merge(routes::public().layer(axum::Extension(handlers::OpenApiJson(openapi::json()))))
        .split_for_parts();
    router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES))
        // Outermost: every response carries the request id, refusals and fallbacks
        // included. It chooses CORS by method and path itself, so it can answer a
        // preflight `OPTIONS`, which no route has.
        .layer(middleware::from_fn_with_state(
            service.clone(),
            front::front,
        ))
        .with_state(service)
}

/// The router of the `[metrics] listen` listener: `/metrics` and nothing else.
fn metrics_only() -> Router {
    let (router, _) = routes::metrics_listener().split_for_parts();
    router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(metrics::count_requests))
}

/// Serves `service` on `listeners` until `shutdown` completes, then stops accepting and
/// waits up to ten seconds for in-flight requests.
pub async fn serve(
    listeners: Listeners,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()>,
) {
    let caps = limits::ConnectionLimits::new(listeners.max_connections, &service.config().limits);
    let listening = 1
        + usize::from(listeners.http.is_some())
        + usize::from(listeners.tls.is_some())
        + usize::from(listeners.metrics.is_some());
    limits::raise_open_files_limit(listening * listeners.max_connections);
    let router = router(service.clone());
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(transport::accept_loop(
        listeners.unix,
        router.clone(),
        caps.clone(),
        cancel.clone(),
        tracker.clone(),
    ));
    if let Some(tls) = listeners.tls {
        let recorder = service.clone();
        tracker.spawn(tls.reloader().watch(cancel.clone(), move |outcome| {
            let service = recorder.clone();
            Box::pin(async move {
                service
                    .record_tls_reload(TlsReloadTrigger::FilesChanged, &outcome)
                    .await;
            })
        }));
        tracker.spawn(transport::accept_loop(
            tls,
            router.clone(),
            caps.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(metrics) = listeners.metrics {
        tracker.spawn(transport::accept_loop(
            metrics,
            metrics_only(),
            caps.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    if let Some(http) = listeners.http {
        tracker.spawn(transport::accept_loop(
            http,
            router,
            caps,
            cancel.clone(),
            tracker.clone(),
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
    }
}
