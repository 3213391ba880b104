//! `signetd ceremony`: token initialization and transcripts.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use secrecy::SecretString;
use signetd::attest::certificate::from_pem;
use signetd::ceremony::{self, Created, Transcript};
use signetd::hsm::provision;

use super::{ConfigArg, TranscriptArg, record};

/// Ceremony commands.
#[derive(Subcommand)]
pub enum CeremonyCommand {
    /// Initialize a blank token (C_InitToken, C_InitPIN) with a label and PINs read from
    /// files, or verify that the token with that label exists and the user PIN works.
    InitToken {
        /// The PKCS#11 module (default: SoftHSM2's libsofthsm2.so, found in the usual places).
        #[arg(long, env = "SIGNETD_PKCS11_MODULE")]
        module: Option<PathBuf>,
        /// The token label (at most 32 bytes).
        #[arg(long)]
        label: String,
        /// File holding the security officer PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
        /// File holding the user PIN.
        #[arg(long)]
        pin_file: PathBuf,
        /// Refuse to initialize the token if the module already has a token with another
        /// label (one SoftHSM2 store per token).
        #[arg(long)]
        sole: bool,
        /// `text`, or `env`: KEY=VALUE lines (SIGNETD_PKCS11_MODULE, SIGNETD_TOKEN_LABEL,
        /// SIGNETD_TOKEN_SERIAL, SIGNETD_TOKEN_SETUP) for scripts.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// List the pending (unsigned) transcripts among the `*.json` files of a directory,
    /// one path per line.
    Pending {
        /// The transcript directory (a missing one holds none).
        dir: PathBuf,
        /// Leave out, with a warning on stderr, the transcripts this config's
        /// attestation CA must not sign: those recording another CA key (one destroyed
        /// by `attest init-ca --undo`). They stay pending.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Sign pending transcripts (written before the attestation CA existed) with the CA
    /// key. Refuses a transcript recording another CA key (one destroyed by
    /// `attest init-ca --undo`): this CA must not sign it as its own. A transcript
    /// refused or failed does not stop the others; the exit status is 1 if any was not
    /// signed.
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        /// Transcript files.
        #[arg(required = true)]
        transcripts: Vec<PathBuf>,
    },
    /// Verify a transcript against the operator's root, and print it. A ceremony that
    /// did not complete is flagged (`flag: ...` lines); with --config, so is a
    /// transcript of another token, or one whose keys the token no longer holds.
    Verify {
        /// The transcript file.
        transcript: PathBuf,
        /// The trusted root certificate (PEM).
        #[arg(long)]
        root: PathBuf,
        /// Also check the transcript against the token and state store this config
        /// names (logs in to the token).
        #[arg(long, short = 'c', value_name = "F")]
        config: Option<PathBuf>,
    },
}

/// How `init-token` reports.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// A sentence for people.
    Text,
    /// KEY=VALUE lines for scripts.
    Env,
}

/// Where distributions install SoftHSM2's module.
const SOFTHSM_MODULES: [&str; 4] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];

fn softhsm_module() -> Result<PathBuf, String> {
    SOFTHSM_MODULES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no --module given and SoftHSM2's libsofthsm2.so is in none of {}; install softhsm2, or give your HSM's PKCS#11 module with --module",
                SOFTHSM_MODULES.join(", ")
            )
        })
}

/// softhsm2-util pads labels with spaces to 32 bytes, so surrounding whitespace could
/// not be told apart when the token is looked up again.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 32 {
        return Err(format!(
            "--label is {} bytes long; PKCS#11 token labels are 1 to 32 bytes",
            label.len()
        ));
    }
    if label.chars().any(char::is_control) || label.trim() != label {
        return Err(format!(
            "--label {label:?} must not hold control characters nor start or end with whitespace"
        ));
    }
    Ok(())
}

/// Reads a PIN file, refusing one the daemon would refuse: owned by another user, or
/// open to group or others at all.
fn read_pin(path: &Path, what: &str) -> Result<SecretString, String> {
    let file = signetd::config::files::open_private_file(path, what).map_err(|e| e.to_string())?;
    let text = std::io::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretString::from(text.trim_end()))
}

/// Whether a transcript file is still unsigned; `None` if it is not JSON.
fn is_pending(path: &Path) -> Option<bool> {
    let text = std::fs::read_to_string(path).ok()?;
    let file: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(file.get("signature").is_none())
}

/// The other CA key a pending transcript records, if any (see [`ceremony::other_ca_key`]).
fn other_ca(path: &Path, ca: &signetd::attest::AttestationCa) -> Option<String> {
    let pending = ceremony::read_pending(path).ok()??;
    ceremony::other_ca_key(&pending.transcript, ca).map(str::to_string)
}

/// Runs a ceremony command.
pub async fn run(command: CeremonyCommand) -> Result<(), String> {
    match command {
        CeremonyCommand::InitToken {
            module,
            label,
            so_pin_file,
            pin_file,
            sole,
            format,
            transcript,
        } => {
            check_label(&label)?;
            let module = match module {
                Some(module) => module,
                None => softhsm_module()?,
            };
            if module.to_string_lossy().contains("softhsm")
                && std::env::var_os("SOFTHSM2_CONF").is_none()
            {
                eprintln!(
                    "warning: SOFTHSM2_CONF is not set; SoftHSM2 will use its system-wide config (/etc/softhsm/softhsm2.conf)"
                );
            }
            let so_pin = read_pin(&so_pin_file, "--so-pin-file")?;
            let pin = read_pin(&pin_file, "--pin-file")?;
            let (task_label, task_module) = (label.clone(), module.clone());
            let (setup, identity) = tokio::task::spawn_blocking(move || {
                provision::init_or_verify(&task_module, &task_label, &so_pin, &pin, sole)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e} ({})", e.code()))?;
            match format {
                Format::Text => println!(
                    "token {:?} (serial {}): {setup:?}",
                    identity.label, identity.serial
                ),
                Format::Env => {
                    let setup = serde_json::to_value(setup).expect("serializes");
                    println!("SIGNETD_PKCS11_MODULE={}", module.display());
                    println!("SIGNETD_TOKEN_LABEL={}", identity.label);
                    println!("SIGNETD_TOKEN_SERIAL={}", identity.serial);
                    println!("SIGNETD_TOKEN_SETUP={}", setup.as_str().unwrap_or("?"));
                }
            }
            let mut log = Transcript::start("init-token", &identity);
            log.created.push(Created {
                kind: "token".to_string(),
                id: identity.label.clone(),
                sha256: None,
                detail: format!("{setup:?} (serial {})", identity.serial).to_lowercase(),
            });
            record(&transcript, log, None, Ok(())).await
        }
        CeremonyCommand::Pending { dir, config } => {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                return Ok(());
            };
            let ca = match &config {
                Some(config) => {
                    let opened = super::open_keys(config, false).await?;
                    signetd::attest::ca::ready(&opened.hsm, opened.meta())
                        .await
                        .ok()
                }
                None => None,
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
                .collect();
            files.sort();
            for file in files {
                match is_pending(&file) {
                    Some(true) => match ca.as_ref().and_then(|ca| other_ca(&file, ca)) {
                        Some(named) => eprintln!(
                            "warning: {} stays pending: it records attestation CA key sha256 {named}, which is not this CA's (destroyed by attest init-ca --undo)",
                            file.display()
                        ),
                        None => println!("{}", file.display()),
                    },
                    Some(false) => {}
                    None => eprintln!("warning: {} is not valid JSON; skipped", file.display()),
                }
            }
            Ok(())
        }
        CeremonyCommand::Sign {
            config,
            transcripts,
        } => {
            let opened = super::open_keys(&config.config, false).await?;
            let ca = signetd::attest::ca::ready(&opened.hsm, opened.meta())
                .await
                .map_err(|e| e.to_string())?;
            // One refused transcript does not keep the others unsigned: each is tried,
            // each failure said (naming its file), and the exit status tells whether
            // any was not signed.
            let mut refused = 0;
            for path in &transcripts {
                match ceremony::sign_pending(path, &opened.hsm, &ca).await {
                    Ok(true) => println!("signed {}", path.display()),
                    Ok(false) => println!("{} was already signed", path.display()),
                    Err(e) => {
                        eprintln!("signetd: {e}");
                        refused += 1;
                    }
                }
            }
            match refused {
                0 => Ok(()),
                n => Err(format!(
                    "{n} of {} transcript(s) not signed (above)",
                    transcripts.len()
                )),
            }
        }
        CeremonyCommand::Verify {
            transcript,
            root,
            config,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let root_der = from_pem(&read(&root)?)?.remove(0);
            let verified = ceremony::verify(&read(&transcript)?, &root_der)
                .map_err(|e| format!("transcript {} is invalid: {e}", transcript.display()))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&verified).expect("serializes")
            );
            let mut flags = Vec::new();
            if verified.outcome != "completed" {
                flags.push(format!(
                    "the ceremony did not complete ({})",
                    verified.outcome
                ));
            }
            if let Some(config) = &config {
                flags.extend(against_token(&verified, config).await?);
            }
            for flag in &flags {
                println!("flag: {flag}");
            }
            println!(
                "verdict: valid (signed by the attestation CA, anchored at {}){}",
                root.display(),
                if flags.is_empty() { "" } else { "; flagged" }
            );
            Ok(())
        }
    }
}

/// What in `transcript` the token and store `config` names disagree with: another token,
/// or a key it created that the token no longer holds (destroyed, or never finished) or
/// holds with another certificate.
async fn against_token(transcript: &Transcript, config: &Path) -> Result<Vec<String>, String> {
    let keys = super::open_keys(config, false).await?;
    let inventory = signetd::keys::store::inventory(&keys.hsm, keys.meta())
        .await
        .map_err(|e| format!("cannot read the keys: {e}"))?;
    let token = keys.hsm.token();
    let mut flags = Vec::new();
    if transcript.token.serial != token.serial {
        flags.push(format!(
            "it is a transcript of token {:?} serial {}, not of this config's token {:?} serial {}",
            transcript.token.label, transcript.token.serial, token.label, token.serial
        ));
    }
    for key in transcript
        .created
        .iter()
        .filter(|c| c.kind == ceremony::ISSUER_KEY_KIND)
    {
        match inventory.keys.iter().find(|k| k.kid == key.id) {
            None => flags.push(format!(
                "key {} it created is not in the token (destroyed, never finished, or another token's)",
                key.id
            )),
            Some(held) if key.sha256 != Some(super::sha256_hex(&held.certificate)) => {
                flags.push(format!(
                    "key {} is in the token with another certificate than the transcript records",
                    key.id
                ))
            }
            Some(_) => {}
        }
    }
    Ok(flags)
}
