//! The `signetd` command line: one module per command group, sharing how to open the
//! token from a config and how to record a ceremony transcript.

pub mod attest;
pub mod audit;
pub mod ceremony;
pub mod config;
pub mod key_state;
pub mod keys;
pub mod log;
pub mod manual;
pub mod serve;
pub mod store;
pub mod token;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use signetd::Config;
use signetd::attest::AttestationCa;
use signetd::ceremony::{Transcript, write_transcript};
use signetd::hsm::Hsm;
use signetd::store::{KeyMetadata, SqlStore};

/// `--config`, shared by every command that opens the token.
#[derive(Args)]
pub struct ConfigArg {
    /// The config file.
    #[arg(
        long,
        short,
        env = "SIGNETD_CONFIG",
        default_value = "/etc/signetd/signetd.toml"
    )]
    pub config: PathBuf,
}

/// `--transcript`, shared by every ceremony step.
#[derive(Args)]
pub struct TranscriptArg {
    /// Write a transcript of this step to this file: signed by the attestation CA once
    /// it exists, else pending (unsigned, signed later by `ceremony sign`).
    #[arg(long)]
    pub transcript: Option<PathBuf>,
}

/// The socket path when none is given anywhere.
pub const DEFAULT_SOCKET: &str = "/run/signetd/signetd.sock";

/// Where a client command finds the daemon's Unix socket.
#[derive(Args)]
pub struct SocketArgs {
    /// The daemon's Unix socket. Default: `[listen] socket` of --config if given, else
    /// $SIGNETD_SOCKET, else /run/signetd/signetd.sock.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Take the socket path from this config file's `[listen] socket` (unless --socket
    /// is given). $SIGNETD_CONFIG is not read here: only an explicit --config counts.
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Who must serve the socket: a uid or user name. Default: root, you, or the
    /// owner of the socket's directory; any other listener is refused before
    /// anything is sent.
    #[arg(long, env = "SIGNETD_SOCKET_OWNER", value_name = "UID|NAME")]
    pub socket_owner: Option<String>,
}

impl SocketArgs {
    /// The socket path: --socket, then --config's `[listen] socket`, then
    /// $SIGNETD_SOCKET, then [`DEFAULT_SOCKET`].
    pub fn path(&self) -> Result<PathBuf, String> {
        let env = std::env::var_os("SIGNETD_SOCKET").filter(|v| !v.is_empty());
        socket_path(
            self.socket.as_deref(),
            self.config.as_deref(),
            env.map(PathBuf::from),
        )
    }

    /// The endpoint: [`SocketArgs::path`], served by --socket-owner's user.
    pub fn endpoint(&self) -> Result<signetd::client::Endpoint, String> {
        signetd::client::Endpoint::unix(self.path()?, self.socket_owner.as_deref())
    }
}

/// The precedence of [`SocketArgs::path`], with the environment passed in.
fn socket_path(
    socket: Option<&Path>,
    config: Option<&Path>,
    env: Option<PathBuf>,
) -> Result<PathBuf, String> {
    if let Some(socket) = socket {
        return Ok(socket.to_path_buf());
    }
    if let Some(config) = config {
        let config = Config::load(config).map_err(|e| format!("--config: {e}"))?;
        return Ok(config.listen.socket);
    }
    Ok(env.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)))
}

/// Keeps the PIN and whatever the token session leaves in memory out of core dumps and
/// out of reach of `ptrace` and `/proc/PID/mem` by other processes of the same user: the
/// process becomes non-dumpable (which also makes the kernel show its `/proc/PID` files
/// as root's) and its core size limit is 0, soft and hard, so it cannot be raised again.
/// Called before the PIN is read; calling it again changes nothing.
pub fn keep_memory_private() -> Result<(), String> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    set_dumpable_behavior(DumpableBehavior::NotDumpable).map_err(|e| {
        format!("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {e}")
    })?;
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, none)
        .map_err(|e| format!("cannot set the core size limit to 0 (RLIMIT_CORE): {e}"))
}

/// Loads the config and logs in to the token, after [`keep_memory_private`].
pub async fn open(config_path: &Path) -> Result<(Config, Arc<Hsm>), String> {
    let config = Config::load(config_path).map_err(|e| e.to_string())?;
    open_token(config).await
}

/// Reads the PIN and logs in to the token of a loaded config, after
/// [`keep_memory_private`].
pub async fn open_token(config: Config) -> Result<(Config, Arc<Hsm>), String> {
    keep_memory_private()?;
    let settings = config.hsm_settings().map_err(|e| e.to_string())?;
    let hsm = tokio::task::spawn_blocking(move || Hsm::open(settings))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| {
            let hint = if e.code() == "token_not_found"
                && config.pkcs11.module.to_string_lossy().contains("softhsm")
            {
                "; with SoftHSM2, check that SOFTHSM2_CONF names the token's softhsm2.conf"
            } else {
                ""
            };
            format!("{e} ({}){hint}", e.code())
        })?;
    Ok((config, Arc::new(hsm)))
}

/// A config's token and state store, for the commands that read or change keys.
pub struct Keys {
    /// The config.
    pub config: Config,
    /// The token, logged in.
    pub hsm: Arc<Hsm>,
    /// The state store: key records, certificates, the CA chain.
    pub store: Arc<SqlStore>,
}

impl Keys {
    /// The key records, as the key and attestation rooms take them.
    pub fn meta(&self) -> &dyn KeyMetadata {
        &*self.store
    }
}

/// Loads the config, logs in to the token and opens the state store, moving into it
/// whatever an earlier version kept in the token (printed to stderr), as the daemon does
/// at start. With `cross_check`, keys the store and the token disagree about are
/// printed to stderr too (they are never repaired here).
pub async fn open_keys(config_path: &Path, cross_check: bool) -> Result<Keys, String> {
    let (config, hsm) = open(config_path).await?;
    let (store, imported) = signetd::service::wiring::open_store(&config, &hsm)
        .await
        .map_err(|e| format!("{e} ({})", e.code()))?;
    if let Some(summary) = imported.summary() {
        eprintln!("{summary}");
    }
    let keys = Keys { config, hsm, store };
    if cross_check {
        match signetd::keys::store::inventory(&keys.hsm, keys.meta()).await {
            Ok(inventory) => {
                for mismatch in &inventory.mismatches {
                    eprintln!("warning: {mismatch}");
                }
            }
            Err(e) => eprintln!("warning: cannot read the keys: {e}"),
        }
    }
    Ok(keys)
}

/// Finishes and writes a transcript if one was asked for, signed when the CA is ready.
/// The step's own outcome is returned unchanged, so a failed step still leaves a record.
pub async fn record<T>(
    arg: &TranscriptArg,
    transcript: Transcript,
    keys: Option<&Keys>,
    outcome: Result<T, String>,
) -> Result<T, String> {
    let Some(path) = &arg.transcript else {
        return outcome;
    };
    let transcript = transcript.finish(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
    let ca: Option<AttestationCa> = match keys {
        Some(keys) => signetd::attest::ca::ready(&keys.hsm, keys.meta())
            .await
            .ok(),
        None => None,
    };
    let signer = keys.map(|k| &*k.hsm).zip(ca.as_ref());
    write_transcript(path, &transcript, signer).await?;
    let kind = if signer.is_some() {
        "signed"
    } else {
        "pending (unsigned)"
    };
    eprintln!("transcript ({kind}) written to {}", path.display());
    outcome
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    signetd::service::hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_taken_from_socket_then_config_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("signetd.toml");
        std::fs::write(
            &config,
            "[pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"t\"\npin_file = \"/p\"\n\n[listen]\nsocket = \"/from/config.sock\"\n",
        )
        .unwrap();
        let env = || Some(PathBuf::from("/from/env.sock"));
        let given = Path::new("/given.sock");
        let path = |s, c, e| socket_path(s, c, e).unwrap();
        assert_eq!(path(Some(given), Some(&config), env()), given);
        assert_eq!(
            path(None, Some(&config), env()),
            Path::new("/from/config.sock")
        );
        assert_eq!(path(None, None, env()), Path::new("/from/env.sock"));
        assert_eq!(path(None, None, None), Path::new(DEFAULT_SOCKET));
        let missing = socket_path(None, Some(&dir.path().join("nope.toml")), env());
        assert!(missing.unwrap_err().starts_with("--config"));
    }
}
