//! `signetd audit`: verify a log offline, and find the record of a token.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;
use signetd::attest::certificate::from_pem;
use signetd::audit::verify::{self, Location, Summary};

/// `signetd audit ...`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every hash link, sequence number and checkpoint signature of a log. Exits
    /// 0 if it is intact, 1 with the first break (segment, line, seq, what) if not.
    /// Records after the last checkpoint (a live log's normal state) are chained but not
    /// yet signed: reported as "N records not yet covered by a checkpoint", exit 0
    /// unless --require-signed.
    Verify(LogArgs),
    /// Find the record of a token (by jti or by the SHA-256 of the exact token string)
    /// or of a raw signature (by the SHA-256 of the signed input), after verifying the
    /// log, and say which signed checkpoint covers it.
    Find {
        /// The token's jti.
        // A jti is base64url: one in 64 starts with '-', which is a value here, not an
        // option (the crash soak found `--jti -z...` refused).
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "token_sha256",
            required_unless_present = "token_sha256"
        )]
        jti: Option<String>,
        /// Lowercase hex SHA-256 of the compact token (or of a raw signature's input).
        #[arg(long)]
        token_sha256: Option<String>,
        #[command(flatten)]
        log: LogArgs,
    },
}

/// The log and the root to check it against.
#[derive(Args)]
pub struct LogArgs {
    /// The operator's attestation root certificate (PEM), which the audit key's
    /// certificate chain must lead to.
    #[arg(long)]
    root: PathBuf,
    /// Fail (exit 1) if any record follows the last signed checkpoint, as in a log
    /// that is still being written or whose final checkpoint could not be written:
    /// for an archived log that must be wholly signed.
    #[arg(long)]
    require_signed: bool,
    /// Accepted and ignored, for scripts written when a tail had to be allowed
    /// explicitly: it is accepted by default now.
    #[arg(long, hide = true, conflicts_with = "require_signed")]
    allow_unsigned_tail: bool,
    /// The log directory, or segment files in order.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

/// Runs an `audit` command.
pub async fn run(command: AuditCommand) -> Result<(), String> {
    match command {
        AuditCommand::Verify(log) => {
            let summary = check(&log, &mut |_, _, _| {})?;
            report(&summary);
            Ok(())
        }
        AuditCommand::Find {
            jti,
            token_sha256,
            log,
        } => {
            let (name, wanted) = match (&jti, &token_sha256) {
                (Some(j), _) => ("jti", j.clone()),
                (None, Some(h)) => ("token_sha256", h.to_ascii_lowercase()),
                (None, None) => unreachable!("clap requires one"),
            };
            let mut found: Vec<(Location, String)> = Vec::new();
            let summary = check(&log, &mut |at, record, line| {
                if record.get(name).and_then(Value::as_str) == Some(wanted.as_str()) {
                    found.push((at.clone(), String::from_utf8_lossy(line).into_owned()));
                }
            })?;
            if found.is_empty() {
                return Err(format!(
                    "no record with {name} {wanted} in {} records (seq {}..={}) of log {}",
                    summary.records, summary.seqs.0, summary.seqs.1, summary.log_id
                ));
            }
            let mut uncovered = false;
            for (at, line) in &found {
                let seq = at.seq.unwrap_or_default();
                let covered = match summary.covering_checkpoint(seq) {
                    Some(c) => format!("covered by the signed checkpoint at seq {c}"),
                    None => {
                        uncovered = true;
                        "not yet covered by a signed checkpoint".to_string()
                    }
                };
                println!("{at}: {covered}");
                println!("{line}");
            }
            if uncovered {
                eprintln!(
                    "note: a record after the last checkpoint proves nothing yet; look again after the next checkpoint"
                );
            }
            Ok(())
        }
    }
}

fn check(
    log: &LogArgs,
    visit: &mut dyn FnMut(&Location, &Value, &[u8]),
) -> Result<Summary, String> {
    let root = read_root(&log.root)?;
    let paths = verify::segment_paths(&log.paths)?;
    // `allow_unsigned_tail` is a no-op kept for old scripts: see LogArgs.
    let _ = log.allow_unsigned_tail;
    verify::verify(&paths, &root, !log.require_signed, visit)
        .map_err(|b| format!("audit log broken at {b}"))
}

/// What a tail after the last checkpoint means, in one line.
fn uncovered(summary: &Summary) -> String {
    let since = summary.checkpoints.last().map_or_else(
        || "no checkpoint has been written yet".to_string(),
        |seq| format!("they follow the last checkpoint (seq {seq})"),
    );
    format!(
        "{} records not yet covered by a checkpoint: {since}; chained but not yet signed (a live log's normal state; --require-signed refuses it)",
        summary.unsigned_tail
    )
}

fn read_root(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    from_pem(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))
}

fn report(summary: &Summary) {
    println!(
        "audit log {}: intact: {} records (seq {}..={}) in {} segment(s), {} signed checkpoint(s) by audit key(s) {}",
        summary.log_id,
        summary.records,
        summary.seqs.0,
        summary.seqs.1,
        summary.segments,
        summary.checkpoints.len(),
        if summary.audit_keys.is_empty() {
            "(none)".to_string()
        } else {
            summary.audit_keys.join(", ")
        }
    );
    if !summary.replicas.is_empty() {
        println!("written by replica(s): {}", summary.replicas.join(", "));
    }
    if summary.refusals + summary.refusal_aggregates > 0 {
        println!(
            "refusals: {} recorded one by one; {} more in {} refused_aggregate record(s)",
            summary.refusals, summary.refusals_folded, summary.refusal_aggregates
        );
    }
    if !summary.from_genesis {
        println!(
            "note: the first segment given is not the log's first; records before seq {} were not checked",
            summary.seqs.0
        );
    }
    if summary.unsigned_tail > 0 {
        println!("{}", uncovered(summary));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::AuditCommand;

    #[derive(Parser)]
    struct Audit {
        #[command(subcommand)]
        command: AuditCommand,
    }

    /// Regression: clap took a jti starting with '-' (base64url, one in 64) for a short
    /// option, so `audit find --jti -zQ...` failed with "unexpected argument '-z'".
    #[test]
    fn a_jti_starting_with_a_hyphen_is_a_value() {
        let args = [
            "audit", "find", "--root", "root.pem", "--jti", "-zQ1w", "log",
        ];
        match Audit::try_parse_from(args).map(|a| a.command) {
            Ok(AuditCommand::Find { jti, .. }) => assert_eq!(jti.as_deref(), Some("-zQ1w")),
            Ok(_) => panic!("parsed as another command"),
            Err(e) => panic!("{e}"),
        }
    }
}
