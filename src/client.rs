//! The one HTTP/1.1 client of signetd: the CLI, the integration tests and the benchmark
//! all talk to a daemon through it, over its Unix socket, plain TCP or TLS.
//!
//! On a Unix socket nothing is sent before [`socket_owner`] has checked who listens.

pub mod socket_owner;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

pub use socket_owner::SocketOwner;

/// Where to send a request.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// The daemon's Unix socket, served by root, the user running the client or the
    /// owner of the socket's directory ([`SocketOwner::Default`]).
    Unix(PathBuf),
    /// The daemon's Unix socket, served by the given owner.
    UnixOwned(PathBuf, SocketOwner),
    /// `host:port` over TCP.
    Tcp(String),
    /// `host:port` over TLS, checking the server's certificate for `host`.
    Tls {
        /// `host:port` to connect to.
        authority: String,
        /// The configuration: trusted CAs, and the client certificate if any.
        config: Arc<ClientConfig>,
    },
}

impl Endpoint {
    /// The Unix socket at `socket`, served by `owner` (a uid or user name, as
    /// `--socket-owner` takes it) or else by the [`SocketOwner::Default`] users.
    pub fn unix(socket: PathBuf, owner: Option<&str>) -> Result<Endpoint, String> {
        Ok(match owner {
            Some(owner) => Endpoint::UnixOwned(socket, SocketOwner::parse(owner)?),
            None => Endpoint::Unix(socket),
        })
    }
}

/// Splits `http://host:port/path` into an endpoint and a path. HTTPS needs a TLS
/// configuration: see [`parse_url`].
pub fn parse_http_url(url: &str) -> Result<(Endpoint, String), String> {
    parse_url(url, None)
}

/// Splits `http://host:port/path` or `https://host:port/path` into an endpoint and a
/// path. An `https://` URL is served with `tls` (see [`tls_config`]), and needs it.
pub fn parse_url(url: &str, tls: Option<Arc<ClientConfig>>) -> Result<(Endpoint, String), String> {
    let (rest, default_port) = if let Some(rest) = url.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (rest, 443)
    } else {
        return Err(format!(
            "{url:?}: only http:// and https:// URLs are supported"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let has_port = match authority.rfind(']') {
        Some(end) => authority[end..].contains(':'),
        None => authority.contains(':'),
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let endpoint = match (default_port, tls) {
        (80, _) => Endpoint::Tcp(authority),
        (_, Some(config)) => Endpoint::Tls { authority, config },
        (_, None) => {
            return Err(format!(
                "{url:?}: an https:// URL needs the CA that signed the server's certificate (--cacert)"
            ));
        }
    };
    Ok((endpoint, path.to_string()))
}

/// A TLS client configuration that trusts the CAs in the PEM file `cacert` and, given a
/// certificate chain and key (PEM files), presents them as its client certificate.
pub fn tls_config(
    cacert: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, String> {
    let read_certs = |path: &Path| {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(cacert)? {
        roots
            .add(ca)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", cacert.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!("cannot read a PEM private key from {}: {e}", key.display())
            })?;
            builder
                .with_client_auth_cert(read_certs(cert)?, key_der)
                .map_err(|e| {
                    format!(
                        "{} and {} are not a usable certificate and key: {e}",
                        cert.display(),
                        key.display()
                    )
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection; its requests are sent one after another.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    /// Why the connection ended, once it has: the request side sees only a closed
    /// channel, while the reason (such as a TLS alert) ends the connection task.
    ended: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl Connection {
    /// Connects to `endpoint`.
    pub async fn open(endpoint: &Endpoint) -> Result<Connection, String> {
        match endpoint {
            Endpoint::Unix(socket) => Self::open_unix(socket, SocketOwner::Default).await,
            Endpoint::UnixOwned(socket, owner) => Self::open_unix(socket, *owner).await,
            Endpoint::Tcp(authority) => {
                let stream = TcpStream::connect(authority)
                    .await
                    .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
                Self::handshake(stream, authority).await
            }
            Endpoint::Tls { authority, config } => {
                let host = match authority.rsplit_once(':') {
                    Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
                    None => authority.as_str(),
                };
                let name = ServerName::try_from(host.to_string())
                    .map_err(|_| format!("{host:?} is not a DNS name or IP address"))?;
                let stream = TcpStream::connect(authority)
                    .await
                    .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
                let _ = stream.set_nodelay(true);
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS handshake with {authority} failed: {e}"))?;
                Self::handshake(stream, authority).await
            }
        }
    }

    async fn open_unix(socket: &Path, owner: SocketOwner) -> Result<Connection, String> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        socket_owner::check(&stream, socket, owner)?;
        Self::handshake(stream, "localhost").await
    }

    async fn handshake<S>(stream: S, host: &str) -> Result<Connection, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        let (report, ended) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                let _ = report.send(with_causes(&e));
            }
        });
        Ok(Connection {
            sender,
            host: host.to_string(),
            ended: Some(ended),
        })
    }

    /// `error`, with the reason the connection ended if it ended with one.
    async fn failure(&mut self, what: &str, error: hyper::Error) -> String {
        let why = match self.ended.take() {
            // The task has ended or is ending: the wait is short, but bounded anyway.
            Some(ended) => tokio::time::timeout(std::time::Duration::from_secs(1), ended)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        match why {
            Some(why) => format!("{what}: {}: {why}", with_causes(&error)),
            None => format!("{what}: {}", with_causes(&error)),
        }
    }

    /// Sends one request with `headers` (a `host` header is always added) and `body`,
    /// and reads the whole response.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        if let Err(e) = self.sender.ready().await {
            return Err(self.failure("the connection closed", e).await);
        }
        let response = match self.sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => return Err(self.failure("request failed", e).await),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the response failed: {e}"))?
            .to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// An error and its causes: hyper's own message alone hides, for example, the TLS alert
/// a server refused a client certificate with.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Sends one request on a connection of its own.
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, String> {
    Connection::open(endpoint)
        .await?
        .request(method, path, headers, body)
        .await
}

/// Sends one request, with a JSON body if given, and returns the status and body.
pub async fn send(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String> {
    let headers: &[(&str, &str)] = match json_body {
        Some(_) => &[("content-type", "application/json")],
        None => &[],
    };
    let body = Bytes::from(json_body.unwrap_or_default());
    let response = request(endpoint, method, path, headers, body).await?;
    Ok((response.status, response.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let (endpoint, path) =
            parse_http_url("http://127.0.0.1:8750/.well-known/jwks.json").unwrap();
        assert!(matches!(endpoint, Endpoint::Tcp(a) if a == "127.0.0.1:8750"));
        assert_eq!(path, "/.well-known/jwks.json");
        assert!(parse_http_url("https://x/").is_err());
        assert!(parse_http_url("ftp://x/").is_err());
        assert!(
            matches!(parse_http_url("http://[::1]/v").unwrap(), (Endpoint::Tcp(a), p) if a == "[::1]:80" && p == "/v")
        );
        assert!(
            matches!(parse_http_url("http://h").unwrap(), (Endpoint::Tcp(a), p) if a == "h:80" && p == "/")
        );
    }
}
