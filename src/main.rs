//! The `signetd` command: the daemon, and the operator and client commands around it.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(cli::ConfigArg),
    /// Manage issuer keys directly on the token (set-up and ceremonies; no daemon needed).
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// The attestation CA, and verifying key attestations.
    #[command(subcommand)]
    Attest(cli::attest::AttestCommand),
    /// The audit log: verify it offline, find the record of a token.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// The state store (single-use jtis, token revocations): migrate and check its schema.
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
    /// Key ceremonies: token initialization and transcripts.
    #[command(subcommand)]
    Ceremony(cli::ceremony::CeremonyCommand),
    /// Talk to a running daemon as a client.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Ask a running daemon whether it is ready (its token answers); exits 0 if so.
    Status {
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
    },
    /// Print the API's OpenAPI 3.1 document (as served at /openapi.json and committed as
    /// docs/openapi.json).
    Openapi,
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
    // First thing the daemon does, before any thread exists or the PIN is read.
    if matches!(cli.command, Command::Serve(_))
        && let Err(message) = cli::keep_memory_private()
    {
        eprintln!("signetd: {message}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signetd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cli::serve::serve(&args.config).await,
            Command::Keys(command) => cli::keys::run(command).await,
            Command::Attest(command) => cli::attest::run(command).await,
            Command::Audit(command) => cli::audit::run(command).await,
            Command::Store(command) => cli::store::run(command).await,
            Command::Ceremony(command) => cli::ceremony::run(command).await,
            Command::Token(command) => cli::token::run(command).await,
            Command::Status {
                socket,
                socket_owner,
            } => cli::serve::status(socket, socket_owner.as_deref()).await,
            Command::Openapi => {
                use std::io::Write;
                std::io::stdout()
                    .write_all(signetd::api::openapi::json())
                    .map_err(|e| format!("cannot write the document: {e}"))
            }
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
