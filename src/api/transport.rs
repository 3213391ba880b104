//! Listeners and the accept loop shared by both transports.
//!
//! Each transport turns an accepted connection into a stream and a [`Principal`]; the loop
//! caps concurrent connections with a semaphore, attaches the caller to every request
//! on that connection, and on shutdown stops accepting and lets each connection finish
//! its in-flight request.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

use crate::identity::{PeerCredentials, Principal};

/// A client must send its request headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that accepts connections and says who is on the other end.
pub(crate) trait Acceptor: Send + 'static {
    /// The connection stream.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection. `Ok(None)` drops a connection whose identity
    /// could not be established.
    fn accept(&self) -> impl Future<Output = io::Result<Option<(Self::Io, Principal)>>> + Send;
}

impl Acceptor for UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<Option<(Self::Io, Principal)>> {
        let (stream, _) = UnixListener::accept(self).await?;
        // Without the kernel's word on who connected, refuse the connection.
        match stream.peer_cred() {
            Ok(cred) => {
                let peer = PeerCredentials {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                };
                Ok(Some((stream, Principal::Local(peer))))
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

    async fn accept(&self) -> io::Result<Option<(Self::Io, Principal)>> {
        let (stream, addr) = TcpListener::accept(self).await?;
        Ok(Some((stream, Principal::Anonymous(Some(addr)))))
    }
}

/// The socket file a daemon created, identified by device and inode so that shutdown
/// removes this file and not one a successor daemon bound at the same path.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Removes the socket file if it is still the one this daemon created.
    pub fn remove(self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove socket file");
                }
            }
            _ => {
                tracing::info!(path = %self.path.display(), "socket file was replaced; leaving it")
            }
        }
    }
}

/// Binds the Unix socket at `path` with permission bits `mode`.
///
/// The socket is bound inside a private (0700) staging directory beside `path`, given its
/// mode, and only then renamed into place: no one can connect while it still has the
/// umask's permissions. A socket file left by a daemon that died is replaced; a live one
/// (something accepts connections on it) or any other kind of file is an error, never
/// silently removed.
pub fn bind_unix(path: &Path, mode: u32) -> io::Result<(UnixListener, SocketFile)> {
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
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the socket's directory {} does not exist; create it (for example mkdir -m 0750 {})",
                parent.display(),
                parent.display()
            ),
        ));
    }
    let name = path
        .file_name()
        .map_or("socket".into(), |n| n.to_string_lossy());
    let staging = parent.join(format!(
        ".{name}.{}.{}.bind",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display())))?;
    let staged = staging.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        Ok((listener, meta))
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&staging);
    let (listener, meta) = bound.map_err(|e: io::Error| {
        io::Error::new(e.kind(), format!("cannot bind {}: {e}", path.display()))
    })?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((listener, file))
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
