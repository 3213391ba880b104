//! Whose daemon is on the other end of a Unix socket, checked before a byte is sent.
//!
//! A socket path is only a name: whoever can write its directory can rename the daemon's
//! socket aside and bind their own, and a client would hand them its request and print
//! their token. So after connecting the client asks the kernel who listens
//! (`SO_PEERCRED`: the credentials of the process that created the listening socket,
//! which no one can forge) and goes on only if that is the expected user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tokio::net::UnixStream;

/// Which users may serve a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOwner {
    /// The default: root, the user running the client, or the owner of the socket's
    /// directory (the daemon's runtime directory, such as `/run/signetd` made by
    /// systemd's `RuntimeDirectory=` for `User=signetd`). Any of them could replace the
    /// socket anyway; a socket bound by anyone else is refused.
    Default,
    /// Exactly this uid (`--socket-owner`, `SIGNETD_SOCKET_OWNER`).
    Uid(u32),
}

impl SocketOwner {
    /// Parses `--socket-owner`: a uid, or a user name looked up in `/etc/passwd` (users
    /// only a directory service knows must be given by uid).
    pub fn parse(text: &str) -> Result<SocketOwner, String> {
        if let Ok(uid) = text.parse() {
            return Ok(SocketOwner::Uid(uid));
        }
        let passwd = std::fs::read_to_string("/etc/passwd")
            .map_err(|e| format!("--socket-owner {text}: cannot read /etc/passwd: {e}"))?;
        uid_in_passwd(&passwd, text)
            .map(SocketOwner::Uid)
            .ok_or_else(|| {
                format!("--socket-owner {text}: no such user in /etc/passwd; give the uid instead")
            })
    }
}

fn uid_in_passwd(passwd: &str, name: &str) -> Option<u32> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// What is wrong with `server_uid` serving `socket` for a client running as `my_uid`;
/// `dir_owner` is the owner of the socket's directory, if it could be read.
pub fn owner_problem(
    socket: &Path,
    server_uid: u32,
    expected: SocketOwner,
    my_uid: u32,
    dir_owner: Option<u32>,
) -> Option<String> {
    let (accepted, wanted) = match expected {
        SocketOwner::Uid(uid) => (server_uid == uid, format!("uid {uid} (--socket-owner)")),
        SocketOwner::Default => (
            server_uid == 0 || server_uid == my_uid || Some(server_uid) == dir_owner,
            match dir_owner {
                Some(owner) => {
                    format!("root, you (uid {my_uid}) or the directory's owner (uid {owner})")
                }
                None => format!("root or you (uid {my_uid})"),
            },
        ),
    };
    (!accepted).then(|| {
        format!(
            "refusing {}: its listener belongs to uid {server_uid}, not the expected owner \
             ({wanted}); another user may have replaced the socket. Nothing was sent. If \
             signetd really runs as uid {server_uid}, pass --socket-owner {server_uid}",
            socket.display()
        )
    })
}

/// Checks who listens on the other end of `stream`, connected to `socket`.
pub fn check(stream: &UnixStream, socket: &Path, expected: SocketOwner) -> Result<(), String> {
    let server_uid = stream
        .peer_cred()
        .map_err(|e| format!("cannot tell who serves {}: {e}", socket.display()))?
        .uid();
    let dir = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // The literal parent, not the target of a symlink: a link planted by another user
    // must not make their own directory the trusted one.
    let dir_owner = std::fs::metadata(dir).ok().map(|m| m.uid());
    let my_uid = rustix::process::geteuid().as_raw();
    match owner_problem(socket, server_uid, expected, my_uid, dir_owner) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_must_be_root_me_the_directorys_owner_or_the_named_uid() {
        let s = Path::new("/run/signetd/signetd.sock");
        let default = |server, dir| owner_problem(s, server, SocketOwner::Default, 1000, dir);
        assert_eq!(default(0, Some(0)), None);
        assert_eq!(default(1000, Some(0)), None);
        assert_eq!(
            default(997, Some(997)),
            None,
            "the runtime directory's owner"
        );
        let hijack = default(65534, Some(0)).unwrap();
        assert!(
            hijack.contains("uid 65534") && hijack.contains("Nothing was sent"),
            "{hijack}"
        );
        let named = |server| owner_problem(s, server, SocketOwner::Uid(997), 1000, Some(0));
        assert_eq!(named(997), None);
        assert!(named(0).is_some(), "exactly the named uid");
    }

    #[test]
    fn user_names_are_looked_up_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nsignetd:x:997:997::/var/lib/signetd:/usr/sbin/nologin\n";
        assert_eq!(uid_in_passwd(passwd, "signetd"), Some(997));
        assert_eq!(uid_in_passwd(passwd, "nobody"), None);
        assert_eq!(SocketOwner::parse("42"), Ok(SocketOwner::Uid(42)));
    }
}
