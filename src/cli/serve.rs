//! `signetd serve` and `signetd status`.

use std::path::Path;
use std::sync::Arc;

use hyper::Method;
use signetd::client;
use signetd::service::settings::TlsReloadTrigger;
use signetd::{Service, api};

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn serve(config_path: &Path) -> Result<(), String> {
    survive_file_size_limit()?;
    // At once: SIGHUP's default action would kill the daemon while it starts.
    let hangups = hangups()?;
    // Before the token is opened, so its errors at start are counted too.
    signetd::telemetry::install();
    let config = signetd::Config::load(config_path).map_err(|e| e.to_string())?;
    // Refuse an unsafe socket directory before the PIN is read or the token touched.
    api::check_socket_directory(&config.listen.socket)
        .map_err(|e| format!("listen.socket: {e}"))?;
    let (config, hsm) = super::open_token(config).await?;
    for deprecation in &config.deprecations {
        tracing::warn!(config = %config_path.display(), "{deprecation}");
    }
    let socket = config.listen.socket.clone();
    let (unix, socket_file) = api::bind_unix(&socket, config.listen.socket_mode)
        .map_err(|e| format!("listen.socket: {e}"))?;
    // Config::load refused a non-loopback address: plain HTTP peers are anonymous.
    let http = match config.listen.http {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("listen.http: cannot bind {addr}: {e}"))?,
        ),
        None => None,
    };
    // Like listen.http: Config::load refused a non-loopback address unless anonymous
    // remote callers may read metrics.
    let metrics = match config.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("metrics.listen: cannot bind {addr}: {e}"))?,
        ),
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => Some(api::TlsListener::bind(tls).await?),
        None => None,
    };
    let tls_reloader = tls.as_ref().map(api::TlsListener::reloader);
    let tls_addr = tls
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_string(), |a| format!("https://{a}"));
    let listeners = api::Listeners {
        unix,
        http,
        tls,
        max_connections: config.listen.max_connections,
        metrics,
    };
    let http_addr = listeners
        .http
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    let service = Arc::new(Service::start(config, hsm).await.map_err(|e| match e {
        // A client is told only "internal error"; the operator starting the
        // daemon is told why (a state rollback the store refused, say).
        signetd::Error::Internal(detail) => format!("{detail} (internal)"),
        e => format!("{e} ({})", e.code()),
    })?);
    reload_on_sighup(hangups, config_path, service.clone(), tls_reloader);
    let metrics_addr = listeners
        .metrics
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_string(), |a| format!("http://{a}/metrics"));
    tracing::info!(socket = %socket.display(), http = %http_addr, tls = %tls_addr, metrics = %metrics_addr, "signetd serving");
    notify_systemd(sd_notify::NotifyState::Ready);
    let shutdown = async {
        shutdown_signal().await;
        notify_systemd(sd_notify::NotifyState::Stopping);
    };
    signetd::daemon::run(listeners, service, shutdown).await;
    socket_file.remove();
    tracing::info!("signetd stopped");
    Ok(())
}

/// Tells systemd (`Type=notify`, packaging/signetd.service) how the daemon is doing:
/// ready once it is logged in to the token and every listener is bound, so units
/// ordered after signetd start when it can sign; stopping once shutdown begins. Without
/// `NOTIFY_SOCKET` (not under systemd) this does nothing.
fn notify_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
    }
}

fn hangups() -> Result<tokio::signal::unix::Signal, String> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))
}

/// SIGHUP reloads the config ([`Service::reload_config`]: issuers, policy, limits; a
/// config that fails validation or needs a restart is refused and the running one
/// stays) and the TLS files. Connections and keys are untouched.
fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    config_path: &Path,
    service: Arc<Service>,
    tls: Option<api::TlsReloader>,
) {
    let config_path = config_path.to_path_buf();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(config = %config_path.display(), "SIGHUP: reloading");
            // Both log their outcome themselves; the config reload records its own
            // audit record, the TLS reload's is written here.
            let _ = service.reload_config(&config_path).await;
            if let Some(tls) = &tls {
                let outcome = tls.reload();
                service
                    .record_tls_reload(TlsReloadTrigger::Sighup, &outcome)
                    .await;
            }
        }
    });
}

/// A write past `RLIMIT_FSIZE` raises SIGXFSZ, whose default action kills the process.
/// With a handler installed the write fails with `EFBIG` instead, which the audit log
/// treats like a full disk: signing stops, public endpoints keep serving.
fn survive_file_size_limit() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut xfsz = signal(SignalKind::from_raw(libc::SIGXFSZ))
        .map_err(|e| format!("cannot handle SIGXFSZ: {e}"))?;
    tokio::spawn(async move {
        while xfsz.recv().await.is_some() {
            tracing::warn!("a write exceeded the file size limit (SIGXFSZ)");
        }
    });
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Asks a running daemon whether it is ready.
pub async fn status(socket: &super::SocketArgs) -> Result<(), String> {
    let endpoint = socket.endpoint()?;
    let (code, body) = client::send(&endpoint, Method::GET, "/readyz", None).await?;
    let body = String::from_utf8_lossy(&body);
    if code.is_success() {
        println!("{body}");
        Ok(())
    } else {
        Err(format!("not ready (HTTP {}): {body}", code.as_u16()))
    }
}
