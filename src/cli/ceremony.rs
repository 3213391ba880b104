//! `signetd ceremony`: token initialization and transcripts.

use std::path::PathBuf;

use clap::Subcommand;
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
        /// The PKCS#11 module.
        #[arg(long)]
        module: PathBuf,
        /// The token label.
        #[arg(long)]
        label: String,
        /// File holding the security officer PIN.
        #[arg(long)]
        so_pin_file: PathBuf,
        /// File holding the user PIN.
        #[arg(long)]
        pin_file: PathBuf,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Sign pending transcripts (written before the attestation CA existed) with the CA key.
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        /// Transcript files.
        #[arg(required = true)]
        transcripts: Vec<PathBuf>,
    },
    /// Verify a transcript against the operator's root, and print it.
    Verify {
        /// The transcript file.
        transcript: PathBuf,
        /// The trusted root certificate (PEM).
        #[arg(long)]
        root: PathBuf,
    },
}

fn read_pin(path: &PathBuf) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(SecretString::from(text.trim_end()))
}

/// Runs a ceremony command.
pub async fn run(command: CeremonyCommand) -> Result<(), String> {
    match command {
        CeremonyCommand::InitToken {
            module,
            label,
            so_pin_file,
            pin_file,
            transcript,
        } => {
            let (so_pin, pin) = (read_pin(&so_pin_file)?, read_pin(&pin_file)?);
            let task_label = label.clone();
            let (setup, identity) = tokio::task::spawn_blocking(move || {
                provision::init_or_verify(&module, &task_label, &so_pin, &pin)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e} ({})", e.code()))?;
            println!(
                "token {:?} (serial {}): {setup:?}",
                identity.label, identity.serial
            );
            let mut log = Transcript::start("init-token", &identity);
            log.created.push(Created {
                kind: "token".to_string(),
                id: identity.label.clone(),
                sha256: None,
                detail: format!("{setup:?} (serial {})", identity.serial).to_lowercase(),
            });
            record(&transcript, log, None, Ok(())).await
        }
        CeremonyCommand::Sign {
            config,
            transcripts,
        } => {
            let (_, hsm) = super::open(&config.config).await?;
            let ca = signetd::attest::ca::ready(&hsm)
                .await
                .map_err(|e| e.to_string())?;
            for path in transcripts {
                if ceremony::sign_pending(&path, &hsm, &ca).await? {
                    println!("signed {}", path.display());
                } else {
                    println!("{} was already signed", path.display());
                }
            }
            Ok(())
        }
        CeremonyCommand::Verify { transcript, root } => {
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
            println!(
                "verdict: valid (signed by the attestation CA, anchored at {})",
                root.display()
            );
            Ok(())
        }
    }
}
