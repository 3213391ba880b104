//! The one HTTP/1.1 client of signetd: the CLI, the integration tests and the benchmark
//! all talk to a daemon through it, over its Unix socket or over TCP.
//!
//! On a Unix socket nothing is sent before [`socket_owner`] has checked who listens.

pub mod socket_owner;

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
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

/// Splits `http://host:port/path` into an endpoint and a path. HTTPS is not supported:
/// the CLI fetches only from a local daemon.
pub fn parse_http_url(url: &str) -> Result<(Endpoint, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((Endpoint::Tcp(authority), path.to_string()))
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
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            host: host.to_string(),
        })
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
        self.sender
            .ready()
            .await
            .map_err(|e| format!("the connection closed: {e}"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
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
        assert!(
            matches!(parse_http_url("http://h").unwrap(), (Endpoint::Tcp(a), p) if a == "h:80" && p == "/")
        );
    }
}
