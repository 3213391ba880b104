//! The Unix socket: binding it safely, and callers identified by the kernel
//! (`SO_PEERCRED`).

use std::future::Ready;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::Acceptor;
use crate::identity::{PeerCredentials, Principal};

impl Acceptor for UnixListener {
    type Io = UnixStream;
    type Pending = Ready<Option<(UnixStream, Principal)>>;

    async fn accept(&self) -> io::Result<Self::Pending> {
        let (stream, _) = UnixListener::accept(self).await?;
        // Without the kernel's word on who connected, refuse the connection.
        let established = match stream.peer_cred() {
            Ok(cred) => {
                let peer = PeerCredentials {
                    uid: cred.uid(),
                    gid: cred.gid(),
                    pid: cred.pid(),
                };
                Some((stream, Principal::Local(peer)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; closing connection");
                None
            }
        };
        Ok(std::future::ready(established))
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
