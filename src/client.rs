//! A minimal HTTP/1.1 client for the CLI: talks to the daemon over its Unix socket, or
//! fetches a JWKS over plain HTTP.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

/// Where to send a request.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// The daemon's Unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP.
    Tcp(String),
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

/// Sends one request and returns the status and body.
pub async fn send(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String> {
    match endpoint {
        Endpoint::Unix(path_) => {
            let stream = UnixStream::connect(path_)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", path_.display()))?;
            exchange(stream, "localhost", method, path, json_body).await
        }
        Endpoint::Tcp(authority) => {
            let stream = TcpStream::connect(authority)
                .await
                .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
            exchange(stream, authority, method, path, json_body).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    host: &str,
    method: Method,
    path: &str,
    json_body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    if json_body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(json_body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the response failed: {e}"))?
        .to_bytes();
    Ok((status, body))
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
