//! The `signetd` command: the daemon, and the operator and client commands around it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{Map, Value, json};

use signetd::client::{self, Endpoint};
use signetd::hsm::Hsm;
use signetd::keys::{self, JwkSet};
use signetd::token::verify::{self, Expected};
use signetd::{Algorithm, Config, Service, api};

/// signetd: keeps token issuers' keys in a PKCS#11 token and signs for them.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: log in to the token and serve the API on the Unix socket and
    /// the public endpoints on HTTP, until SIGTERM or SIGINT.
    Serve(ConfigArg),
    /// Manage issuer keys directly on the token (set-up and ceremonies; no daemon needed).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Talk to a running daemon as a client.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Ask a running daemon whether it is ready (its token answers); exits 0 if so.
    Status {
        /// The daemon's Unix socket.
        #[arg(
            long,
            env = "SIGNETD_SOCKET",
            default_value = "/run/signetd/signetd.sock"
        )]
        socket: PathBuf,
    },
}

#[derive(Args)]
struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        short,
        env = "SIGNETD_CONFIG",
        default_value = "/etc/signetd/signetd.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate the first signing key of an issuer inside the token, active at once.
    /// The key is non-extractable; its public half and state record are stored beside it.
    /// A running daemon picks the key up when restarted.
    Generate {
        #[command(flatten)]
        config: ConfigArg,
        /// The issuer (a name under [issuers] in the config).
        #[arg(long)]
        issuer: String,
        /// Override the issuer's configured algorithm.
        #[arg(long)]
        algorithm: Option<Algorithm>,
        /// Succeed without generating if the issuer already has an active key.
        #[arg(long)]
        if_missing: bool,
    },
    /// List signetd's keys in the token, with their state and token attributes, and
    /// report anything incomplete.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only keys of this issuer.
        #[arg(long)]
        issuer: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Ask a running daemon to mint a JWT; prints the token (or the whole response with --json).
    Mint {
        /// The daemon's Unix socket.
        #[arg(
            long,
            env = "SIGNETD_SOCKET",
            default_value = "/run/signetd/signetd.sock"
        )]
        socket: PathBuf,
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
    /// Verify a JWT offline against a JWKS fetched from a daemon; prints the claims.
    Verify {
        /// Fetch the JWKS over the daemon's Unix socket.
        #[arg(
            long,
            conflicts_with = "jwks_url",
            required_unless_present = "jwks_url"
        )]
        socket: Option<PathBuf>,
        /// Fetch the JWKS from this http:// URL.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports at info; one-shot commands only speak up when something is wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGNETD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signetd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(&args.config).await,
            Command::Keys(command) => keys_command(command).await,
            Command::Token(command) => token_command(command).await,
            Command::Status { socket } => status(socket).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("signetd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config and logs in to the token.
async fn open(config_path: &Path) -> Result<(Config, Arc<Hsm>), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    let settings = config.hsm_settings().map_err(|e| e.to_string())?;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(settings))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{} ({})", e, e.code()))?;
    Ok((config, Arc::new(hsm)))
}

async fn serve(config_path: &Path) -> Result<(), String> {
    let (config, hsm) = open(config_path).await?;
    let socket = config.listen.socket.clone();
    let (unix, socket_file) = api::bind_unix(&socket, config.listen.socket_mode)
        .map_err(|e| format!("listen.socket: {e}"))?;
    let http = match config.listen.http {
        Some(addr) => {
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "HTTP listener is not on loopback; it serves public endpoints only");
            }
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("listen.http: cannot bind {addr}: {e}"))?,
            )
        }
        None => None,
    };
    let listeners = api::Listeners {
        unix,
        http,
        max_connections: config.listen.max_connections,
    };
    let http_addr = listeners.http.as_ref().and_then(|l| l.local_addr().ok());
    let service = Arc::new(
        Service::start(config, hsm)
            .await
            .map_err(|e| format!("{e} ({})", e.code()))?,
    );
    tracing::info!(socket = %socket.display(), http = ?http_addr, "signetd serving");
    api::serve(listeners, service, shutdown_signal()).await;
    socket_file.remove();
    tracing::info!("signetd stopped");
    Ok(())
}

async fn status(socket: PathBuf) -> Result<(), String> {
    let (code, body) = client::send(&Endpoint::Unix(socket), Method::GET, "/readyz", None).await?;
    let body = String::from_utf8_lossy(&body);
    if code.is_success() {
        println!("{body}");
        Ok(())
    } else {
        Err(format!("not ready (HTTP {}): {body}", code.as_u16()))
    }
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

async fn keys_command(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Generate {
            config,
            issuer,
            algorithm,
            if_missing,
        } => {
            let (config, hsm) = open(&config.config).await?;
            let issuer_config = config.issuer(&issuer).ok_or_else(|| {
                format!("unknown issuer {issuer:?}: add [issuers.{issuer}] to the config first")
            })?;
            let algorithm = algorithm.unwrap_or(issuer_config.algorithm);
            match keys::store::generate(&hsm, &issuer, algorithm).await {
                Ok(key) => {
                    println!(
                        "generated {} key {} for issuer {issuer} (active)",
                        key.algorithm, key.kid
                    );
                    Ok(())
                }
                Err(keys::KeyStoreError::ActiveKeyExists { kid, .. }) if if_missing => {
                    println!("issuer {issuer} already has active key {kid}; nothing generated");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        KeysCommand::List {
            config,
            issuer,
            json,
        } => {
            let (_, hsm) = open(&config.config).await?;
            let inventory = keys::store::inventory(&hsm)
                .await
                .map_err(|e| e.to_string())?;
            let shown: Vec<_> = inventory
                .keys
                .iter()
                .filter(|k| issuer.as_deref().is_none_or(|i| i == k.issuer))
                .map(signetd::service::KeyView::from)
                .collect();
            if json {
                let out =
                    json!({"token": hsm.token(), "keys": shown, "problems": inventory.problems});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializes")
                );
            } else {
                println!(
                    "token {:?} (serial {})",
                    hsm.token().label,
                    hsm.token().serial
                );
                println!(
                    "{:<36} {:<16} {:<6} {:<8} HARDWARE-BOUND",
                    "KID", "ISSUER", "ALG", "STATE"
                );
                for key in &shown {
                    let state = serde_json::to_value(key.state).expect("serializes");
                    println!(
                        "{:<36} {:<16} {:<6} {:<8} {}",
                        key.kid,
                        key.issuer,
                        key.alg,
                        state.as_str().unwrap_or("?"),
                        if key.token_attributes.is_hardware_bound() {
                            "yes"
                        } else {
                            "NO"
                        }
                    );
                }
                for problem in &inventory.problems {
                    println!("problem: {problem}");
                }
            }
            Ok(())
        }
    }
}

async fn token_command(command: TokenCommand) -> Result<(), String> {
    match command {
        TokenCommand::Mint {
            socket,
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
            let (status, response) = client::send(
                &Endpoint::Unix(socket),
                Method::POST,
                "/v1/tokens",
                Some(body),
            )
            .await?;
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
            let (endpoint, path) = match (socket, jwks_url) {
                (Some(socket), _) => (Endpoint::Unix(socket), "/.well-known/jwks.json".to_string()),
                (None, Some(url)) => client::parse_http_url(&url)?,
                (None, None) => return Err("give --socket or --jwks-url".to_string()),
            };
            let (status, body) = client::send(&endpoint, Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(format!("fetching the JWKS: HTTP {}", status.as_u16()));
            }
            let keys: JwkSet =
                serde_json::from_slice(&body).map_err(|e| format!("the JWKS is not valid: {e}"))?;
            let expected = Expected {
                issuer: iss.as_deref(),
                audience: aud.as_deref(),
                max_ttl,
                now: signetd::service::unix_now(),
                leeway: 5,
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
