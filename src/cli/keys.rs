//! `signetd keys`: issuer keys, directly on the token and the state store.

use clap::Subcommand;
use serde_json::json;
use signetd::Algorithm;
use signetd::api::wire;
use signetd::ceremony::{Created, Transcript};
use signetd::keys::{self, KeyState, KeyStoreError, StoredKey};
use signetd::service::KeyView;

use super::{ConfigArg, TranscriptArg, record, sha256_hex};

/// Key commands.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Generate and attest the first signing key of an issuer inside the token, active at
    /// once. Needs the attestation CA. A running daemon picks the key up within one
    /// lifecycle tick (`lifecycle.tick_seconds`) and records it in its audit log.
    Generate {
        #[command(flatten)]
        config: ConfigArg,
        /// The issuer (a name under [issuers] in the config).
        #[arg(long)]
        issuer: String,
        /// Override the issuer's configured algorithm.
        #[arg(long)]
        algorithm: Option<Algorithm>,
        /// Succeed without generating if the issuer already has an active key; then
        /// nothing is done and no transcript is written.
        #[arg(long)]
        if_missing: bool,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Generate and attest the next key of an issuer as `pending`: a running daemon
    /// publishes it within one lifecycle tick and activates it after
    /// `lifecycle.prepublish_seconds`.
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// The issuer.
        #[arg(long)]
        issuer: String,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Mark an active or pending key `retired`: it stops signing (in a running daemon,
    /// within one lifecycle tick) and stays published until the tokens it signed expire.
    Retire {
        #[command(flatten)]
        config: ConfigArg,
        /// The key id.
        #[arg(long)]
        kid: String,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Revoke a key (compromise): out of the JWKS at once and listed in revocations. A
    /// running daemon applies it within one lifecycle tick.
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The key id.
        #[arg(long)]
        kid: String,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Complete a key whose generation was interrupted (issue its certificate, write its record).
    Finish {
        #[command(flatten)]
        config: ConfigArg,
        /// The key id.
        #[arg(long)]
        kid: String,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Undo a key whose generation was interrupted; complete keys are never destroyed.
    DestroyIncomplete {
        #[command(flatten)]
        config: ConfigArg,
        /// The key id.
        #[arg(long)]
        kid: String,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// List signetd's keys (the state store's records matched with the token's key
    /// pairs), with state and token attributes, and report anything incomplete or
    /// missing.
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only keys of this issuer (one the config names).
        #[arg(long)]
        issuer: Option<String>,
        /// Print JSON instead of a table (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// `table`, `json`, `kids` (one kid per line), or `problems`: the incomplete
        /// keys with the commands that finish or undo each; nothing when there are none.
        #[arg(long, value_enum)]
        format: Option<ListFormat>,
        /// With `--format problems`: the commands named write their transcript into
        /// this directory.
        #[arg(long)]
        transcript_dir: Option<std::path::PathBuf>,
    },
}

/// How `keys list` reports.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// A table for people.
    Table,
    /// One JSON object: the token, the keys, the problems.
    Json,
    /// The kids alone, one per line.
    Kids,
    /// What an interrupted ceremony left behind, and how to finish or undo it.
    Problems,
}

/// The report of `keys list --format problems`, naming the commands with `config` (and a
/// transcript in `transcripts`, if given).
fn problems_report(
    problems: &[String],
    config: &std::path::Path,
    transcripts: Option<&std::path::Path>,
) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "the token holds {} incomplete or unusable key(s):\n",
        problems.len()
    );
    let mut kids: Vec<&str> = Vec::new();
    for problem in problems {
        out += &format!("  - {problem}\n");
        let kid = problem
            .strip_prefix("key ")
            .and_then(|rest| {
                rest.split(|c: char| !(c.is_ascii_alphanumeric() || "._~-".contains(c)))
                    .next()
            })
            .filter(|kid| !kid.is_empty());
        if let Some(kid) = kid.filter(|kid| !kids.contains(kid)) {
            kids.push(kid);
        }
    }
    if !kids.is_empty() {
        let signetd = std::env::args()
            .next()
            .unwrap_or_else(|| "signetd".to_string());
        let config = config.display();
        let transcript = |ceremony: &str, kid: &str| {
            transcripts.map_or_else(String::new, |dir| {
                let file = dir.join(format!("{ceremony}-{kid}.json"));
                format!(" --transcript {}", file.display())
            })
        };
        out += "\nAn interrupted key generation is finished or undone with:\n";
        for kid in kids {
            out += &format!(
                "  finish: {signetd} keys finish --config {config} --kid {kid}{}\n",
                transcript("finish", kid)
            );
            out += &format!(
                "  undo:   {signetd} keys destroy-incomplete --config {config} --kid {kid}{}\n",
                transcript("destroy-incomplete", kid)
            );
        }
        out += "(see docs/ceremonies.md, \"Recovering from a failure midway\")\n";
    }
    out
}

fn created(key: &StoredKey, kind: &str) -> Created {
    created_row(
        &key.kid,
        &key.issuer,
        key.algorithm,
        key.state,
        &key.certificate,
        kind,
    )
}

fn created_row(
    kid: &str,
    issuer: &str,
    algorithm: Algorithm,
    state: KeyState,
    certificate: &[u8],
    kind: &str,
) -> Created {
    Created {
        kind: kind.to_string(),
        id: kid.to_string(),
        sha256: Some(sha256_hex(certificate)),
        detail: format!("issuer {issuer}, {algorithm}, state {state:?}").to_lowercase(),
    }
}

/// The issuer `name` of the config; an error naming the configured issuers if there is
/// none.
fn known_issuer<'a>(
    config: &'a signetd::Config,
    name: &str,
) -> Result<&'a signetd::config::IssuerConfig, String> {
    config.issuer(name).ok_or_else(|| {
        let known: Vec<&str> = config.issuers.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        format!(
            "unknown issuer {name:?}: the config names {known}; add [issuers.{name}] to the config first"
        )
    })
}

/// Who the CLI's changes are by, in each key's state history.
fn actor() -> String {
    format!("cli uid {}", rustix::process::getuid().as_raw())
}

/// Moves a key to `state` in the state store, recording the `ceremony`.
async fn change_state(
    config: &ConfigArg,
    kid: &str,
    state: KeyState,
    ceremony: &str,
    transcript: &TranscriptArg,
) -> Result<(), String> {
    let opened = super::open_keys(&config.config, true).await?;
    let mut log = Transcript::start(ceremony, opened.hsm.token());
    let outcome = keys::store::transition(opened.meta(), kid, state, &actor())
        .await
        .map(|key| {
            println!(
                "key {} of issuer {} is {}",
                key.kid,
                key.issuer,
                format!("{state:?}").to_lowercase()
            );
            let (kid, issuer, alg) = (&key.kid, &key.issuer, key.algorithm);
            log.created.push(created_row(
                kid,
                issuer,
                alg,
                state,
                &key.certificate,
                "key-state",
            ));
        })
        .map_err(|e| e.to_string());
    record(transcript, log, Some(&opened), outcome).await
}

/// Runs a keys command.
pub async fn run(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Generate {
            config,
            issuer,
            algorithm,
            if_missing,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, true).await?;
            let issuer_config = known_issuer(&opened.config, &issuer)?;
            let algorithm = algorithm.unwrap_or(issuer_config.algorithm);
            let days = opened.config.attestation.key_certificate_days;
            let mut log = Transcript::start("issuer-key", opened.hsm.token());
            let generated = keys::store::generate(
                &opened.hsm,
                opened.meta(),
                &issuer,
                algorithm,
                issuer_config.key_purpose(),
                days,
                &actor(),
            )
            .await;
            if let Err(KeyStoreError::ActiveKeyExists { kid, .. }) = &generated
                && if_missing
            {
                // Nothing happened, so there is nothing to record: a "completed"
                // transcript would claim a ceremony that did not take place.
                println!(
                    "issuer {issuer} already has active key {kid}: nothing was done (no key generated, no transcript written)"
                );
                return Ok(());
            }
            let outcome = match generated {
                Ok(key) => {
                    println!(
                        "generated and attested {} key {} for issuer {issuer} (active)",
                        key.algorithm, key.kid
                    );
                    log.created
                        .push(created(&key, signetd::ceremony::ISSUER_KEY_KIND));
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            record(&transcript, log, Some(&opened), outcome).await
        }
        KeysCommand::Rotate {
            config,
            issuer,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, true).await?;
            let issuer_config = known_issuer(&opened.config, &issuer)?;
            let mut log = Transcript::start("rotate", opened.hsm.token());
            let outcome = keys::store::prepare_rotation(
                &opened.hsm,
                opened.meta(),
                &issuer,
                issuer_config.algorithm,
                issuer_config.key_purpose(),
                opened.config.attestation.key_certificate_days,
                &actor(),
            )
            .await
            .map(|key| {
                println!(
                    "generated and attested {} key {} for issuer {issuer} (pending)",
                    key.algorithm, key.kid
                );
                log.created
                    .push(created(&key, signetd::ceremony::ISSUER_KEY_KIND));
            })
            .map_err(|e| e.to_string());
            record(&transcript, log, Some(&opened), outcome).await
        }
        KeysCommand::Retire {
            config,
            kid,
            transcript,
        } => change_state(&config, &kid, KeyState::Retired, "retire", &transcript).await,
        KeysCommand::Revoke {
            config,
            kid,
            transcript,
        } => change_state(&config, &kid, KeyState::Revoked, "revoke", &transcript).await,
        KeysCommand::Finish {
            config,
            kid,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, false).await?;
            let days = opened.config.attestation.key_certificate_days;
            let mut log = Transcript::start("finish", opened.hsm.token());
            let outcome = keys::store::finish(&opened.hsm, opened.meta(), &kid, days, &actor())
                .await
                .map(|key| {
                    println!(
                        "key {} of issuer {} is complete ({})",
                        key.kid, key.issuer, key.state
                    );
                    log.created
                        .push(created(&key, signetd::ceremony::ISSUER_KEY_KIND));
                })
                .map_err(|e| e.to_string());
            record(&transcript, log, Some(&opened), outcome).await
        }
        KeysCommand::DestroyIncomplete {
            config,
            kid,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, false).await?;
            let mut log = Transcript::start("destroy-incomplete", opened.hsm.token());
            let outcome = keys::store::destroy_incomplete(&opened.hsm, opened.meta(), &kid)
                .await
                .map(|()| {
                    println!("destroyed incomplete key {kid}");
                    log.created.push(Created {
                        kind: "destroyed-incomplete-key".to_string(),
                        id: kid.clone(),
                        sha256: None,
                        detail: "key pair of an interrupted generation destroyed".to_string(),
                    });
                })
                .map_err(|e| e.to_string());
            record(&transcript, log, Some(&opened), outcome).await
        }
        KeysCommand::List {
            config,
            issuer,
            json,
            format,
            transcript_dir,
        } => {
            let format = match (json, format) {
                (true, _) => ListFormat::Json,
                (false, format) => format.unwrap_or(ListFormat::Table),
            };
            let config_path = config.config;
            let opened = super::open_keys(&config_path, false).await?;
            if let Some(issuer) = &issuer {
                known_issuer(&opened.config, issuer)?;
            }
            let hsm = &opened.hsm;
            let inventory = keys::store::inventory(hsm, opened.meta())
                .await
                .map_err(|e| e.to_string())?;
            let chain = match signetd::attest::ca::load(hsm, opened.meta()).await {
                Ok(signetd::attest::CaState::Ready(ca)) => ca.chain,
                _ => Vec::new(),
            };
            let shown: Vec<KeyView> = inventory
                .keys
                .iter()
                .filter(|k| issuer.as_deref().is_none_or(|i| i == k.issuer))
                .map(|k| KeyView::new(k, &chain))
                .collect();
            match format {
                ListFormat::Kids => {
                    shown.iter().for_each(|key| println!("{}", key.kid));
                    return Ok(());
                }
                ListFormat::Problems => {
                    let dir = transcript_dir.as_deref();
                    print!(
                        "{}",
                        problems_report(&inventory.problems, &config_path, dir)
                    );
                    return Ok(());
                }
                ListFormat::Json | ListFormat::Table => {}
            }
            if format == ListFormat::Json {
                // The same key objects the API returns.
                let shown: Vec<wire::KeyView> = shown.into_iter().map(Into::into).collect();
                let out =
                    json!({"token": hsm.token(), "keys": shown, "problems": inventory.problems});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out).expect("serializes")
                );
                return Ok(());
            }
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
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::problems_report;
    use std::path::Path;

    #[test]
    fn problems_name_the_commands_for_each_incomplete_key_once() {
        assert_eq!(problems_report(&[], Path::new("c.toml"), None), "");
        let problems = [
            "key es-1 has no certificate".to_string(),
            "key es-1 has no state record".to_string(),
            "state record \"x\" is unreadable: eof".to_string(),
        ];
        let report = problems_report(&problems, Path::new("c.toml"), None);
        assert!(
            report.starts_with("the token holds 3 incomplete"),
            "{report}"
        );
        assert_eq!(
            report
                .matches("keys finish --config c.toml --kid es-1\n")
                .count(),
            1
        );
        assert_eq!(
            report
                .matches("keys destroy-incomplete --config c.toml --kid es-1\n")
                .count(),
            1
        );
        let report = problems_report(&problems, Path::new("c.toml"), Some(Path::new("t")));
        assert!(
            report.contains("keys finish --config c.toml --kid es-1 --transcript t/finish-es-1.json\n")
                && report.contains(
                    "keys destroy-incomplete --config c.toml --kid es-1 --transcript t/destroy-incomplete-es-1.json\n"
                ),
            "{report}"
        );
    }
}
