//! `signetd config check`: everything `serve` checks before it touches the token, and
//! nothing after. The PKCS#11 module is never loaded and the state store never
//! connected to, so the check is safe to run beside a live daemon (systemd's
//! `ExecReload=` runs it before sending SIGHUP) and on a host without the token.

use std::path::Path;

use clap::Subcommand;
use signetd::{Config, api};

use super::ConfigArg;

/// `signetd config ...`
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a config as `serve` does before it opens the token: the config's owner and
    /// mode, its syntax and every value (unknown keys refused, caller selectors parsed),
    /// the socket's directory, the PIN file's owner and mode (or that the PIN's
    /// environment variable is set), the PKCS#11 module file exists, the store URL's
    /// syntax (and `store.url_file`'s owner and mode), and that the TLS files load. The
    /// module is not loaded, the token not opened, the store not connected to. Exits 0
    /// with a one-line summary, 1 with the first problem. Owners are checked against
    /// the user running the command: run it as signetd's user.
    Check(ConfigArg),
}

/// Runs a `config` command.
pub fn run(command: ConfigCommand) -> Result<(), String> {
    match command {
        ConfigCommand::Check(args) => {
            let summary = check(&args.config)?;
            println!("{summary}");
            Ok(())
        }
    }
}

/// Checks the config at `path`; the one-line summary on success, the first problem
/// (naming the key at fault) otherwise. Warnings go to stderr.
pub fn check(path: &Path) -> Result<String, String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    for deprecation in &config.deprecations {
        eprintln!("warning: {deprecation}");
    }
    socket_directory(&config)?;
    module_file(&config.pkcs11.module)?;
    // The PIN is read, as serve reads it, to check its file, and dropped at once: keep
    // it out of core dumps all the same.
    super::keep_memory_private()?;
    drop(config.hsm_settings().map_err(|e| e.to_string())?);
    let store = config
        .store
        .location(&config.audit.dir)
        .map_err(|e| e.to_string())?;
    let tls = match &config.tls {
        Some(tls) => {
            api::TlsListener::check_files(tls)?;
            format!("https://{}", tls.listen)
        }
        None => "off".to_string(),
    };
    let http = config
        .listen
        .http
        .map_or_else(|| "off".to_string(), |a| format!("http://{a}"));
    let issuers = if config.issuers.is_empty() {
        "no issuers".to_string()
    } else {
        let names: Vec<&str> = config.issuers.keys().map(String::as_str).collect();
        format!("{} issuer(s) ({})", names.len(), names.join(", "))
    };
    Ok(format!(
        "config {} is valid: {issuers}; socket {}, http {http}, tls {tls}; store {}; \
         checked as uid {}; the token and the store were not opened",
        path.display(),
        config.listen.socket.display(),
        store,
        rustix::process::geteuid().as_raw(),
    ))
}

/// The socket's directory as `serve` checks it. A missing one is only a warning: under
/// systemd, `RuntimeDirectory=` creates it as the daemon starts.
fn socket_directory(config: &Config) -> Result<(), String> {
    match api::check_socket_directory(&config.listen.socket) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("warning: listen.socket: {e} (fine if systemd's RuntimeDirectory= makes it)");
            Ok(())
        }
        Err(e) => Err(format!("listen.socket: {e}")),
    }
}

/// The module must be a file, when the config names one by path. A bare name such as
/// `libsofthsm2.so` is found by the dynamic loader's search, which only loading it
/// would tell: it is left alone.
fn module_file(module: &Path) -> Result<(), String> {
    if module.components().count() <= 1 {
        return Ok(());
    }
    match std::fs::metadata(module) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(format!("pkcs11.module: {} is not a file", module.display())),
        Err(e) => Err(format!("pkcs11.module: {}: {e}", module.display())),
    }
}
