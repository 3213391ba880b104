//! `signetd token`: a client of a running daemon.

use std::path::PathBuf;

use clap::Subcommand;
use hyper::Method;
use serde_json::{Map, Value, json};
use signetd::client::{self, Endpoint};
use signetd::keys::JwkSet;
use signetd::token::verify::{self, Expected};

use signetd::Config;
use signetd::service::admin::RevokeTokenRequest;
use signetd::store::{RevocationStore, SqlStore};

use super::{ConfigArg, SocketArgs};

/// Client commands.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Ask a running daemon to mint a JWT; prints the token (or the whole response with --json).
    Mint {
        #[command(flatten)]
        socket: SocketArgs,
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
    /// Fetch the daemon's JWKS (over its Unix socket, or from --jwks-url), then check a
    /// JWT's signature, lifetime and (when given) iss and aud locally against it; prints
    /// the claims. It does not check revocations or single use: gateways should call
    /// POST /v1/verify.
    Verify {
        /// Where to fetch the JWKS unless --jwks-url is given.
        #[command(flatten)]
        socket: SocketArgs,
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
    /// Revoke a token by its jti, written directly into the state store (no daemon and
    /// no PIN needed, only the config and write access to the store). A running daemon
    /// refuses it in POST /v1/verify, lists it in /v1/revocations and writes a
    /// `token_revoke` audit record within one lifecycle tick.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The token's jti.
        // base64url: one jti in 64 starts with '-', a value here, not an option.
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "token",
            required_unless_present = "token"
        )]
        jti: Option<String>,
        /// The token itself (or "-" to read it from standard input): its jti and exp are
        /// read from its payload. Its signature is not checked; revoking is harmless.
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
        /// List the revocation until this time (seconds since the epoch; the token's
        /// `exp`). Default: the token's exp with --token, else now plus the hard TTL
        /// cap (3600 s), which outlives any token signetd mints.
        #[arg(long, value_name = "UNIX")]
        exp: Option<u64>,
    },
}

/// The jti and exp in the payload of a compact JWS, unverified.
fn jti_and_exp(token: &str) -> Result<(String, Option<u64>), String> {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .and_then(signetd::util::unb64)
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .ok_or("--token is not a compact JWT (header.payload.signature, base64url JSON)")?;
    let jti = payload["jti"]
        .as_str()
        .ok_or("the token has no jti: it cannot be revoked")?;
    Ok((jti.to_string(), payload["exp"].as_u64()))
}

/// `token revoke`: the revocation the API writes, written into the config's store.
async fn revoke(
    config: &ConfigArg,
    jti: Option<String>,
    token: Option<String>,
    exp: Option<u64>,
) -> Result<(), String> {
    let now = signetd::service::unix_now();
    let (jti, exp) = match (jti, token) {
        (Some(jti), _) => (jti, exp),
        (None, Some(token)) => {
            let token = if token == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("reading the token: {e}"))?
            } else {
                token
            };
            let (jti, token_exp) = jti_and_exp(&token)?;
            if exp.is_none()
                && let Some(token_exp) = token_exp
                && token_exp < now
            {
                println!(
                    "token {jti} expired at {token_exp}: no verifier accepts it; nothing to revoke"
                );
                return Ok(());
            }
            (jti, exp.or(token_exp))
        }
        (None, None) => unreachable!("clap requires --jti or --token"),
    };
    let revocation = RevokeTokenRequest { jti, exp }
        .revocation(now)
        .map_err(|e| format!("{e} ({})", e.code()))?;
    let loaded = Config::load(&config.config).map_err(|e| e.to_string())?;
    let location = loaded
        .store
        .location(&loaded.audit.dir)
        .map_err(|e| e.to_string())?;
    let store = SqlStore::open(&location).await.map_err(|e| e.to_string())?;
    let stored = store.revoke(&revocation).await.map_err(|e| e.to_string())?;
    println!(
        "token {} revoked by cli uid {}, listed until {}; a running daemon refuses it within one lifecycle tick",
        stored.jti,
        rustix::process::getuid().as_raw(),
        stored.exp
    );
    Ok(())
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
                    let path = socket.path()?;
                    if path.to_string_lossy().contains("://") {
                        return Err(format!(
                            "--socket takes the path of the daemon's Unix socket, not {:?}: give a URL with --url",
                            path.display()
                        ));
                    }
                    (socket.endpoint()?, "/v1/tokens".to_string())
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
        TokenCommand::Revoke {
            config,
            jti,
            token,
            exp,
        } => revoke(&config, jti, token, exp).await,
        TokenCommand::Verify {
            socket,
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
                None => fetch_jwks(Some(socket.endpoint()?), None).await?,
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
