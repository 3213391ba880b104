//! `signetd audit`: verify a log offline, find the record of a token, and print the
//! checkpoints and proofs that other tools check (C2SP signed notes, RFC 6962 proofs).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use signetd::attest::certificate::from_pem;
use signetd::audit::note::{self, TreeHead};
use signetd::audit::tree::{Keep, StoredHashes, VerifiedTree};
use signetd::audit::verify::{self, Location, NoteCheckpoint, Summary};

/// `signetd audit ...`
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every hash link, sequence number and checkpoint signature of a log. Exits
    /// 0 if it is intact, 1 with the first break (segment, line, seq, what) if not.
    /// Records after the last checkpoint (a live log's normal state) are chained but not
    /// yet signed: reported as "N records not yet covered by a checkpoint", exit 0
    /// unless --require-signed. Every checkpoint's signature is checked, and its root
    /// against the records before it.
    Verify {
        /// A signed checkpoint kept elsewhere (a monitor's or a witness's copy, as
        /// `audit checkpoint` prints it): the log must extend it. A log cut back or
        /// rewritten behind it fails, even when it is consistent in itself.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Find the record of a token (by jti or by the SHA-256 of the exact token string)
    /// or of a raw signature (by the SHA-256 of the signed input), after verifying the
    /// log, and say which signed checkpoint covers it. With --json, print for each
    /// record its exact line, leaf index, inclusion proof and the signed checkpoint
    /// that covers it, with the verifier key, for another tool to check.
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
        /// Print one JSON object per record found: record, index, tree_size, proof
        /// (base64 hashes), checkpoint (the signed note) and verifier_key.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Print the log's latest signed checkpoint (a C2SP signed note), exactly as
    /// signed, for a monitor or a witness to keep, after verifying the log.
    Checkpoint(LogArgs),
    /// Print the note verifier keys (`name+keyid+base64key`) of the audit keys whose
    /// checkpoints the log holds, one per line, after verifying the log.
    VerifierKey(LogArgs),
    /// Prove that the log's latest checkpoint extends an older one: print, as JSON,
    /// old_checkpoint, new_checkpoint, proof (RFC 6962 consistency proof, base64
    /// hashes) and verifier_key. With --witness, print instead the body of a C2SP
    /// tlog-witness add-checkpoint request (docs/audit.md, "Witnesses").
    Prove {
        /// The older signed checkpoint (as `audit checkpoint` printed it): with
        /// --witness, the last one the witness cosigned. Without it, --witness asks
        /// from size 0 (a witness's first checkpoint of this log).
        #[arg(long, value_name = "FILE", required_unless_present = "witness")]
        from: Option<PathBuf>,
        /// With --witness: prove from this tree size instead of a kept checkpoint (the
        /// size a witness's `409` answer names).
        #[arg(long, value_name = "N", requires = "witness", conflicts_with = "from")]
        old_size: Option<u64>,
        /// Print the add-checkpoint request body: `old N`, the proof lines, an empty
        /// line, the latest checkpoint.
        #[arg(long)]
        witness: bool,
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
        AuditCommand::Verify { checkpoint, log } => {
            let kept = checkpoint.as_deref().map(read_checkpoint).transpose()?;
            let mut sizes = std::collections::BTreeSet::new();
            if let (Some(path), Some(text)) = (&checkpoint, &kept) {
                // The size it states, unverified: the root to keep while verifying.
                // Its signature is checked after, against the log's audit keys.
                sizes.insert(verify::kept_size(text).ok_or_else(|| {
                    format!(
                        "{} is not a signed checkpoint (origin, tree size and root hash lines, a blank line, signatures)",
                        path.display()
                    )
                })?);
            }
            let (summary, tree) = check(&log, Keep::Roots(sizes), &mut |_, _, _| {})?;
            report(&summary);
            if let (Some(path), Some(text)) = (checkpoint, kept) {
                let (head, _) = kept_checkpoint(&path, text, &summary, &tree)?;
                println!(
                    "{}: the log extends this checkpoint ({} records, root {})",
                    path.display(),
                    head.size,
                    head.root
                );
            }
            Ok(())
        }
        AuditCommand::Find {
            jti,
            token_sha256,
            json,
            log,
        } => {
            let (name, wanted) = match (&jti, &token_sha256) {
                (Some(j), _) => ("jti", j.clone()),
                (None, Some(h)) => ("token_sha256", h.to_ascii_lowercase()),
                (None, None) => unreachable!("clap requires one"),
            };
            let mut found: Vec<(Location, String)> = Vec::new();
            // Inclusion proofs need every stored hash; a plain search only the edge.
            let keep = if json {
                Keep::Everything
            } else {
                Keep::Roots(Default::default())
            };
            let (summary, tree) = check(&log, keep, &mut |at, record, line| {
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
            if json {
                for (at, line) in &found {
                    let seq = at.seq.unwrap_or_default();
                    println!("{}", inclusion(&summary, stored(&tree)?, seq, line)?);
                }
                return Ok(());
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
        AuditCommand::Checkpoint(log) => {
            let (summary, _) = check(&log, Keep::Roots(Default::default()), &mut |_, _, _| {})?;
            print!("{}", latest(&summary)?.note);
            Ok(())
        }
        AuditCommand::VerifierKey(log) => {
            let (summary, _) = check(&log, Keep::Roots(Default::default()), &mut |_, _, _| {})?;
            latest(&summary)?;
            for key in summary.verifier_keys() {
                println!("{key}");
            }
            Ok(())
        }
        AuditCommand::Prove {
            from,
            old_size,
            witness,
            log,
        } => {
            let (summary, tree) = check(&log, Keep::Everything, &mut |_, _, _| {})?;
            let old = match &from {
                Some(path) => Some(kept_checkpoint(
                    path,
                    read_checkpoint(path)?,
                    &summary,
                    &tree,
                )?),
                None => None,
            };
            let old_size = old
                .as_ref()
                .map_or(old_size.unwrap_or(0), |(head, _)| head.size);
            let new = latest(&summary)?;
            let new_head = TreeHead::parse(note::text_of(&new.note))?;
            if old_size > new_head.size {
                return Err(format!(
                    "the older checkpoint ({old_size} records) is newer than the log's latest ({})",
                    new_head.size
                ));
            }
            let proof: Vec<String> = if old_size == 0 || old_size == new_head.size {
                Vec::new()
            } else {
                tlog_tiles::prove_tree(new_head.size, old_size, stored(&tree)?)
                    .map_err(|e| format!("proving {} from {old_size}: {e}", new_head.size))?
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            };
            if witness {
                println!("old {old_size}");
                for hash in &proof {
                    println!("{hash}");
                }
                print!("\n{}", new.note);
                return Ok(());
            }
            let (_, old_text) = old.expect("clap requires --from without --witness");
            let bundle = json!({
                "old_checkpoint": old_text,
                "new_checkpoint": new.note,
                "proof": proof,
                "verifier_key": new.verifier_key,
            });
            println!("{bundle}");
            Ok(())
        }
    }
}

/// The inclusion bundle of record `seq` (exact line `line`) under the first signed
/// checkpoint that covers it.
fn inclusion(
    summary: &Summary,
    tree: &StoredHashes,
    seq: u64,
    line: &str,
) -> Result<Value, String> {
    if !summary.from_genesis {
        return Err("proofs need the whole log, from its genesis record".into());
    }
    let covering = summary.covering_note(seq).ok_or_else(|| {
        format!("the record at seq {seq} is not yet covered by a signed checkpoint: look again after the next checkpoint")
    })?;
    let proof = tlog_tiles::prove_record(covering.seq, seq, tree)
        .map_err(|e| format!("proving record {seq} in {}: {e}", covering.seq))?;
    Ok(json!({
        "record": line,
        "index": seq,
        "tree_size": covering.seq,
        "proof": proof.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "checkpoint": covering.note,
        "verifier_key": covering.verifier_key,
    }))
}

/// The log's latest signed-note checkpoint.
fn latest(summary: &Summary) -> Result<&NoteCheckpoint, String> {
    summary.last_note.as_ref().ok_or_else(|| {
        format!(
            "log {} holds no signed-note checkpoint yet (logs of versions before 0.2 hold JWS checkpoints only)",
            summary.log_id
        )
    })
}

/// Reads the checkpoint kept at `path`.
fn read_checkpoint(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every stored hash of a tree verified with [`Keep::Everything`], which proofs need.
fn stored(tree: &VerifiedTree) -> Result<&StoredHashes, String> {
    tree.stored()
        .ok_or_else(|| "internal: the log was verified without keeping its tree for proofs".into())
}

/// Checks the log against checkpoint `text`, kept at `path`. Returns what it states and
/// its exact text (a signed note is UTF-8).
fn kept_checkpoint(
    path: &Path,
    text: Vec<u8>,
    summary: &Summary,
    tree: &VerifiedTree,
) -> Result<(TreeHead, String), String> {
    let head = verify::against(summary, tree, &text).map_err(|e| {
        format!(
            "audit log does not match the checkpoint {}: {e}",
            path.display()
        )
    })?;
    let text = String::from_utf8(text).expect("a note that opened is UTF-8");
    Ok((head, text))
}

/// Verifies the log, keeping of its tree what `keep` asks.
fn check(
    log: &LogArgs,
    keep: Keep,
    visit: &mut dyn FnMut(&Location, &Value, &[u8]),
) -> Result<(Summary, VerifiedTree), String> {
    let root = read_root(&log.root)?;
    let paths = verify::segment_paths(&log.paths)?;
    // `allow_unsigned_tail` is a no-op kept for old scripts: see LogArgs.
    let _ = log.allow_unsigned_tail;
    verify::verify_tree(&paths, &root, !log.require_signed, keep, visit)
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
    if summary.unbound_checkpoints > 0 {
        println!(
            "note: {} signed checkpoint(s) state trees that include records before seq {}, which were not given: they cover nothing here (verify the whole log)",
            summary.unbound_checkpoints, summary.seqs.0
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
