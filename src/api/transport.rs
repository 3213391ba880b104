//! Listeners and the accept loop shared by both transports.
//!
//! Each transport turns an accepted connection into a stream and a [`Caller`]; the loop
//! caps concurrent connections with a semaphore, attaches the caller to every request
//! on that connection, and on shutdown stops accepting and lets each connection finish
//! its in-flight request.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::policy::{Caller, PeerCredentials};

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that accepts connections and says who is on the other end.
pub(crate) trait Acceptor: Send + 'static {
    /// The connection stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection. `Ok(None)` drops a connection whose identity
    /// could not be established.
    fn accept(&self) -> impl Future<Output = io::Result<Option<(Self::Io, Caller)>>> + Send;
}

impl Acceptor for UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<Option<(Self::Io, Caller)>> {
        let (stream, _) = UnixListener::accept(self).await?;
        // Without the kernel's word on who connected, refuse the connection.
        match stream.peer_cred() {
            Ok(cred) => {
                let peer = PeerCredentials {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                };
                Ok(Some((stream, Caller::Local(peer))))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; closing connection");
                Ok(None)
            }
        }
    }
}

impl Acceptor for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<Option<(Self::Io, Caller)>> {
        let (stream, addr) = TcpListener::accept(self).await?;
        Ok(Some((stream, Caller::Anonymous(Some(addr)))))
    }
}

/// Binds the Unix socket at `path` with permission bits `mode`.
///
/// A socket file left by a daemon that died is replaced; a live one (something accepts
/// connections on it) or any other kind of file is an error, never silently removed.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another process is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Accepts connections until `shutdown`, serving each with `router`.
pub(crate) async fn accept_loop<A: Acceptor>(
    listener: A,
    router: Router,
    max_connections: usize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (io, caller) = match accepted {
            Ok(Some(connection)) => connection,
            Ok(None) => continue,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning, then try again.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(caller.clone());
                    request
                });
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
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
