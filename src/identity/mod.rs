//! Who is calling: the [`Principal`] every listener builds for every request, and the
//! [`CallerSelector`]s a config uses to name principals.
//!
//! Identity comes from the transport, never from the request body. On the Unix socket
//! the kernel reports the peer's uid, gid and pid (`SO_PEERCRED`); a TLS listener
//! reports the client certificate's identity ([`CertificateIdentity`]); anything else is
//! anonymous. The policy, the service and the audit log see only a `Principal`, so a new
//! kind of transport fills in a principal and changes nothing behind it.

mod certificate;
mod selector;

use std::fmt;
use std::net::SocketAddr;

pub use selector::{CallerSelector, SelectorError};

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

/// What a verified client certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateIdentity {
    /// The SPIFFE ID (the certificate's one `spiffe://` URI SAN), if it has one.
    pub spiffe_id: Option<String>,
    /// The certificate's DNS SANs, lowercase.
    pub dns_names: Vec<String>,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
}

/// The identity behind a request, as its transport established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A process on this host, over the Unix socket.
    Local(PeerCredentials),
    /// A remote peer that presented a verified client certificate.
    Remote {
        /// The peer's address.
        addr: Option<SocketAddr>,
        /// What its certificate says.
        certificate: CertificateIdentity,
    },
    /// A peer with no authenticated identity (plain TCP).
    Anonymous(Option<SocketAddr>),
}

impl Principal {
    /// Whether the transport established who this is. Anonymous principals may use only
    /// public endpoints.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self, Principal::Anonymous(_))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Local(p) => match p.pid {
                Some(pid) => write!(f, "uid={} gid={} pid={pid}", p.uid, p.gid),
                None => write!(f, "uid={} gid={}", p.uid, p.gid),
            },
            Principal::Remote { addr, certificate } => {
                match (&certificate.spiffe_id, certificate.dns_names.first()) {
                    (Some(id), _) => write!(f, "{id}")?,
                    (None, Some(dns)) => write!(f, "dns:{dns}")?,
                    (None, None) => {
                        f.write_str("cert-sha256:")?;
                        for b in &certificate.sha256[..8] {
                            write!(f, "{b:02x}")?;
                        }
                        f.write_str("…")?;
                    }
                }
                match addr {
                    Some(addr) => write!(f, " from {addr}"),
                    None => Ok(()),
                }
            }
            Principal::Anonymous(Some(addr)) => write!(f, "anonymous {addr}"),
            Principal::Anonymous(None) => f.write_str("anonymous"),
        }
    }
}
