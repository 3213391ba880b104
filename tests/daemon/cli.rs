//! The operator's command line against a running `signetd serve` on a real token: a
//! token revoked with `signetd token revoke` (no admin API) is refused and listed by
//! the daemon and recorded in its audit log; client commands find the socket through
//! `--config`; `audit verify` on the live log; `attest verify` says when the key it
//! checks is revoked; errors and algorithm names in the API's words.

use std::path::Path;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{TestToken, audit_records, eventually, issuer_toml, request_unix};

/// A token with a CA and the key of issuer `cli`, the root exported, and a config whose
/// lifecycle ticks every second and whose audit log signs a checkpoint only every hour
/// (so the live log surely ends with records no checkpoint covers yet).
struct Operator {
    token: TestToken,
    config: String,
    socket: std::path::PathBuf,
    root: String,
    kid: String,
}

impl Operator {
    fn new(label: &str) -> Operator {
        let token = TestToken::create(label);
        let rest = format!(
            "{}[lifecycle]\ntick_seconds = 1\n[audit]\ndir = {:?}\ncheckpoint_seconds = 3600\n",
            issuer_toml("cli", Algorithm::Es256),
            token.audit_dir().display().to_string()
        );
        let (config, socket) = token.write_config(&rest);
        let kid = token.init_ca_and_key(&config, "cli");
        let root = token.export_public(&config).join("root.pem");
        Operator {
            config: config.display().to_string(),
            root: root.display().to_string(),
            token,
            socket,
            kid,
        }
    }

    /// `signetd ARGS`: success, and stdout followed by stderr.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let (ok, out, err) = self.token.signetd(args);
        (ok, format!("{out}\n{err}"))
    }

    async fn verify(&self, token: &str) -> crate::common::Reply {
        let body = json!({"token": token, "audience": "api"});
        request_unix(&self.socket, Method::POST, "/v1/verify", Some(&body)).await
    }

    async fn revocations(&self) -> Value {
        request_unix(&self.socket, Method::GET, "/v1/revocations", None)
            .await
            .json
    }
}

fn listed(revocations: &Value, jti: &str) -> Option<Value> {
    revocations["tokens"]
        .as_array()?
        .iter()
        .find(|t| t["jti"] == jti)
        .cloned()
}

/// The default `[admin]` names nobody, so before `token revoke` a token could not be
/// revoked at all: now the CLI writes the API's revocation into the state store and the
/// running daemon refuses the token, lists it and records it within a tick.
#[tokio::test]
async fn a_token_revoked_with_the_cli_is_refused_listed_and_recorded_by_the_daemon() {
    let op = Operator::new("cli-revoke");
    let _daemon = op.token.serve(Path::new(&op.config), &op.socket);
    let c = op.config.as_str();

    // Client commands take the socket from --config (the test's environment has no
    // SIGNETD_SOCKET, and the default path does not exist here).
    let (ok, out) = op.run(&["status", "--config", c]);
    assert!(ok, "{out}");
    let mint = [
        "token", "mint", "--config", c, "--issuer", "cli", "--aud", "api",
    ];
    let (ok, out) = op.run(&mint);
    assert!(ok, "{out}");
    let token = out.trim().to_string();
    let jti = crate::common::decode_parts(&token).1["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let exp = crate::common::decode_parts(&token).1["exp"]
        .as_u64()
        .unwrap();
    assert_eq!(op.verify(&token).await.status, 200);
    // `token verify` finds the socket through --config too, and fetches the JWKS there.
    let (ok, out) = op.run(&[
        "token",
        "verify",
        "--config",
        c,
        "--iss",
        "https://cli.example",
        "--aud",
        "api",
        &token,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(&jti), "token verify prints the claims: {out}");

    let (ok, out) = op.run(&["token", "revoke", "--config", c, "--token", &token]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("token {jti} revoked")), "{out}");
    let refused = eventually(15, async || {
        op.verify(&token).await.code() == "token_revoked"
    })
    .await;
    assert!(refused, "the daemon still accepts the revoked token");
    let entry = listed(&op.revocations().await, &jti).expect("listed in /v1/revocations");
    assert_eq!(entry["exp"], exp, "listed until the token's exp: {entry}");

    // By jti, one starting with '-' (base64url), without exp: listed until now plus the
    // hard TTL cap, as the API lists it.
    let before = signetd::service::unix_now();
    let (ok, out) = op.run(&["token", "revoke", "--config", c, "--jti", "-by-jti"]);
    let after = signetd::service::unix_now();
    assert!(ok, "{out}");
    let by_jti = eventually(15, async || {
        listed(&op.revocations().await, "-by-jti").is_some()
    })
    .await;
    assert!(by_jti, "a revocation by jti is not listed");
    // Bounded by clock readings taken around the command, so no timing is assumed.
    let entry = listed(&op.revocations().await, "-by-jti").unwrap();
    let listed_exp = entry["exp"].as_u64().unwrap();
    assert!(
        (before + 3600..=after + 3600).contains(&listed_exp),
        "listed until now plus 3600 s ({before}..={after} + 3600): {entry}"
    );
    // The API's limits: an exp past the hard cap is refused with its code.
    let far = (signetd::service::unix_now() + 100_000).to_string();
    let (ok, out) = op.run(&[
        "token", "revoke", "--config", c, "--jti", "x", "--exp", &far,
    ]);
    assert!(!ok && out.contains("invalid_request"), "{out}");

    // The daemon records each revocation it learned from the store, as it records its
    // own: a `token_revoke` record with the jti.
    let dir = op.token.audit_dir();
    let recorded = |jti: &str| {
        audit_records(&dir)
            .into_iter()
            .find(|r| r["event"] == "token_revoke" && r["jti"] == jti)
    };
    assert!(
        eventually(15, async || recorded("-by-jti").is_some()).await,
        "no token_revoke record"
    );
    let record = recorded(&jti).expect("a token_revoke record for the first jti");
    assert_eq!(record["caller"]["name"], "store", "{record}");
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("outside this daemon"),
        "{record}"
    );

    // The live log verifies: its newest records are not covered by a checkpoint yet,
    // which is said and is no failure, unless every record must be signed.
    let log = dir.display().to_string();
    let verify = ["audit", "verify", "--root", &op.root, &log];
    let (ok, out) = op.run(&verify);
    assert!(ok, "{out}");
    assert!(
        out.contains("records not yet covered by a checkpoint"),
        "{out}"
    );
    let strict = [
        "audit",
        "verify",
        "--require-signed",
        "--root",
        &op.root,
        &log,
    ];
    let (ok, out) = op.run(&strict);
    assert!(!ok, "--require-signed accepted an unsigned tail: {out}");
    // The old flag still works, as a no-op.
    let old = [
        "audit",
        "verify",
        "--allow-unsigned-tail",
        "--root",
        &op.root,
        &log,
    ];
    assert!(op.run(&old).0);
}

/// `attest verify` with a daemon to ask says what became of the key: a revoked key's
/// attestation is still valid, and never reported as just "valid".
#[tokio::test]
async fn attest_verify_reports_a_revoked_key_and_errors_use_the_apis_words() {
    let op = Operator::new("cli-attest");
    let _daemon = op.token.serve(Path::new(&op.config), &op.socket);
    let (c, kid) = (op.config.as_str(), op.kid.as_str());
    let attest = [
        "attest", "verify", "--root", &op.root, "--config", c, "--kid", kid,
    ];
    let usable = [&attest[..], &["--require-usable"]].concat();
    let (ok, out) = op.run(&usable);
    assert!(ok, "{out}");
    assert!(
        out.contains("verdict: valid attestation; key state: active"),
        "{out}"
    );

    // Algorithm names in any case, as transcripts write them (the issuer already has a
    // key, so nothing is generated).
    let generate = [
        "keys",
        "generate",
        "--config",
        c,
        "--issuer",
        "cli",
        "--algorithm",
        "es256",
        "--if-missing",
    ];
    let (ok, out) = op.run(&generate);
    assert!(ok, "{out}");

    let (ok, out) = op.run(&["keys", "revoke", "--config", c, "--kid", kid]);
    assert!(ok, "{out}");
    let (ok, out) = op.run(&["keys", "revoke", "--config", c, "--kid", kid]);
    assert!(!ok);
    assert!(
        out.contains(&format!("key {kid} is revoked and cannot become revoked")),
        "{out}"
    );
    assert!(!out.contains("Revoked"), "a Rust name in a message: {out}");

    // Once the daemon has read the revocation, the key is out of the JWKS: its chain
    // and state come from the daemon.
    let revoked = eventually(15, async || {
        let list = op.revocations().await;
        list["keys"]
            .as_array()
            .is_some_and(|keys| keys.iter().any(|k| k["kid"] == kid))
    })
    .await;
    assert!(revoked, "the daemon never listed the revoked key");
    let (ok, out) = op.run(&attest);
    assert!(ok, "{out}");
    assert!(
        out.contains("verdict: valid attestation; key state: revoked (since"),
        "{out}"
    );
    let (ok, out) = op.run(&usable);
    assert!(!ok, "--require-usable accepted a revoked key: {out}");
    assert!(out.contains("--require-usable"), "{out}");
}

/// The help texts the issue found untrue.
#[test]
fn help_texts_say_what_the_commands_do() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(crate::common::signetd_bin())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let status = help(&["status"]);
    assert!(
        status.contains("audit log") && status.contains("--config"),
        "{status}"
    );
    let verify = help(&["token", "verify"]);
    assert!(
        !verify.contains("offline") && verify.contains("JWKS"),
        "{verify}"
    );
    let init = help(&["ceremony", "init-token"]);
    assert!(init.contains("pending"), "{init}");
    // The old text claimed a signature the token ceremony cannot make (no CA yet);
    // whitespace is folded, as clap may wrap it anywhere.
    let folded = init.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        !folded.contains("signed by the attestation CA, to this file"),
        "{init}"
    );
    let audit = help(&["audit", "verify"]);
    assert!(audit.contains("--require-signed"), "{audit}");
    assert!(
        !audit.contains("--allow-unsigned-tail"),
        "a hidden alias: {audit}"
    );
    let mint = help(&["token", "mint"]);
    assert!(mint.contains("[listen] socket"), "{mint}");
}
