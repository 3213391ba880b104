//! `signetd attest`: the attestation CA, and verifying attestations.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use clap::Subcommand;
use serde_json::json;
use signetd::attest::certificate::{from_pem, to_pem};
use signetd::attest::{self, CaState, verify};
use signetd::ceremony::{Created, Transcript};
use signetd::keys::{JwkSet, KeyRegistry};

use super::{ConfigArg, TranscriptArg, key_state, record, sha256_hex};

/// Attestation commands.
#[derive(Subcommand)]
pub enum AttestCommand {
    /// Show the attestation CA's state: missing, awaiting-certificate or ready.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON (the same as `--format json`).
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// `text`, `json`, or `state`: the state alone, for scripts.
        #[arg(long, value_enum)]
        format: Option<StatusFormat>,
    },
    /// Create the attestation CA key in the token and certify it: self-signed, or a
    /// PKCS#10 request for the operator's CA (then `import-chain`). `--undo` destroys a
    /// CA key that was never certified.
    InitCa {
        #[command(flatten)]
        config: ConfigArg,
        /// Certify the CA key with a self-signed certificate.
        #[arg(long, conflicts_with_all = ["csr", "undo"], required_unless_present_any = ["csr", "undo"])]
        self_signed: bool,
        /// Write a certificate request for the operator's CA to this file (PEM).
        #[arg(long, conflicts_with = "undo")]
        csr: Option<PathBuf>,
        /// Destroy a CA key that was never certified; with `--transcript`, record what was
        /// destroyed (pending: there is no CA left to sign it).
        #[arg(long)]
        undo: bool,
        /// The CA's common name.
        #[arg(long, default_value = "signetd attestation CA")]
        subject: String,
        /// Validity of a self-signed CA certificate, in days.
        #[arg(long, default_value_t = 7300)]
        days: u32,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Import the chain the operator's CA returned (PEM: the CA's certificate first,
    /// then the certificates above it).
    ImportChain {
        #[command(flatten)]
        config: ConfigArg,
        /// The chain file.
        chain: PathBuf,
        #[command(flatten)]
        transcript: TranscriptArg,
    },
    /// Write the public bundle for verifiers: root.pem, ca-chain.pem, keys/KID.pem, jwks.json.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a key's attestation chain against a trusted root; prints each check. With
    /// a daemon to ask (--jwks-url's origin, --socket or --config) it also reports the
    /// key's current state, since an attestation stays valid after the key is revoked.
    Verify(VerifyArgs),
}

/// `attest verify`'s arguments.
#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The trusted root certificate (PEM).
    #[arg(long)]
    root: PathBuf,
    /// Take the chain from this JWKS URL's key `--kid` (from the daemon's
    /// `/v1/keys/KID/attestation` at the same origin if the JWKS no longer publishes
    /// it), and ask that origin for the key's current state.
    #[arg(long, conflicts_with = "jwks_file")]
    jwks_url: Option<String>,
    /// Take the chain (or, with --chain, the key to compare) from this JWKS file.
    #[arg(long)]
    jwks_file: Option<PathBuf>,
    /// The key id in the JWKS, or to ask a daemon about.
    #[arg(long)]
    kid: Option<String>,
    /// A PEM chain: key certificate first.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Verify a whole `attest export` directory instead: every `keys/KID.pem` against
    /// its `root.pem` (and against its `jwks.json` entry, if published), and that
    /// every key the JWKS publishes has its chain. Key states are not looked up.
    #[arg(long, conflicts_with_all = ["jwks_url", "jwks_file", "kid", "chain", "socket", "config", "require_usable"])]
    bundle: Option<PathBuf>,
    /// Check validity at this time (seconds since the epoch) instead of now.
    #[arg(long)]
    at: Option<u64>,
    /// Ask the daemon on this Unix socket for the key's current state (and for its
    /// chain and JWK when neither --chain nor a JWKS gives them).
    #[arg(long, conflicts_with = "jwks_url")]
    socket: Option<PathBuf>,
    /// Like --socket, with the socket path from this config file's `[listen] socket`.
    #[arg(long, short, conflicts_with_all = ["jwks_url", "socket"], value_name = "FILE")]
    config: Option<PathBuf>,
    /// Who must serve --socket: a uid or user name. Default: root, you, or the owner of
    /// the socket's directory.
    #[arg(long, env = "SIGNETD_SOCKET_OWNER", value_name = "UID|NAME")]
    socket_owner: Option<String>,
    /// Exit 1 unless the key's current state is known and still trusted by verifiers
    /// (pending, active or retired): a revoked or archived key fails, even with a valid
    /// attestation.
    #[arg(long)]
    require_usable: bool,
}

/// How `attest status` reports.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StatusFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
    /// The state alone: missing, awaiting-certificate or ready.
    State,
}

/// Runs an attest command.
pub async fn run(command: AttestCommand) -> Result<(), String> {
    match command {
        AttestCommand::Status {
            config,
            json,
            format,
        } => {
            let format = match (json, format) {
                (true, _) => StatusFormat::Json,
                (false, format) => format.unwrap_or(StatusFormat::Text),
            };
            status(config, format).await
        }
        AttestCommand::InitCa {
            config,
            self_signed,
            csr,
            undo,
            subject,
            days,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, false).await?;
            let (hsm, meta) = (&opened.hsm, opened.meta());
            if undo {
                // Pending: the CA is gone. A later CA may sign this record of its
                // predecessor's end, never that predecessor's own transcripts.
                let mut log = Transcript::start("root-undo", hsm.token());
                let outcome = attest::ca::destroy_uncertified(hsm, meta)
                    .await
                    .map(|public_key| {
                        println!("destroyed the uncertified attestation CA key");
                        log.created.push(Created {
                            kind: signetd::ceremony::CA_KEY_DESTROYED_KIND.to_string(),
                            id: String::from_utf8_lossy(attest::ca::CA_ID).into_owned(),
                            sha256: Some(signetd::ceremony::ca_key_sha256(&public_key)),
                            detail: "uncertified attestation CA key destroyed (public key sha256)"
                                .to_string(),
                        });
                    })
                    .map_err(|e| e.to_string());
                return record(&transcript, log, Some(&opened), outcome).await;
            }
            let mut log = Transcript::start("root", hsm.token());
            let outcome = async {
                let pair = match attest::ca::load(hsm, meta).await.map_err(|e| e.to_string())? {
                    CaState::Ready(_) => return Err(attest::AttestError::CaExists(String::new()).to_string()),
                    CaState::KeyOnly(pair) => {
                        println!("resuming: the attestation CA key exists but is not certified yet");
                        pair
                    }
                    CaState::Missing => {
                        let pair = attest::ca::create_key(hsm, meta).await.map_err(|e| e.to_string())?;
                        println!("generated the attestation CA key (P-256, non-extractable)");
                        pair
                    }
                };
                log.created.push(Created {
                    kind: signetd::ceremony::CA_KEY_KIND.to_string(),
                    id: String::from_utf8_lossy(attest::ca::CA_ID).into_owned(),
                    sha256: Some(sha256_hex(&pair.public_key)),
                    detail: "public key sha256".to_string(),
                });
                if self_signed {
                    let ca = attest::ca::self_sign(hsm, meta, &pair, &subject, days).await.map_err(|e| e.to_string())?;
                    println!("self-signed attestation CA certificate, valid {days} days");
                    log.created.push(Created {
                        kind: "attestation-ca-certificate".to_string(),
                        id: subject.clone(),
                        sha256: Some(sha256_hex(&ca.chain[0])),
                        detail: "self-signed".to_string(),
                    });
                } else if let Some(path) = &csr {
                    let request = attest::ca::request(hsm, &pair, &subject).await.map_err(|e| e.to_string())?;
                    let pem = der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &request)
                        .map_err(|e| e.to_string())?;
                    std::fs::write(path, pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    println!("certificate request written to {}; import the chain with `signetd attest import-chain`", path.display());
                    log.created.push(Created {
                        kind: "attestation-ca-request".to_string(),
                        id: subject.clone(),
                        sha256: Some(sha256_hex(&request)),
                        detail: format!("written to {}", path.display()),
                    });
                }
                Ok(())
            }
            .await;
            record(&transcript, log, Some(&opened), outcome).await
        }
        AttestCommand::ImportChain {
            config,
            chain,
            transcript,
        } => {
            let opened = super::open_keys(&config.config, false).await?;
            let (hsm, meta) = (&opened.hsm, opened.meta());
            let text = std::fs::read_to_string(&chain)
                .map_err(|e| format!("cannot read {}: {e}", chain.display()))?;
            let certs = from_pem(&text)?;
            let mut log = Transcript::start("root", hsm.token());
            let outcome = async {
                let pair = match attest::ca::load(hsm, meta)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    CaState::KeyOnly(pair) => pair,
                    CaState::Missing => return Err(attest::AttestError::NoCa.to_string()),
                    CaState::Ready(_) => {
                        return Err(attest::AttestError::CaExists(String::new()).to_string());
                    }
                };
                let ca = attest::ca::import_chain(hsm, meta, &pair, certs)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "imported a chain of {} certificates; the attestation CA is ready",
                    ca.chain.len()
                );
                for cert in &ca.chain {
                    log.created.push(Created {
                        kind: "attestation-ca-chain".to_string(),
                        id: verify::parse(cert)
                            .map(|c| c.tbs_certificate.subject.to_string())
                            .unwrap_or_default(),
                        sha256: Some(sha256_hex(cert)),
                        detail: String::new(),
                    });
                }
                Ok(())
            }
            .await;
            record(&transcript, log, Some(&opened), outcome).await
        }
        AttestCommand::Export { config, out } => export(config, out).await,
        AttestCommand::Verify(args) => match &args.bundle {
            Some(dir) => verify_bundle(&args.root, dir, args.at),
            None => verify_command(args).await,
        },
    }
}

async fn status(config: ConfigArg, format: StatusFormat) -> Result<(), String> {
    let opened = super::open_keys(&config.config, false).await?;
    let state = attest::ca::load(&opened.hsm, opened.meta())
        .await
        .map_err(|e| e.to_string())?;
    let report = match &state {
        CaState::Missing => json!({"state": "missing"}),
        CaState::KeyOnly(pair) => {
            json!({"state": "awaiting-certificate", "public_key_sha256": sha256_hex(&pair.public_key)})
        }
        CaState::Ready(ca) => {
            let cert = verify::parse(&ca.chain[0])?;
            json!({
                "state": "ready",
                "subject": cert.tbs_certificate.subject.to_string(),
                "sha256": sha256_hex(&ca.chain[0]),
                "not_after": cert.tbs_certificate.validity.not_after.to_string(),
                "chain_length": ca.chain.len(),
            })
        }
    };
    if let StatusFormat::Json = format {
        println!("{report}");
    } else if let StatusFormat::State = format {
        println!("{}", report["state"].as_str().unwrap_or("?"));
    } else {
        println!(
            "attestation CA: {}",
            report["state"].as_str().unwrap_or("?")
        );
        for (k, v) in report
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(k, _)| *k != "state")
        {
            println!(
                "  {k}: {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            );
        }
    }
    Ok(())
}

async fn export(config: ConfigArg, out: PathBuf) -> Result<(), String> {
    let opened = super::open_keys(&config.config, true).await?;
    let (config, hsm) = (&opened.config, &opened.hsm);
    let ca = attest::ca::ready(hsm, opened.meta())
        .await
        .map_err(|e| e.to_string())?;
    let inventory = signetd::keys::store::inventory(hsm, opened.meta())
        .await
        .map_err(|e| e.to_string())?;
    let write = |name: &std::path::Path, text: &str| {
        std::fs::write(name, text).map_err(|e| format!("cannot write {}: {e}", name.display()))
    };
    std::fs::create_dir_all(out.join("keys"))
        .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    write(&out.join("root.pem"), &to_pem(&[ca.top().to_vec()]))?;
    write(&out.join("ca-chain.pem"), &ca.chain_pem())?;
    for key in &inventory.keys {
        let mut chain = vec![key.certificate.clone()];
        chain.extend(ca.chain.iter().cloned());
        write(
            &out.join("keys").join(format!("{}.pem", key.kid)),
            &to_pem(&chain),
        )?;
    }
    let count = inventory.keys.len();
    let registry = KeyRegistry::build(inventory, &config.issuers, ca.chain.clone());
    write(
        &out.join("jwks.json"),
        &String::from_utf8_lossy(&registry.jwks().body),
    )?;
    println!(
        "exported the root, the CA chain, {count} key chains and the JWKS to {}",
        out.display()
    );
    Ok(())
}

async fn verify_command(args: VerifyArgs) -> Result<(), String> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let root_der = from_pem(&read(&args.root)?)?.remove(0);
    // Who to ask about the key's state: the daemon on the socket, or the JWKS's origin.
    let daemon = match (&args.socket, &args.config, &args.jwks_url) {
        (None, None, None) => None,
        (None, None, Some(url)) => Some(signetd::client::parse_http_url(url)?.0),
        (socket, config, _) => Some(
            super::SocketArgs {
                socket: socket.clone(),
                config: config.clone(),
                socket_owner: args.socket_owner.clone(),
            }
            .endpoint()?,
        ),
    };
    // Best effort: a daemon that cannot say leaves the state unknown, not the
    // attestation unchecked.
    let (now, unasked) = match (&daemon, &args.kid) {
        (Some(daemon), Some(kid)) => match key_state::fetch(daemon, kid).await {
            Ok(now) => (now, None),
            Err(e) => (None, Some(e)),
        },
        _ => (None, None),
    };
    let jwks: Option<JwkSet> = match (&args.jwks_url, &args.jwks_file) {
        (Some(url), _) => Some(super::token::fetch_jwks(None, Some(url)).await?),
        (None, Some(file)) => Some(
            serde_json::from_str(&read(file)?)
                .map_err(|e| format!("the JWKS is not valid: {e}"))?,
        ),
        (None, None) => None,
    };
    let published = match (&jwks, &args.kid) {
        (Some(set), Some(kid)) => set.keys.iter().find(|k| &k.kid == kid).cloned(),
        (Some(_), None) => return Err("--kid names the key to check in the JWKS".to_string()),
        _ => None,
    };
    // A key out of the JWKS (archived, revoked) is compared with the JWK the daemon
    // still shows for it.
    let jwk = match (published, &now, &jwks, &args.kid) {
        (Some(jwk), _, _, _) => Some(jwk),
        (None, Some(now), _, _) => now.jwk.clone(),
        (None, None, Some(_), Some(kid)) => return Err(format!("the JWKS has no key {kid:?}")),
        _ => None,
    };
    let chain = match (&args.chain, &jwk) {
        (Some(file), _) => from_pem(&read(file)?)?,
        (None, Some(jwk)) => match (&jwk.x5c, &daemon) {
            (Some(x5c), _) => {
                let standard = base64::engine::general_purpose::STANDARD;
                x5c.iter()
                    .map(|c| {
                        standard
                            .decode(c)
                            .map_err(|_| "x5c holds a non-base64 entry".to_string())
                    })
                    .collect::<Result<_, _>>()?
            }
            (None, Some(daemon)) => from_pem(&key_state::chain_pem(daemon, &jwk.kid).await?)?,
            (None, None) => return Err(format!("key {} has no x5c chain", jwk.kid)),
        },
        (None, None) => {
            return Err(
                "give --chain, or --kid with a JWKS (--jwks-url or --jwks-file) or a daemon (--socket, --config)"
                    .to_string(),
            );
        }
    };
    let verdict = verify::verify_key_attestation(&chain, &root_der, jwk.as_ref(), when(args.at));
    let state = match (&now, &daemon, &args.kid) {
        (Some(now), _, _) => now.describe(),
        (None, _, _) if unasked.is_some() => format!(
            "unknown (the daemon could not be asked: {})",
            unasked.unwrap_or_default()
        ),
        (None, Some(_), Some(kid)) => format!("unknown (the daemon knows no key {kid})"),
        (None, Some(_), None) => "unknown (give --kid to look it up)".to_string(),
        (None, None, _) => {
            "unknown (give --jwks-url, --socket or --config with --kid to look it up)".to_string()
        }
    };
    report_verdict(&verdict, Some(&state))?;
    if args.require_usable && !now.as_ref().is_some_and(key_state::KeyNow::usable) {
        return Err(format!(
            "--require-usable: the attestation is valid, but the key's state is {state}"
        ));
    }
    Ok(())
}

fn when(at: Option<u64>) -> SystemTime {
    at.map_or_else(SystemTime::now, |s| {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
    })
}

/// Prints each check and the verdict, with the key's current `state` if looked up; an
/// invalid verdict is the error.
fn report_verdict(verdict: &verify::Verdict, state: Option<&str>) -> Result<(), String> {
    for check in &verdict.checks {
        println!(
            "{} {}: {}",
            if check.ok { "ok  " } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    match verdict.first_failure() {
        None if verdict.ok() => {
            match state {
                // Valid says where the key was made, not that it may still be trusted.
                Some(state) => println!("verdict: valid attestation; key state: {state}"),
                None => println!("verdict: valid"),
            }
            Ok(())
        }
        failure => {
            let why = failure.map_or("no checks ran".to_string(), |f| {
                format!("{}: {}", f.name, f.detail)
            });
            println!("verdict: INVALID ({why})");
            Err(format!("attestation is invalid: {why}"))
        }
    }
}

/// `attest verify --bundle DIR`: what verifiers will be handed, checked as they would.
fn verify_bundle(root: &Path, dir: &Path, at: Option<u64>) -> Result<(), String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let root_der = from_pem(&read(root)?)?.remove(0);
    let jwks: JwkSet = serde_json::from_str(&read(&dir.join("jwks.json"))?)
        .map_err(|e| format!("{}/jwks.json is not a valid JWKS: {e}", dir.display()))?;
    let mut chains: Vec<PathBuf> = std::fs::read_dir(dir.join("keys"))
        .map_err(|e| format!("cannot read {}/keys: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pem"))
        .collect();
    chains.sort();
    let mut failures = Vec::new();
    for path in &chains {
        let kid = path.file_stem().unwrap_or_default().to_string_lossy();
        let jwk = jwks.keys.iter().find(|k| k.kid == kid);
        let compared = if jwk.is_some() {
            " and its JWKS entry"
        } else {
            " (not in the JWKS)"
        };
        println!("\n== {kid}: {}{compared}", path.display());
        let verdict = from_pem(&read(path)?)
            .map(|chain| verify::verify_key_attestation(&chain, &root_der, jwk, when(at)))
            .and_then(|verdict| report_verdict(&verdict, None));
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", path.display()));
        }
    }
    for jwk in &jwks.keys {
        if !chains
            .iter()
            .any(|p| p.file_stem() == Some(jwk.kid.as_ref()))
        {
            println!(
                "FAIL {}: published in the JWKS without keys/{}.pem",
                jwk.kid, jwk.kid
            );
            failures.push(format!("{} has no chain", jwk.kid));
        }
    }
    if chains.is_empty() {
        eprintln!(
            "warning: no key certificates in {}/keys (no complete keys yet?)",
            dir.display()
        );
    }
    if failures.is_empty() {
        println!(
            "\n{} key certificate(s) in {} verified against {}",
            chains.len(),
            dir.display(),
            root.display()
        );
        Ok(())
    } else {
        Err(format!(
            "{} check(s) failed: {}",
            failures.len(),
            failures.join("; ")
        ))
    }
}
