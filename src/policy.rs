//! Who is calling, and what the issuer's policy lets them do.
//!
//! Identity comes from the transport, never from the request: on the Unix socket the
//! kernel reports the peer's uid, gid and pid (`SO_PEERCRED`). Callers on plain TCP are
//! anonymous and may use only public endpoints until mutual TLS exists.

use std::fmt;
use std::net::SocketAddr;

use crate::config::IssuerConfig;
use crate::error::Error;

/// Peer credentials of a Unix socket connection, as the kernel reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Effective uid of the peer process.
    pub uid: u32,
    /// Effective primary gid of the peer process.
    pub gid: u32,
    /// Pid of the peer process, when the kernel reports it.
    pub pid: Option<i32>,
}

/// The identity behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A process on this host, over the Unix socket.
    Local(PeerCredentials),
    /// A TCP peer with no authenticated identity.
    Anonymous(Option<SocketAddr>),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Local(p) => match p.pid {
                Some(pid) => write!(f, "uid={} gid={} pid={pid}", p.uid, p.gid),
                None => write!(f, "uid={} gid={}", p.uid, p.gid),
            },
            Caller::Anonymous(Some(addr)) => write!(f, "anonymous {addr}"),
            Caller::Anonymous(None) => f.write_str("anonymous"),
        }
    }
}

/// What a caller wants to do with an issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Mint a JWT under the issuer's claims policy.
    Mint,
    /// Sign arbitrary bytes with the issuer's key.
    RawSign,
}

/// Whether any issuer names this local caller. Checked before a request body is read,
/// so processes that may use no issuer cannot tie up the daemon with slow bodies.
pub fn is_named_anywhere<'a>(
    issuers: impl IntoIterator<Item = &'a IssuerConfig>,
    peer: &PeerCredentials,
) -> bool {
    issuers
        .into_iter()
        .any(|i| i.allowed_uids.contains(&peer.uid) || i.allowed_gids.contains(&peer.gid))
}

/// Allows `caller` to perform `action` for issuer `name`, or says why not.
///
/// The caller must be local and named by uid or primary gid. Root gets no exemption:
/// least privilege means root is listed like anyone else.
pub fn authorize(
    name: &str,
    issuer: &IssuerConfig,
    caller: &Caller,
    action: Action,
) -> Result<(), Error> {
    let Caller::Local(peer) = caller else {
        return Err(Error::Unauthenticated);
    };
    if !issuer.allowed_uids.contains(&peer.uid) && !issuer.allowed_gids.contains(&peer.gid) {
        return Err(Error::CallerNotAllowed(name.to_string()));
    }
    match (action, issuer.raw_sign) {
        (Action::RawSign, false) => Err(Error::RawSignDisabled(name.to_string())),
        (Action::Mint, true) => Err(Error::MintDisabled(name.to_string())),
        _ => Ok(()),
    }
}
