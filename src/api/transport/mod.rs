//! Listeners and the accept loop every transport shares.
//!
//! Each transport (`unix`, `tcp`, `tls`) turns an accepted connection into a stream and a
//! [`Principal`]. The loop caps concurrent connections with a semaphore and only
//! accepts; establishing a connection (reading peer credentials, a TLS handshake) runs
//! in the connection's own task, so a slow peer never holds up the loop. Once the
//! principal is known, the task takes one of its slots ([`ConnectionLimits`]) or refuses
//! the connection. Every request on a connection carries its principal. On shutdown the
//! loop stops accepting and each connection finishes its in-flight request.

mod tcp;
mod tls;
mod unix;

pub use tls::{TlsListener, TlsReload, TlsReloader};
pub use unix::{SocketFile, bind_unix, check_socket_directory};

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::limits::ConnectionLimits;
use crate::identity::Principal;
use crate::telemetry::Transport;

/// Something that accepts connections and says who is on the other end.
pub(crate) trait Acceptor: Send + 'static {
    /// Which transport this is, for the metrics' `transport` label.
    const TRANSPORT: Transport;
    /// The connection stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Establishes an accepted connection: resolves to its stream and principal, or to
    /// `None` to drop a connection whose identity cannot be established.
    type Pending: Future<Output = Option<(Self::Io, Principal)>> + Send + 'static;
    /// Waits for the next connection. What [`Acceptor::Pending`] does runs in the
    /// connection's task, not in the accept loop.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Pending>> + Send;
}

/// Accepts connections until `shutdown`, serving each with `router`.
pub(crate) async fn accept_loop<A: Acceptor>(
    listener: A,
    router: Router,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.per_listener));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let pending = match accepted {
            Ok(pending) => pending,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning, then try again.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (router, shutdown, limits) = (router.clone(), shutdown.clone(), limits.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let established = tokio::select! {
                established = pending => established,
                () = shutdown.cancelled() => return,
            };
            let Some((io, principal)) = established else {
                return;
            };
            let Some(_principal_slot) = limits.admit(&principal) else {
                tracing::debug!(%principal, "connection refused: the caller holds all its slots");
                limits.refuse(io).await;
                return;
            };
            let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
                request.extensions_mut().insert(principal.clone());
                request.extensions_mut().insert(A::TRANSPORT);
                request
            });
            let connection = limits
                .http1()
                .serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
