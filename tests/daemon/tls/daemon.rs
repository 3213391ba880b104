//! An in-process daemon with an HTTPS listener, beside its socket and plain HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use signetd::Service;
use signetd::api::{self, TlsListener, TlsReloader};
use signetd::client::Endpoint;
use signetd::config::TlsConfig;
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::common::{daemon_config, hsm, token};

/// A daemon served in-process with an HTTPS listener beside its socket and plain HTTP.
pub struct TlsDaemon {
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub tls: SocketAddr,
    pub reloader: TlsReloader,
    pub dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TlsDaemon {
    pub async fn start(rest: &str, tls: &TlsConfig) -> TlsDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config = daemon_config(&token().pkcs11_toml(), rest, &dir);
        let service = Arc::new(Service::start(config, hsm()).await.unwrap());
        let socket = dir.path().join("signetd.sock");
        let tls_listener = TlsListener::bind(tls).await.unwrap();
        let listeners = api::Listeners {
            unix: api::bind_unix(&socket, 0o660).unwrap().0,
            http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            tls: Some(tls_listener),
            max_connections: 64,
            metrics: None,
        };
        let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
        let tls = listeners.tls.as_ref().unwrap().local_addr().unwrap();
        let reloader = listeners.tls.as_ref().unwrap().reloader();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(signetd::daemon::run(listeners, service, async {
            let _ = stopped.await;
        }));
        TlsDaemon {
            socket,
            http,
            tls,
            reloader,
            dir,
            stop: Some(stop),
        }
    }

    /// The HTTPS endpoint, as `localhost:PORT`, for a client with `config`.
    pub fn endpoint(&self, config: Arc<ClientConfig>) -> Endpoint {
        Endpoint::Tls {
            authority: format!("localhost:{}", self.tls.port()),
            config,
        }
    }

    /// All audit records written so far, as text.
    pub fn audit_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("audit")).unwrap() {
            text += &std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        }
        text
    }
}

impl Drop for TlsDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
