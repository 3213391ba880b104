//! `signetd token`: a client of a running daemon.

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use serde_json::{Map, Value, json};
use signetd::client::{self, Endpoint};
use signetd::keys::JwkSet;
use signetd::token::verify::{self, Expected};

/// Client commands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Ask a running daemon to mint a JWT; prints the token (or the whole response with --json).
    Mint {
        /// The daemon's Unix socket.
        #[arg(
            long,
            env = "SIGNETD_SOCKET",
            default_value = "/run/signetd/signetd.sock"
        )]
        socket: PathBuf,
        /// Who must serve the socket: a uid or user name. Default: root, you, or the
        /// owner of the socket's directory; any other listener is refused before
        /// anything is sent.
        #[arg(long, env = "SIGNETD_SOCKET_OWNER", value_name = "UID|NAME")]
        socket_owner: Option<String>,
        /// Mint over HTTPS instead, at this daemon (`https://host:port`), with a client
        /// certificate (--cert, --key) checked against --cacert.
        #[arg(long, requires_all = ["cert", "key", "cacert"])]
        url: Option<String>,
        /// PEM file with the client certificate (chain) for --url.
        #[arg(long, requires = "url")]
        cert: Option<PathBuf>,
        /// PEM file with the client certificate's private key.
        #[arg(long, requires = "url")]
        key: Option<PathBuf>,
        /// PEM file with the CA certificates that may sign the daemon's certificate.
        #[arg(long, requires = "url")]
        cacert: Option<PathBuf>,
        /// The issuer.
        #[arg(long)]
        issuer: String,
        /// The audience (repeat for several).
        #[arg(long, required = true)]
        aud: Vec<String>,
        /// The subject.
        #[arg(long)]
        sub: Option<String>,
        /// A custom claim NAME=VALUE; VALUE is parsed as JSON if it can be, else taken as a string.
        #[arg(long = "claim", value_name = "NAME=VALUE")]
        claims: Vec<String>,
        /// Lifetime in seconds (default: the issuer's maximum).
        #[arg(long)]
        ttl: Option<u64>,
        /// Print the whole JSON response.
        #[arg(long)]
        json: bool,
    },
    /// Verify a JWT's signature, lifetime and (when given) iss and aud offline, against a
    /// JWKS fetched from a daemon; prints the claims. It does not check revocations:
    /// gateways should call POST /v1/verify.
    Verify {
        /// Fetch the JWKS over the daemon's Unix socket (the default, unless --jwks-url).
        #[arg(
            long,
            env = "SIGNETD_SOCKET",
            default_value = "/run/signetd/signetd.sock"
        )]
        socket: PathBuf,
        /// Who must serve the socket: a uid or user name. Default: root, you, or the
        /// owner of the socket's directory; any other listener is refused before
        /// anything is sent.
        #[arg(long, env = "SIGNETD_SOCKET_OWNER", value_name = "UID|NAME")]
        socket_owner: Option<String>,
        /// Fetch the JWKS from this http:// URL instead.
        #[arg(long)]
        jwks_url: Option<String>,
        /// Require this `iss`.
        #[arg(long)]
        iss: Option<String>,
        /// Require this audience in `aud`.
        #[arg(long)]
        aud: Option<String>,
        /// Refuse tokens whose `exp - iat` exceeds this many seconds.
        #[arg(long)]
        max_ttl: Option<u64>,
        /// The token, or "-" to read it from standard input.
        #[arg(default_value = "-")]
        token: String,
    },
}

/// Fetches a JWKS from a daemon's socket or an http:// URL.
pub async fn fetch_jwks(socket: Option<Endpoint>, url: Option<&str>) -> Result<JwkSet, String> {
    let (endpoint, path) = match (socket, url) {
        (Some(socket), _) => (socket, "/.well-known/jwks.json".to_string()),
        (None, Some(url)) => client::parse_http_url(url)?,
        (None, None) => return Err("give --socket or --jwks-url".to_string()),
    };
    let (status, body) = client::send(&endpoint, Method::GET, &path, None).await?;
    if !status.is_success() {
        return Err(format!("fetching the JWKS: HTTP {}", status.as_u16()));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the JWKS is not valid: {e}"))
}

/// The endpoint and path to mint at, from `--url`: an `https://` URL, whose path (if
/// any besides `/`) replaces `/v1/tokens`.
fn mint_url(
    url: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<(Endpoint, String), String> {
    if !url.starts_with("https://") {
        return Err(format!(
            "--url {url:?}: tokens are minted over https:// only (plain HTTP serves public endpoints)"
        ));
    }
    let (endpoint, path) = client::parse_url(url, Some(tls))?;
    let path = if path == "/" {
        "/v1/tokens".to_string()
    } else {
        path
    };
    Ok((endpoint, path))
}

/// Runs a token command.
pub async fn run(command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Mint {
            socket,
            socket_owner,
            url,
            cert,
            key,
            cacert,
            issuer,
            aud,
            sub,
            claims,
            ttl,
            json,
        } => {
            let mut custom = Map::new();
            for claim in claims {
                let (name, value) = claim
                    .split_once('=')
                    .ok_or_else(|| format!("--claim {claim:?}: expected NAME=VALUE"))?;
                let value = serde_json::from_str(value)
                    .unwrap_or_else(|_| Value::String(value.to_string()));
                custom.insert(name.to_string(), value);
            }
            let aud = if aud.len() == 1 {
                json!(aud[0])
            } else {
                json!(aud)
            };
            let mut body = json!({"issuer": issuer, "aud": aud, "claims": custom});
            if let Some(sub) = sub {
                body["sub"] = json!(sub);
            }
            if let Some(ttl) = ttl {
                body["ttl_seconds"] = json!(ttl);
            }
            let body = serde_json::to_vec(&body).expect("serializes");
            let (endpoint, path) = match (url, cert, key, cacert) {
                (Some(url), Some(cert), Some(key), Some(cacert)) => {
                    let tls = client::tls_config(&cacert, Some((&cert, &key)))?;
                    mint_url(&url, tls)?
                }
                _ => {
                    if socket.to_string_lossy().contains("://") {
                        return Err(format!(
                            "--socket takes the path of the daemon's Unix socket, not {:?}: give a URL with --url",
                            socket.display()
                        ));
                    }
                    (
                        Endpoint::unix(socket, socket_owner.as_deref())?,
                        "/v1/tokens".to_string(),
                    )
                }
            };
            let (status, response) =
                client::send(&endpoint, Method::POST, &path, Some(body)).await?;
            let response: Value = serde_json::from_slice(&response)
                .map_err(|_| format!("daemon answered {status} with a non-JSON body"))?;
            if !status.is_success() {
                let code = response["error"]["code"].as_str().unwrap_or("?");
                let message = response["error"]["message"].as_str().unwrap_or("?");
                return Err(format!("{code}: {message} (HTTP {})", status.as_u16()));
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&response).expect("serializes")
                );
            } else {
                println!("{}", response["token"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        TokenCommand::Verify {
            socket,
            socket_owner,
            jwks_url,
            iss,
            aud,
            max_ttl,
            token,
        } => {
            let token = if token == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("reading the token: {e}"))?
            } else {
                token
            };
            let keys = match &jwks_url {
                Some(url) => fetch_jwks(None, Some(url)).await?,
                None => {
                    let endpoint = Endpoint::unix(socket, socket_owner.as_deref())?;
                    fetch_jwks(Some(endpoint), None).await?
                }
            };
            for (given, what) in [(iss.is_some(), "--iss"), (aud.is_some(), "--aud")] {
                if !given {
                    eprintln!("warning: {what} not given, so it is not checked");
                }
            }
            let expected = Expected {
                issuer: iss.as_deref(),
                audience: aud.as_deref(),
                max_ttl,
                now: signetd::service::unix_now(),
                leeway: 5,
                // The CLI knows no issuer's profile: typ is not checked.
                profile: None,
            };
            let (header, claims) = verify::verify(token.trim(), &keys, &expected)
                .map_err(|e| format!("invalid token: {e} ({})", e.code()))?;
            println!(
                "{}",
                json!({"valid": true, "header": header, "claims": claims})
            );
            Ok(())
        }
    }
}
