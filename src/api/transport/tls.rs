//! TLS over TCP: remote callers identified by their client certificates.
//!
//! The handshake runs in the connection's task under a deadline. A client certificate is
//! optional, so public endpoints serve anyone; when one is presented it must chain to
//! `tls.client_ca` and not be revoked by `tls.crl`, or the handshake fails with the
//! matching alert. A peer with a certificate becomes [`Principal::Remote`], one without
//! [`Principal::Anonymous`], whom the policy refuses every signing and admin route.
//!
//! The files are read again on [`TlsReloader::reload`] (SIGHUP) and whenever their
//! fingerprint changes. A new configuration applies to new connections; established ones
//! keep theirs. Files that do not load leave the current configuration in place.

mod files;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Acceptor;
use crate::config::TlsConfig;
use crate::identity::{CertificateIdentity, Principal};
use crate::telemetry::Transport;
use crate::util::{BoxFuture, hex};

/// The HTTPS listener: a TCP listener and the TLS configuration currently in force.
pub struct TlsListener {
    tcp: TcpListener,
    files: TlsReloader,
}

/// Reloads a [`TlsListener`]'s certificate, key, CA bundle and CRL from their files.
/// Cheap to clone; every clone reloads the same listener.
#[derive(Clone)]
pub struct TlsReloader(Arc<Shared>);

struct Shared {
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// The files' fingerprint at the last load, successful or not; held while loading
    /// so that SIGHUP and the poll never load at the same time.
    seen: Mutex<files::Fingerprint>,
}

impl TlsListener {
    /// Reads the files `config` names, then binds its address. Every error names the
    /// config key at fault.
    pub async fn bind(config: &TlsConfig) -> Result<TlsListener, String> {
        let seen = files::fingerprint(config);
        let (server, leaf) = files::server_config(config)?;
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("tls.listen: cannot bind {}: {e}", config.listen))?;
        tracing::info!(cert = %config.cert.display(), sha256 = %hex(&leaf), "TLS certificate loaded");
        let shared = Shared {
            config: config.clone(),
            current: RwLock::new(server),
            seen: Mutex::new(seen),
        };
        Ok(TlsListener {
            tcp,
            files: TlsReloader(Arc::new(shared)),
        })
    }

    /// Reads and checks the files `config` names as [`TlsListener::bind`] does, without
    /// binding the address (for `signetd config check`); returns the SHA-256 of the
    /// leaf certificate. Every error names the config key at fault.
    pub fn check_files(config: &TlsConfig) -> Result<[u8; 32], String> {
        files::server_config(config).map(|(_, leaf)| leaf)
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// A handle that reloads this listener's files.
    pub fn reloader(&self) -> TlsReloader {
        self.files.clone()
    }
}

/// What one reload of the TLS files did: the SHA-256 of the new leaf certificate now
/// served, or why the files were refused (the current configuration stays).
pub type TlsReload = Result<[u8; 32], String>;

impl TlsReloader {
    /// Reads the files again and, if they load, serves new connections with them.
    /// Otherwise the current configuration stays, and the error says why (it is logged
    /// too).
    pub fn reload(&self) -> TlsReload {
        let shared = &self.0;
        let mut seen = shared.seen.lock().unwrap_or_else(|e| e.into_inner());
        *seen = files::fingerprint(&shared.config);
        match files::server_config(&shared.config) {
            Ok((server, leaf)) => {
                *shared.current.write().unwrap_or_else(|e| e.into_inner()) = server;
                tracing::info!(cert = %shared.config.cert.display(), sha256 = %hex(&leaf), "TLS files reloaded");
                Ok(leaf)
            }
            Err(e) => {
                tracing::warn!("TLS files not reloaded, the current certificate stays: {e}");
                Err(e)
            }
        }
    }

    /// Reloads whenever the files' fingerprint changes, checking every
    /// `tls.reload_check_seconds` (never if 0), until `shutdown`, and hands each outcome
    /// to `report` (the audit record every reload leaves; this module knows no log).
    pub(crate) async fn watch(
        self,
        shutdown: CancellationToken,
        report: impl Fn(TlsReload) -> BoxFuture<'static, ()> + Send,
    ) {
        let every = self.0.config.reload_check_seconds;
        if every == 0 {
            return;
        }
        let mut ticks = tokio::time::interval(Duration::from_secs(every));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let changed = {
                let seen = self.0.seen.lock().unwrap_or_else(|e| e.into_inner());
                *seen != files::fingerprint(&self.0.config)
            };
            if changed {
                report(self.reload()).await;
            }
        }
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Acceptor for TlsListener {
    const TRANSPORT: Transport = Transport::Tls;
    type Io = TlsStream<TcpStream>;
    type Pending = BoxFuture<'static, Option<(TlsStream<TcpStream>, Principal)>>;

    async fn accept(&self) -> io::Result<Self::Pending> {
        let (stream, addr) = self.tcp.accept().await?;
        let acceptor = TlsAcceptor::from(self.files.current());
        let deadline = Duration::from_secs(self.files.0.config.handshake_timeout_seconds);
        Ok(Box::pin(async move {
            // Small requests and responses: don't let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let stream = match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    note_failed_handshake(addr, &e);
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%addr, "TLS handshake not finished within {deadline:?}");
                    return None;
                }
            };
            let principal = principal(addr, &stream)?;
            Some((stream, principal))
        }))
    }
}

/// Who is on the other end of an established TLS connection.
fn principal(addr: SocketAddr, stream: &TlsStream<TcpStream>) -> Option<Principal> {
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Some(Principal::Anonymous(Some(addr)));
    };
    match CertificateIdentity::from_der(leaf) {
        Ok(certificate) => Some(Principal::Remote {
            addr: Some(addr),
            certificate,
        }),
        Err(e) => {
            tracing::info!(%addr, "client certificate passed verification but {e}; closing");
            None
        }
    }
}

/// Logs why a handshake failed: refused client certificates at info, so an operator can
/// see why a caller is turned away; anything else (scanners, resets) at debug.
fn note_failed_handshake(addr: SocketAddr, error: &io::Error) {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(why)) => {
            tracing::info!(%addr, "client certificate refused: {why:?}");
        }
        _ => tracing::debug!(%addr, "TLS handshake failed: {error}"),
    }
}
