//! The Unix socket: binding it safely, and callers identified by the kernel
//! (`SO_PEERCRED`).

use std::future::Ready;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

use super::Acceptor;
use crate::identity::{PeerCredentials, Principal};
use crate::telemetry::Transport;

impl Acceptor for UnixListener {
    const TRANSPORT: Transport = Transport::Unix;
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

/// What is wrong with the socket's directory `dir`, owned by `owner` with mode `mode`, for
/// a daemon whose effective uid is `euid`; `None` if nothing is.
///
/// Whoever may write the directory may rename the live socket aside and bind their own in
/// its place, and callers would hand their requests to it. So the directory must be
/// signetd's or root's and writable by no one else; the one exception is a sticky
/// directory owned by root (as `/tmp`), where no user can rename another's file.
pub fn directory_problem(dir: &Path, owner: u32, mode: u32, euid: u32) -> Option<String> {
    let shown = dir.display();
    if owner != euid && owner != 0 {
        return Some(format!(
            "the socket's directory {shown} is owned by uid {owner}, not by signetd's user \
             (uid {euid}) or root: that user could replace the socket; chown {euid} {shown}"
        ));
    }
    let sticky_root = mode & 0o1000 != 0 && owner == 0;
    if mode & 0o022 != 0 && !sticky_root {
        return Some(format!(
            "the socket's directory {shown} has mode {:o}: group or others can write it, so \
             they could replace the socket; chmod go-w {shown} (or use a directory only \
             signetd can write, such as /run/signetd)",
            mode & 0o7777
        ));
    }
    None
}

/// Checks that the directory of the socket `path` exists and passes
/// `directory_problem`; returns it.
pub fn check_socket_directory(path: &Path) -> io::Result<&Path> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = match std::fs::metadata(parent) {
        Ok(dir) if dir.is_dir() => dir,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the socket's directory {} does not exist; create it (for example mkdir -m 0750 {})",
                    parent.display(),
                    parent.display()
                ),
            ));
        }
    };
    let euid = rustix::process::geteuid().as_raw();
    match directory_problem(parent, dir.uid(), dir.mode(), euid) {
        Some(problem) => Err(io::Error::new(io::ErrorKind::PermissionDenied, problem)),
        None => Ok(parent),
    }
}

/// Binds the Unix socket at `path` with permission bits `mode`.
///
/// The socket's directory must pass `directory_problem`.
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
    let parent = check_socket_directory(path)?;
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

#[cfg(test)]
mod tests {
    use super::directory_problem;
    use std::path::Path;

    #[test]
    fn only_signetd_or_root_may_write_the_sockets_directory() {
        let d = Path::new("/run/signetd");
        assert_eq!(directory_problem(d, 999, 0o40750, 999), None);
        assert_eq!(directory_problem(d, 0, 0o40755, 999), None);
        // Sticky and root's, as /tmp: no one renames another's socket.
        assert_eq!(directory_problem(d, 0, 0o41777, 999), None);
        let open = directory_problem(d, 0, 0o40777, 999).unwrap();
        assert!(
            open.contains("mode 777") && open.contains("chmod go-w /run/signetd"),
            "{open}"
        );
        assert!(
            directory_problem(d, 999, 0o40770, 999).is_some(),
            "group-writable"
        );
        assert!(
            directory_problem(d, 999, 0o41777, 999).is_some(),
            "sticky but not root's"
        );
        let other = directory_problem(d, 1000, 0o40700, 999).unwrap();
        assert!(
            other.contains("uid 1000") && other.contains("chown 999"),
            "{other}"
        );
    }
}
