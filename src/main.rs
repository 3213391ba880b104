//! The `signetd` command: the daemon, and the operator and client commands around it.

mod cli;

/// mimalloc, not glibc's malloc: under load the request path allocates on the runtime
/// threads and frees across threads (a worker's token, answered by a runtime thread),
/// where glibc's arenas cost about a fifth of the runtime's CPU; measured A/B, mimalloc
/// gave 15-18% more signatures per second at 64 clients (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// signetd: keeps token issuers' keys in a PKCS#11 token and signs for them.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text`, or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "SIGNETD_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: cli::log::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: log in to the token and serve the API on the Unix socket (and
    /// over TLS if `[tls]` is set) and the public endpoints on loopback HTTP, until
    /// SIGTERM or SIGINT.
    Serve(cli::ConfigArg),
    /// Manage issuer keys directly in the token and the state store (set-up and
    /// ceremonies; no daemon needed, a running one applies changes within one tick).
    #[command(subcommand)]
    Keys(cli::keys::KeysCommand),
    /// The attestation CA, and verifying key attestations.
    #[command(subcommand)]
    Attest(cli::attest::AttestCommand),
    /// The audit log: verify it offline, find the record of a token.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// The state store (key records, single-use jtis, token revocations): migrate and
    /// check its schema.
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
    /// Key ceremonies: token initialization and transcripts.
    #[command(subcommand)]
    Ceremony(cli::ceremony::CeremonyCommand),
    /// Tokens: mint and verify with a running daemon; revoke one in the state store.
    #[command(subcommand)]
    Token(cli::token::TokenCommand),
    /// Ask a running daemon whether it is ready (GET /readyz): a token session answers,
    /// the token and state store could be read, every issuer has an active key that
    /// resolves in the token, no published key is missing from it, and the audit log
    /// can be written. Prints its answer; exits 0 if ready, 1 naming every problem.
    Status(cli::SocketArgs),
    /// Config files: check one without touching the token.
    #[command(subcommand)]
    Config(cli::config::ConfigCommand),
    /// Print the shell completion script for SHELL, for example
    /// `signetd completions bash > /etc/bash_completion.d/signetd`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page signetd(1), or with --out write it and one page per
    /// subcommand (signetd-keys-rotate.1, ...) into a directory.
    Man {
        /// Write every page into this directory (created if missing) and list them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Print the API's OpenAPI 3.1 document (as served at /openapi.json and committed as
    /// docs/openapi.json).
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports at info; one-shot commands only speak up when something is wrong.
    let serving = matches!(cli.command, Command::Serve(_));
    let default_level = if serving { "info" } else { "warn" };
    // First thing the daemon does, before any thread exists (the log's among them) or
    // the PIN is read.
    if serving && let Err(message) = cli::keep_memory_private() {
        eprintln!("signetd: {message}");
        return ExitCode::FAILURE;
    }
    let output = if serving {
        cli::log::Output::Daemon
    } else {
        cli::log::Output::Direct
    };
    let log = cli::log::init(cli.log_format, default_level, output);
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
            Command::Status(socket) => cli::serve::status(&socket).await,
            Command::Config(command) => cli::config::run(command),
            Command::Completions { shell } => cli::manual::completions(Cli::command(), shell),
            Command::Man { out } => cli::manual::man(Cli::command(), out.as_deref()),
            Command::Openapi => {
                use std::io::Write;
                std::io::stdout()
                    .write_all(signetd::api::openapi::json())
                    .map_err(|e| format!("cannot write the document: {e}"))
            }
        }
    });
    // Whatever still runs on the blocking pool (a call into a hung token) does not keep
    // the process from exiting.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    // The daemon's last lines out before its last word.
    if let Some(log) = log {
        cli::log::flush(log);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("signetd: {message}");
            ExitCode::FAILURE
        }
    }
}
