//! Key ceremonies end to end: the scripts in scripts/ceremony/ drive the real `signetd`
//! binary against a fresh SoftHSM2 token per test, and independent tools (openssl,
//! pkilint, Python's cryptography + asn1crypto) check what they produce.
//!
//! Self-contained: every test makes its own token with the harness (`TestToken`, which
//! runs `softhsm/dev-token.sh`) in its own temp dir, runs every command in that dir and
//! passes `SOFTHSM2_CONF` to each subprocess. Nothing here touches the process
//! environment or the shared test token. Command lines are written as one string, split
//! on whitespace: every path in them is relative to the temp dir, or a temp path checked
//! to hold no whitespace.

use std::collections::BTreeSet;
use std::fs;
use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hyper::Method;
use serde_json::Value;
use signetd::Algorithm;

use crate::common::{TestToken, issuer_toml, repo_root, request_unix_blocking, signetd_bin};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts success; returns stdout.
#[track_caller]
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts failure; returns stdout and stderr together.
#[track_caller]
fn fails(what: &str, out: Output) -> String {
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{what} should fail:\n{all}");
    all
}

// ---------------------------------------------------------------- a fresh token

/// A fresh SoftHSM2 token in its own temp dir, with `signetd.toml` (an ES256 issuer
/// `es`, an EdDSA issuer `ed`, the socket `signetd.sock`, no HTTP listener) and the
/// transcript directory `ceremonies/` beside it.
struct Ceremony(TestToken);

impl Deref for Ceremony {
    type Target = TestToken;
    fn deref(&self) -> &TestToken {
        &self.0
    }
}

impl Ceremony {
    fn new(label: &str) -> Ceremony {
        let token = TestToken::create(label);
        assert!(
            !token
                .dir
                .path()
                .to_str()
                .unwrap()
                .contains(char::is_whitespace),
            "these tests need a temp dir without whitespace: set TMPDIR"
        );
        token.write_config(
            &(issuer_toml("es", Algorithm::Es256) + &issuer_toml("ed", Algorithm::EdDsa)),
        );
        Ceremony(token)
    }

    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&self.read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn signetd(&self, args: &str) -> Output {
        self.command(signetd_bin(), args).output().unwrap()
    }

    #[track_caller]
    fn signetd_ok(&self, args: &str) -> String {
        ok(&format!("signetd {args}"), self.signetd(args))
    }

    #[track_caller]
    fn signetd_fails(&self, args: &str) -> String {
        fails(&format!("signetd {args}"), self.signetd(args))
    }

    /// `scripts/ceremony/SCRIPT ARGS --signetd BIN --transcript-dir ceremonies`, plus
    /// `--config signetd.toml` for every script but init-token.sh.
    fn script(&self, script: &str, args: &str) -> Output {
        let mut command = self.command("bash", "");
        command
            .arg(repo_root().join("scripts/ceremony").join(script))
            .args(args.split_whitespace())
            .args(["--signetd", signetd_bin()])
            .args(["--transcript-dir", "ceremonies"]);
        if script != "init-token.sh" {
            command.args(["--config", "signetd.toml"]);
        }
        command.output().unwrap()
    }

    #[track_caller]
    fn run(&self, script: &str, args: &str) -> String {
        ok(&format!("{script} {args}"), self.script(script, args))
    }

    #[track_caller]
    fn run_fails(&self, script: &str, args: &str) -> String {
        fails(&format!("{script} {args}"), self.script(script, args))
    }

    /// The attestation CA's state, from `attest status --json`.
    fn ca_state(&self) -> String {
        let out = self.signetd_ok("attest status --config signetd.toml --json");
        let status: Value = serde_json::from_str(&out).expect("attest status --json is JSON");
        status["state"].as_str().unwrap().to_string()
    }

    /// `keys list --json`.
    fn keys(&self) -> Value {
        let out = self.signetd_ok("keys list --config signetd.toml --json");
        serde_json::from_str(&out).expect("keys list --json is JSON")
    }

    /// The kids of an issuer's keys in `state`.
    fn kids(&self, issuer: &str, state: &str) -> Vec<String> {
        let keys = self.keys();
        let keys = keys["keys"].as_array().unwrap().iter();
        keys.filter(|k| k["issuer"] == issuer && k["state"] == state)
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    }

    /// The one key of `issuer` in `state`.
    fn kid(&self, issuer: &str, state: &str) -> String {
        let kids = self.kids(issuer, state);
        assert_eq!(kids.len(), 1, "{issuer} {state}: {}", self.keys());
        kids[0].clone()
    }

    /// The transcript files, as paths relative to the temp dir, sorted.
    fn transcripts(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.path("ceremonies")) else {
            return Vec::new();
        };
        let mut files: Vec<String> = entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .map(|name| format!("ceremonies/{name}"))
            .collect();
        files.sort();
        files
    }

    /// A self-signed CA, an ES256 key for `es` and an EdDSA key for `ed`, exported to
    /// `export/`.
    fn ready_with_keys(&self) {
        self.run("root.sh", "");
        self.run("issuer-key.sh", "--issuer es");
        self.run("issuer-key.sh", "--issuer ed");
        self.run("export-public.sh", "--out export");
    }
}

/// The base64 bodies of the certificates in a PEM text, whitespace removed.
fn pem_blocks(pem: &str) -> Vec<String> {
    let blocks = pem.split("-----BEGIN CERTIFICATE-----").skip(1);
    blocks
        .map(|b| {
            b.split("-----END")
                .next()
                .unwrap()
                .split_whitespace()
                .collect()
        })
        .collect()
}

fn to_pem(blocks: &[String]) -> String {
    let pem = |b: &String| {
        let lines: Vec<&str> = (0..b.len())
            .step_by(64)
            .map(|i| &b[i..(i + 64).min(b.len())])
            .collect();
        let body = lines.join("\n");
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
    };
    blocks.iter().map(pem).collect()
}

// ---------------------------------------------------------------- a daemon subprocess

/// `GET path` over a Unix socket: status and body.
fn get_over_socket(socket: &Path, path: &str) -> (u16, Vec<u8>) {
    let reply = request_unix_blocking(socket, Method::GET, path);
    (reply.status, reply.raw.to_vec())
}

// ---------------------------------------------------------------- (a) every ceremony

/// Every ceremony script end to end on one token, each leaving a transcript that
/// verifies against the exported root; the daemon then serves every published key with
/// its x5c chain (and not the revoked one), and mints with the keys the ceremonies made.
#[test]
fn every_ceremony_runs_end_to_end_with_a_verifiable_transcript() {
    let c = Ceremony::new("cer-e2e");

    // Token ceremony, in verify mode: the token exists already.
    let args = format!(
        "--module {} --label {} --so-pin-file {} --pin-file {}",
        c.var("SIGNETD_PKCS11_MODULE"),
        c.var("SIGNETD_TOKEN_LABEL"),
        c.var("SIGNETD_SO_PIN_FILE"),
        c.var("SIGNETD_PIN_FILE"),
    );
    let out = c.run("init-token.sh", &args);
    assert!(out.to_lowercase().contains("verified"), "{out}");
    let files = c.transcripts();
    assert_eq!(files.len(), 1, "{files:?}");
    let init_token = files[0].clone();
    assert!(
        init_token.starts_with("ceremonies/init-token-"),
        "{init_token}"
    );
    let pending = c.json(&init_token);
    assert!(
        pending.get("signature").is_none() && pending.get("protected").is_none(),
        "the token ceremony's transcript is pending: {pending}"
    );
    fs::copy(c.path(&init_token), c.path("init-token-pending.json")).unwrap();

    // Root ceremony: a dry run shows the commands and changes nothing.
    let plan = c.run("root.sh", "--dry-run");
    for step in [
        "attest init-ca --config signetd.toml --self-signed",
        "ceremony sign",
    ] {
        assert!(plan.contains(step), "the plan shows {step}: {plan}");
    }
    assert_eq!(c.ca_state(), "missing");
    assert_eq!(c.transcripts().len(), 1, "a dry run writes no transcript");

    let out = c.run("root.sh", "");
    assert!(
        out.contains("missing"),
        "root.sh reports the state first: {out}"
    );
    assert_eq!(c.ca_state(), "ready");
    let signed = c.json(&init_token);
    assert!(
        signed["signature"].is_string() && signed["protected"].is_string(),
        "root.sh signed the pending token transcript: {signed}"
    );

    // Issuer keys (a dry run first), a rotation, and retiring the rotated-in key.
    let plan = c.run("issuer-key.sh", "--issuer es --dry-run");
    assert!(
        plan.contains("keys generate --config signetd.toml --issuer es"),
        "{plan}"
    );
    assert!(
        c.kids("es", "active").is_empty(),
        "a dry run generates nothing"
    );
    c.run("issuer-key.sh", "--issuer es");
    c.run("issuer-key.sh", "--issuer ed");
    let es = c.kid("es", "active");
    let ed = c.kid("ed", "active");
    c.run("rotate.sh", "--issuer es");
    let next = c.kid("es", "pending");
    let plan = c.run("retire.sh", &format!("--kid {next} --dry-run"));
    let step = format!("keys retire --config signetd.toml --kid {next}");
    assert!(plan.contains(&step), "{plan}");
    assert_eq!(c.kid("es", "pending"), next, "a dry run retires nothing");
    c.run("retire.sh", &format!("--kid {next}"));
    assert_eq!(c.kid("es", "retired"), next);
    let published = [&es, &ed, &next];
    // A second rotation, whose key is then revoked.
    c.run("rotate.sh", "--issuer es");
    let compromised = c.kid("es", "pending");
    c.run("revoke.sh", &format!("--kid {compromised}"));
    assert_eq!(c.kid("es", "revoked"), compromised);

    // Export: every key verifies, and SHA256SUMS covers the bundle.
    let out = c.run("export-public.sh", "--out export");
    let exported = fs::read_dir(c.path("export/keys")).unwrap().count();
    assert!(exported >= published.len(), "{out}");
    assert_eq!(out.matches("verdict: valid").count(), exported, "{out}");
    let sums = c.read("export/SHA256SUMS");
    for kid in published {
        assert!(sums.contains(&format!("keys/{kid}.pem")), "{sums}");
    }
    for f in ["root.pem", "ca-chain.pem", "jwks.json"] {
        assert!(sums.contains(f), "{sums}");
    }
    let mut check = c.command("sha256sum", "-c SHA256SUMS");
    check.current_dir(c.path("export"));
    ok("sha256sum -c SHA256SUMS", check.output().unwrap());

    // Every transcript verifies against the exported root; each ceremony left one.
    let files = c.transcripts();
    assert_eq!(files.len(), 8, "{files:?}");
    let mut ceremonies = BTreeSet::new();
    for file in &files {
        let shown = c.signetd_ok(&format!("ceremony verify {file} --root export/root.pem"));
        let readable = c.json(file)["transcript"].clone();
        let ceremony = readable["ceremony"].as_str().unwrap().to_string();
        let prefix = format!("ceremonies/{ceremony}-");
        assert!(file.starts_with(&prefix), "{file}: {readable}");
        assert_eq!(readable["outcome"], "completed", "{readable}");
        assert!(
            shown.contains(&ceremony),
            "ceremony verify prints it: {shown}"
        );
        ceremonies.insert(ceremony);
    }
    let expected = [
        "init-token",
        "root",
        "issuer-key",
        "rotate",
        "retire",
        "revoke",
    ];
    assert_eq!(ceremonies, BTreeSet::from(expected.map(String::from)));
    // The token ceremony's transcript as init-token.sh left it proves nothing.
    let refused = c.signetd_fails("ceremony verify init-token-pending.json --root export/root.pem");
    assert!(refused.contains("unsigned (pending)"), "{refused}");

    // The daemon publishes every key with the exported chain as x5c, and signs.
    let _daemon = c.serve(&c.path("signetd.toml"), &c.path("signetd.sock"));
    let (status, body) = get_over_socket(&c.path("signetd.sock"), "/.well-known/jwks.json");
    assert_eq!(status, 200, "{}", text(&body));
    fs::write(c.path("served-jwks.json"), &body).unwrap();
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    let served: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        !served.contains(&&Value::from(compromised.as_str())),
        "revoked: {jwks}"
    );
    for kid in published {
        let keys = jwks["keys"].as_array().unwrap();
        let jwk = keys.iter().find(|k| k["kid"] == kid.as_str());
        let jwk = jwk.unwrap_or_else(|| panic!("the served JWKS lacks {kid}: {jwks}"));
        let x5c = jwk["x5c"].as_array();
        let x5c = x5c.unwrap_or_else(|| panic!("no x5c: {jwk}"));
        let x5c: Vec<&str> = x5c.iter().map(|c| c.as_str().unwrap()).collect();
        let exported = pem_blocks(&c.read(&format!("export/keys/{kid}.pem")));
        assert_eq!(x5c, exported, "{kid}: the served x5c is the exported chain");
        assert!(jwk["x5t#S256"].is_string(), "{jwk}");
        let out = c.signetd_ok(&format!(
            "attest verify --root export/root.pem --jwks-file served-jwks.json --kid {kid}"
        ));
        assert!(out.contains("verdict: valid"), "{out}");
    }
    for issuer in ["es", "ed"] {
        let socket = "--socket signetd.sock";
        let token = c.signetd_ok(&format!("token mint {socket} --issuer {issuer} --aud api"));
        let iss = format!("https://{issuer}.example");
        let token = token.trim();
        c.signetd_ok(&format!(
            "token verify {socket} --iss {iss} --aud api {token}"
        ));
    }
}

// ---------------------------------------------------------------- (b) the CSR path

/// The operator's CA: P-256, ecdsa-with-SHA256; the attestation CA it certifies gets
/// CA:TRUE (critical) and keyCertSign.
const OPERATOR_CA_CNF: &str = "\
[req]
distinguished_name = dn
prompt = no
[dn]
O = Example Operator
CN = Example Operator Root CA
[v3_root]
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[v3_signetd_ca]
basicConstraints = critical, CA:true, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
";

/// `openssl ARGS` in the temp dir.
#[track_caller]
fn openssl(c: &Ceremony, args: &str) -> String {
    let out = c.command("openssl", args).output();
    ok(
        &format!("openssl {args}"),
        out.expect("run openssl (scripts/test.sh installs it)"),
    )
}

/// The root ceremony through the operator's own CA: a CSR out, a chain back. Keys then
/// verify against the operator's root, which `attest export` names as the root.
#[test]
fn the_csr_path_chains_keys_to_the_operators_root() {
    let c = Ceremony::new("cer-csr");
    let out = c.run("root.sh", "--csr attestation-ca.csr");
    assert!(out.contains("--import"), "root.sh says how to go on: {out}");
    assert_eq!(c.ca_state(), "awaiting-certificate");
    let files = c.transcripts();
    assert_eq!(files.len(), 1, "{files:?}");
    let csr_transcript = c.json(&files[0]);
    assert!(
        csr_transcript.get("signature").is_none(),
        "pending until the CA is certified"
    );
    let refused = c.run_fails("issuer-key.sh", "--issuer es");
    assert!(
        refused.contains("awaiting-certificate"),
        "no key before the CA: {refused}"
    );

    fs::write(c.path("operator.cnf"), OPERATOR_CA_CNF).unwrap();
    openssl(
        &c,
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out operator.key",
    );
    openssl(
        &c,
        "req -x509 -new -key operator.key -sha256 -days 3650 -config operator.cnf \
         -extensions v3_root -set_serial 0x4a3c9e1f0b7d42c6a1e8f3b2d4c6e8a1 -out operator-root.pem",
    );
    openssl(&c, "req -in attestation-ca.csr -noout -verify");
    openssl(
        &c,
        "x509 -req -in attestation-ca.csr -CA operator-root.pem -CAkey operator.key -sha256 \
         -days 1825 -extfile operator.cnf -extensions v3_signetd_ca \
         -set_serial 0x5b2d8f0e1c6a4b3f92d7e6c5b4a39281 -out signetd-ca.pem",
    );
    let operator_root = c.read("operator-root.pem");
    fs::write(
        c.path("chain.pem"),
        c.read("signetd-ca.pem") + &operator_root,
    )
    .unwrap();

    c.run("root.sh", "--import chain.pem");
    assert_eq!(c.ca_state(), "ready");
    for file in c.transcripts() {
        let signed = c.json(&file)["signature"].is_string();
        assert!(signed, "{file} is signed once the CA is ready");
    }

    c.run("issuer-key.sh", "--issuer es");
    let kid = c.kid("es", "active");
    c.run("export-public.sh", "--out export");
    assert_eq!(
        pem_blocks(&c.read("export/root.pem")),
        pem_blocks(&operator_root)
    );
    let chain = pem_blocks(&c.read(&format!("export/keys/{kid}.pem")));
    assert_eq!(chain.len(), 3, "key, attestation CA, operator root");

    let out = c.signetd_ok(&format!(
        "attest verify --root operator-root.pem --chain export/keys/{kid}.pem \
         --jwks-file export/jwks.json --kid {kid}"
    ));
    assert!(out.contains("verdict: valid"), "{out}");
    fs::write(c.path("leaf.pem"), to_pem(&chain[..1])).unwrap();
    fs::write(c.path("untrusted.pem"), to_pem(&chain[1..2])).unwrap();
    let out = openssl(
        &c,
        "verify -x509_strict -CAfile operator-root.pem -untrusted untrusted.pem leaf.pem",
    );
    assert!(out.contains(": OK"), "{out}");
    for file in c.transcripts() {
        c.signetd_ok(&format!("ceremony verify {file} --root operator-root.pem"));
    }
}

// ---------------------------------------------------------------- (c), (d) independent checks

/// The Python of the test venv (pkilint, asn1crypto, cryptography): `SIGNETD_TEST_PYTHON`
/// (scripts/test.sh sets it), else `python3`. Missing tools fail the test: it must not
/// pass by not running.
fn venv_python() -> String {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import pkilint, asn1crypto, cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{python} cannot import pkilint, asn1crypto and cryptography: run scripts/test.sh, \
             which installs tests/interop/requirements.txt into target/test-venv, or set \
             SIGNETD_TEST_PYTHON to a Python that has them"
        ),
    }
}

/// openssl (`-x509_strict`) and pkilint (RFC 5280, issuer/subject) find nothing at
/// WARNING or above in the exported certificates.
#[test]
fn exported_certificates_pass_openssl_and_pkilint() {
    let python = venv_python();
    let c = Ceremony::new("cer-lint");
    c.ready_with_keys();
    let script = repo_root().join("tests/interop/check_certs.sh");
    let mut check = c.command("bash", "");
    check
        .arg(script)
        .arg("export")
        .env("SIGNETD_TEST_PYTHON", python);
    let out = ok(
        "tests/interop/check_certs.sh export",
        check.output().unwrap(),
    );
    assert!(out.contains(" 0 failed"), "{out}");
    assert_eq!(
        out.matches("ok   openssl verify -x509_strict").count(),
        2,
        "{out}"
    );
    let linted = out
        .matches("ok   pkilint RFC 5280: key certificate")
        .count();
    assert_eq!(linted, 2, "{out}");
}

/// Python's cryptography finds the signetd extension and asn1crypto decodes it: the
/// attributes the token reported, the key's type and curve, its kid and the token.
#[test]
fn an_independent_decoder_reads_the_attestation_extension() {
    let python = venv_python();
    let c = Ceremony::new("cer-decode");
    c.ready_with_keys();
    let decoder = repo_root().join("tests/interop/decode_attestation.py");
    for (issuer, key_type, curve) in [("es", 3, "1.2.840.10045.3.1.7"), ("ed", 64, "1.3.101.112")] {
        let kid = c.kid(issuer, "active");
        let mut decode = c.command(&python, "");
        decode.arg(&decoder).arg(format!("export/keys/{kid}.pem"));
        let out = ok("decode_attestation.py", decode.output().unwrap());
        let decoded: Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(decoded["version"], 1, "{decoded}");
        assert_eq!(decoded["proof_level"], "operator", "{decoded}");
        let attributes = &decoded["key_attributes"];
        for (name, value) in [
            ("local", true),
            ("never_extractable", true),
            ("always_sensitive", true),
            ("extractable", false),
            ("sensitive", true),
        ] {
            assert_eq!(attributes[name], value, "{name}: {decoded}");
        }
        assert_eq!(decoded["key_type"], key_type, "{decoded}");
        assert_eq!(decoded["curve"], curve, "{decoded}");
        assert_eq!(decoded["key_id"], kid.as_str(), "{decoded}");
        let token = &decoded["token"];
        assert_eq!(
            token["serial_number"],
            c.var("SIGNETD_TOKEN_SERIAL"),
            "{decoded}"
        );
        assert_eq!(token["label"], c.var("SIGNETD_TOKEN_LABEL"), "{decoded}");
        assert_eq!(
            token["manufacturer"],
            c.token_info("manufacturer"),
            "{decoded}"
        );
        assert_eq!(token["model"], c.token_info("model"), "{decoded}");
        // The arc docs/attestation.md documents: the design's UUID under the GUID arc.
        let oid = "1.2.840.113556.1.8000.2554.49378.63801.33630.17446.36373.11347875.10197280.1";
        assert_eq!(decoded["oid"], oid, "{decoded}");
    }
}

// ---------------------------------------------------------------- (e) what must fail

#[test]
fn a_key_certificate_with_a_flipped_signature_byte_fails_verification() {
    let c = Ceremony::new("cer-flip");
    c.ready_with_keys();
    let chain_file = format!("export/keys/{}.pem", c.kid("es", "active"));
    let verify = |chain: &str| {
        c.signetd(&format!(
            "attest verify --root export/root.pem --chain {chain}"
        ))
    };
    let good = ok("the untouched chain verifies", verify(&chain_file));
    assert!(good.contains("verdict: valid"), "{good}");

    // A certificate ends with its signature: flip a bit of the last octet.
    let mut chain = pem_blocks(&c.read(&chain_file));
    let mut der = STANDARD.decode(&chain[0]).unwrap();
    *der.last_mut().unwrap() ^= 0x01;
    chain[0] = STANDARD.encode(&der);
    fs::write(c.path("flipped.pem"), to_pem(&chain)).unwrap();
    let verdict = fails(
        "attest verify of a flipped signature",
        verify("flipped.pem"),
    );
    assert!(verdict.contains("verdict: INVALID"), "{verdict}");
    assert!(verdict.contains("signature does not verify"), "{verdict}");
}

#[test]
fn a_chain_to_another_root_fails_verification() {
    let c = Ceremony::new("cer-root-a");
    c.ready_with_keys();
    // Another token's self-signed CA, with the same default subject.
    let other = Ceremony::new("cer-root-b");
    other.run("root.sh", "");
    other.run("export-public.sh", "--out export");
    fs::copy(other.path("export/root.pem"), c.path("other-root.pem")).unwrap();
    assert_ne!(c.read("export/root.pem"), c.read("other-root.pem"));

    let kid = c.kid("es", "active");
    let verify = format!("attest verify --root other-root.pem --chain export/keys/{kid}.pem");
    let verdict = c.signetd_fails(&verify);
    assert!(verdict.contains("verdict: INVALID"), "{verdict}");
    assert!(
        verdict.contains("FAIL anchored at the trusted root"),
        "{verdict}"
    );

    // Transcripts are anchored the same way.
    let transcript = c.transcripts().pop().unwrap();
    let verify = format!("ceremony verify {transcript} --root other-root.pem");
    let refused = c.signetd_fails(&verify);
    assert!(refused.contains("trusted root"), "{refused}");
}

#[test]
fn a_jwks_whose_key_differs_from_its_certificate_fails_verification() {
    let c = Ceremony::new("cer-jwk");
    c.run("root.sh", "");
    c.run("issuer-key.sh", "--issuer es");
    c.run("rotate.sh", "--issuer es");
    c.run("export-public.sh", "--out export");
    let active = c.kid("es", "active");
    let pending = c.kid("es", "pending");
    // Give the active key's JWK the pending key's point: a valid P-256 key, just not
    // the certified one.
    let mut jwks = c.json("export/jwks.json");
    let keys = jwks["keys"].as_array_mut().unwrap();
    let other = keys
        .iter()
        .find(|k| k["kid"] == pending.as_str())
        .unwrap()
        .clone();
    let jwk = keys
        .iter_mut()
        .find(|k| k["kid"] == active.as_str())
        .unwrap();
    jwk["x"] = other["x"].clone();
    jwk["y"] = other["y"].clone();
    fs::write(c.path("bad-jwks.json"), serde_json::to_vec(&jwks).unwrap()).unwrap();

    // With the chain from a file, and with the chain from the JWKS's own x5c.
    for chain in [format!("--chain export/keys/{active}.pem"), String::new()] {
        let verdict = c.signetd_fails(&format!(
            "attest verify --root export/root.pem {chain} --jwks-file bad-jwks.json --kid {active}"
        ));
        assert!(verdict.contains("verdict: INVALID"), "{verdict}");
        assert!(verdict.contains("differs"), "{verdict}");
    }
}

#[test]
fn tampered_transcripts_fail_verification() {
    let c = Ceremony::new("cer-tamper");
    c.ready_with_keys();
    let transcripts = c.transcripts();
    let original = transcripts
        .iter()
        .find(|f| f.contains("/issuer-key-"))
        .unwrap();
    c.signetd_ok(&format!(
        "ceremony verify {original} --root export/root.pem"
    ));
    let transcript = c.json(original);
    let verify = |name: &str, value: &Value| {
        fs::write(c.path(name), serde_json::to_vec_pretty(value).unwrap()).unwrap();
        c.signetd_fails(&format!("ceremony verify {name} --root export/root.pem"))
    };

    // One field of the readable copy edited.
    let mut edited = transcript.clone();
    edited["transcript"]["outcome"] = Value::from("failed: nothing happened");
    let refused = verify("readable-edited.json", &edited);
    assert!(
        refused.contains("readable copy differs from the signed payload"),
        "{refused}"
    );

    // The payload edited, with the readable copy kept equal to it.
    let payload = transcript["payload"].as_str().unwrap();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    payload["operator"]["uid"] = Value::from(4242);
    let mut edited = transcript.clone();
    edited["payload"] = Value::from(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap()));
    edited["transcript"] = payload;
    let refused = verify("payload-edited.json", &edited);
    assert!(refused.contains("signature does not verify"), "{refused}");

    // The signature removed: a pending transcript proves nothing.
    let mut stripped = transcript.clone();
    let object = stripped.as_object_mut().unwrap();
    object.remove("signature");
    object.remove("protected");
    let refused = verify("stripped.json", &stripped);
    assert!(
        refused.contains("transcript is unsigned (pending)"),
        "{refused}"
    );
}

// ---------------------------------------------------------------- (f), (g) recovery

/// An interrupted root ceremony (the CA key made, never certified) is reported with the
/// ways forward, and `root.sh --undo` clears it so a fresh root ceremony succeeds.
#[test]
fn an_interrupted_root_ceremony_is_reported_and_undone() {
    let c = Ceremony::new("cer-undo");
    c.signetd_ok("attest init-ca --config signetd.toml --csr lost.csr");
    assert_eq!(c.ca_state(), "awaiting-certificate");

    let report = c.run_fails("root.sh", "");
    assert!(report.contains("awaiting-certificate"), "{report}");
    for way in ["--import CHAIN.pem", "--resume", "--csr NEW.pem", "--undo"] {
        assert!(report.contains(way), "root.sh offers {way}: {report}");
    }
    assert_eq!(
        c.ca_state(),
        "awaiting-certificate",
        "reporting changes nothing"
    );

    let plan = c.run("root.sh", "--undo --dry-run");
    assert!(
        plan.contains("attest init-ca --config signetd.toml --undo"),
        "{plan}"
    );
    assert_eq!(
        c.ca_state(),
        "awaiting-certificate",
        "a dry run changes nothing"
    );

    c.run("root.sh", "--undo");
    assert_eq!(c.ca_state(), "missing");
    c.run("root.sh", "--self-signed");
    assert_eq!(c.ca_state(), "ready");

    let refused = c.run_fails("root.sh", "--undo");
    assert!(
        refused.contains("never destroys a certified CA"),
        "{refused}"
    );
    assert_eq!(c.ca_state(), "ready");
}

/// A key pair without state record or certificate (what an interrupted generation
/// leaves) stops the key ceremonies, which name the commands that finish or undo it;
/// once it is undone, the ceremony goes ahead.
#[test]
fn an_incomplete_key_stops_the_key_ceremonies_until_it_is_undone() {
    let c = Ceremony::new("cer-incomplete");
    c.run("root.sh", "");
    let kid = "es-20260101-0badc0de";
    let id_hex: String = kid.bytes().map(|b| format!("{b:02x}")).collect();
    let keygen = format!(
        "--module {} --token-label {} --login --keypairgen --key-type EC:prime256v1 \
         --usage-sign --id {id_hex} --label signetd/es/{kid}",
        c.var("SIGNETD_PKCS11_MODULE"),
        c.var("SIGNETD_TOKEN_LABEL"),
    );
    let mut keygen = c.command("pkcs11-tool", &keygen);
    keygen.args(["--pin", c.read("token/user.pin").trim()]);
    let out = keygen
        .output()
        .expect("run pkcs11-tool (scripts/test.sh installs opensc)");
    ok("pkcs11-tool --keypairgen", out);
    let problems = c.keys()["problems"].to_string();
    assert!(problems.contains(kid), "{problems}");

    for (script, args) in [
        ("issuer-key.sh", "--issuer es"),
        ("rotate.sh", "--issuer es"),
        ("issuer-key.sh", "--issuer es --dry-run"),
    ] {
        let report = c.run_fails(script, args);
        for command in ["keys finish", "keys destroy-incomplete"] {
            let line = format!("{command} --config signetd.toml --kid {kid}");
            assert!(report.contains(&line), "{script} names `{line}`: {report}");
        }
    }
    assert!(c.kids("es", "active").is_empty(), "nothing was generated");

    c.signetd_ok(&format!(
        "keys destroy-incomplete --config signetd.toml --kid {kid}"
    ));
    assert_eq!(c.keys()["problems"], Value::Array(vec![]));
    c.run("issuer-key.sh", "--issuer es");
    c.kid("es", "active");
}

// ---------------------------------------------------------------- complete records

/// The created entry of `kind` in a transcript file's readable copy.
fn created_entry(file: &Value, kind: &str) -> Value {
    let created = file["transcript"]["created"].as_array().unwrap();
    let entry = created.iter().find(|c| c["kind"] == kind);
    entry
        .unwrap_or_else(|| panic!("no {kind} entry: {file}"))
        .clone()
}

/// `issuer-key.sh --if-missing` (and `keys generate --if-missing --transcript`) on an
/// issuer that has its key does nothing, says so, and writes no transcript.
#[test]
fn an_if_missing_ceremony_that_generates_nothing_records_nothing() {
    let c = Ceremony::new("cer-noop");
    c.run("root.sh", "");
    c.run("issuer-key.sh", "--issuer es --if-missing");
    let es = c.kid("es", "active");
    let before = c.transcripts();
    assert!(
        before
            .iter()
            .any(|t| t.starts_with("ceremonies/issuer-key-")),
        "the first run generated and recorded: {before:?}"
    );

    let out = c.run("issuer-key.sh", "--issuer es --if-missing");
    assert!(out.contains("Nothing was done"), "{out}");
    assert!(!out.contains("ceremony finished"), "{out}");
    assert_eq!(c.transcripts(), before, "no transcript for a no-op");

    let out = c.signetd_ok(
        "keys generate --config signetd.toml --issuer es --if-missing --transcript noop.json",
    );
    assert!(
        out.contains("nothing was done") && out.contains(&es),
        "{out}"
    );
    assert!(!c.path("noop.json").exists(), "no transcript for a no-op");
    assert_eq!(c.kids("es", "active"), [es]);
}

/// `root.sh --undo` records the destroyed CA key (what, by whom, when) in a transcript
/// the next CA signs; the destroyed key's own CSR transcript is never signed by that
/// next CA, neither by root.sh nor by `ceremony sign` named explicitly.
#[test]
fn undoing_the_root_ceremony_is_recorded_and_its_transcripts_are_not_adopted() {
    let c = Ceremony::new("cer-undo-rec");
    fs::create_dir(c.path("ceremonies")).unwrap();
    c.signetd_ok(
        "attest init-ca --config signetd.toml --csr lost.csr --transcript ceremonies/root-lost.json",
    );
    let lost = c.json("ceremonies/root-lost.json");
    let lost_key = created_entry(&lost, "attestation-ca-key")["sha256"].clone();
    assert!(lost_key.is_string(), "{lost}");

    c.run("root.sh", "--undo");
    let undo: Vec<String> = c
        .transcripts()
        .into_iter()
        .filter(|t| t.starts_with("ceremonies/root-undo-"))
        .collect();
    assert_eq!(undo.len(), 1, "{:?}", c.transcripts());
    let record = c.json(&undo[0]);
    assert!(record.get("signature").is_none(), "no CA to sign it yet");
    let transcript = &record["transcript"];
    assert_eq!(transcript["ceremony"], "root-undo");
    assert_eq!(transcript["outcome"], "completed");
    assert!(transcript["operator"]["uid"].is_u64() && transcript["finished_at"].is_string());
    let destroyed = created_entry(&record, "attestation-ca-key-destroyed");
    assert_eq!(destroyed["sha256"], lost_key, "it names the destroyed key");

    let out = c.script("root.sh", "--self-signed");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("root-lost.json stays pending"), "{stderr}");
    assert_eq!(c.ca_state(), "ready");
    assert!(
        c.json(&undo[0])["signature"].is_string(),
        "the new CA signs the record of the undo"
    );
    assert!(
        c.json("ceremonies/root-lost.json")
            .get("signature")
            .is_none(),
        "the destroyed key's transcript stays pending"
    );
    // Named first among others, it is refused, and the others are still gone through.
    let refused = c.signetd_fails(&format!(
        "ceremony sign --config signetd.toml ceremonies/root-lost.json {}",
        undo[0]
    ));
    assert!(refused.contains("not this CA's key"), "{refused}");
    assert!(
        refused.contains(&format!("{} was already signed", undo[0]))
            && refused.contains("1 of 2 transcript(s) not signed"),
        "{refused}"
    );
    assert!(
        c.json("ceremonies/root-lost.json")
            .get("signature")
            .is_none()
    );

    c.run("export-public.sh", "--out export");
    let shown = c.signetd_ok(&format!(
        "ceremony verify {} --root export/root.pem",
        undo[0]
    ));
    assert!(shown.contains("attestation-ca-key-destroyed"), "{shown}");
}

/// What an interrupted generation leaves (a key pair the state store does not know) for
/// `kid`, made with OpenSC's tool.
fn incomplete_key(c: &Ceremony, kid: &str) {
    let id_hex: String = kid.bytes().map(|b| format!("{b:02x}")).collect();
    c.pkcs11_tool(&[
        "--keypairgen",
        "--key-type",
        "EC:prime256v1",
        "--usage-sign",
        "--id",
        &id_hex,
        "--label",
        &format!("signetd/es/{kid}"),
    ]);
}

/// `keys finish` and `keys destroy-incomplete` take `--transcript`; the commands the
/// ceremonies name for an incomplete key pass one in the transcript directory.
#[test]
fn finishing_or_undoing_an_incomplete_key_is_recorded() {
    let c = Ceremony::new("cer-finish");
    c.run("root.sh", "");
    let (undone, finished) = ("es-20260101-0badc0de", "es-20260101-0dd0c0de");
    incomplete_key(&c, undone);
    let report = c.run_fails("issuer-key.sh", "--issuer es");
    for (command, ceremony) in [
        ("keys finish", "finish"),
        ("keys destroy-incomplete", "destroy-incomplete"),
    ] {
        let line = format!(
            "{command} --config signetd.toml --kid {undone} --transcript ceremonies/{ceremony}-{undone}.json"
        );
        assert!(report.contains(&line), "names `{line}`: {report}");
    }
    c.signetd_ok(&format!(
        "keys destroy-incomplete --config signetd.toml --kid {undone} --transcript ceremonies/destroy-incomplete-{undone}.json"
    ));
    let record = c.json(&format!("ceremonies/destroy-incomplete-{undone}.json"));
    assert!(
        record["signature"].is_string(),
        "signed by the CA: {record}"
    );
    assert_eq!(record["transcript"]["ceremony"], "destroy-incomplete");
    assert_eq!(
        created_entry(&record, "destroyed-incomplete-key")["id"],
        undone
    );

    incomplete_key(&c, finished);
    let out = c.signetd_ok(&format!(
        "keys finish --config signetd.toml --kid {finished} --transcript ceremonies/finish.json"
    ));
    assert!(out.contains("is complete (active)"), "{out}");
    let record = c.json("ceremonies/finish.json");
    assert_eq!(record["transcript"]["ceremony"], "finish");
    assert_eq!(created_entry(&record, "issuer-key")["id"], finished);
    c.run("export-public.sh", "--out export");
    let destroyed = format!("ceremonies/destroy-incomplete-{undone}.json");
    for file in [destroyed.as_str(), "ceremonies/finish.json"] {
        c.signetd_ok(&format!("ceremony verify {file} --root export/root.pem"));
    }

    // A failed step leaves a record of the failure too.
    let refused = c.signetd_fails(
        "keys destroy-incomplete --config signetd.toml --kid es-nosuch --transcript ceremonies/failed.json",
    );
    assert!(!refused.is_empty());
    let outcome = c.json("ceremonies/failed.json")["transcript"]["outcome"].clone();
    assert!(
        outcome.as_str().unwrap().starts_with("failed: "),
        "{outcome}"
    );
}

/// A PIN file group may read (0640) is refused by the ceremony scripts before any step,
/// in the daemon's words; `ce_check_private_file` (common.sh) says the same, and
/// `signetd ceremony init-token` refuses it too.
#[test]
fn a_pin_file_the_daemon_refuses_stops_the_ceremonies_in_its_words() {
    use std::os::unix::fs::PermissionsExt;
    let c = Ceremony::new("cer-pinmode");
    let pin = c.var("SIGNETD_PIN_FILE").to_string();
    fs::set_permissions(&pin, fs::Permissions::from_mode(0o640)).unwrap();
    let words =
        format!("{pin} has mode 640: group or others can have it read or written; chmod 600 {pin}");

    let daemon = c.signetd_fails("config check --config signetd.toml");
    assert!(daemon.contains(&words), "{daemon}");
    for (script, args) in [("root.sh", ""), ("issuer-key.sh", "--issuer es")] {
        let refused = c.run_fails(script, args);
        assert!(refused.contains(&words), "{script}: {refused}");
        assert!(
            !refused.contains("SOFTHSM2_CONF"),
            "no misleading hint: {refused}"
        );
    }
    assert_eq!(c.transcripts(), Vec::<String>::new(), "nothing ran");

    let common = repo_root().join("scripts/ceremony/common.sh");
    let check = |path: &str| {
        let script = format!(
            "source {} && ce_check_private_file {path} pin_file",
            common.display()
        );
        c.command("bash", "")
            .args(["-c", &script])
            .output()
            .unwrap()
    };
    let refused = fails("ce_check_private_file", check(&pin));
    assert!(refused.contains(&format!("pin_file: {words}")), "{refused}");
    fs::set_permissions(&pin, fs::Permissions::from_mode(0o600)).unwrap();
    ok("ce_check_private_file", check(&pin));

    fs::set_permissions(&pin, fs::Permissions::from_mode(0o640)).unwrap();
    let refused = c.signetd_fails(&format!(
        "ceremony init-token --module {} --label {} --so-pin-file {} --pin-file {pin}",
        c.var("SIGNETD_PKCS11_MODULE"),
        c.var("SIGNETD_TOKEN_LABEL"),
        c.var("SIGNETD_SO_PIN_FILE"),
    ));
    assert!(refused.contains(&words), "{refused}");
    assert!(!refused.contains("640)"), "no '(or 640)': {refused}");
}

/// Key commands naming an issuer the config lacks fail and name the configured ones;
/// `keys generate --help` says when a running daemon picks the key up.
#[test]
fn key_commands_refuse_an_unknown_issuer() {
    let c = Ceremony::new("cer-unknown");
    for command in ["list", "generate", "rotate"] {
        let refused = c.signetd_fails(&format!(
            "keys {command} --config signetd.toml --issuer nosuch"
        ));
        assert!(
            refused.contains("unknown issuer \"nosuch\": the config names ed, es"),
            "keys {command}: {refused}"
        );
    }
    let help = c.signetd_ok("keys generate --help");
    assert!(help.contains("within one lifecycle tick"), "{help}");
    assert!(!help.contains("restarted"), "{help}");
}

/// Every key generation is on the audit record with who made it: by the CLI while the
/// daemon runs (seen at its next tick, the maker from the state store's history), by
/// an admin over the API (first key and rotation), and by the rotation period.
#[test]
fn every_key_generation_is_on_the_audit_record() {
    let c = Ceremony::new("cer-genaudit");
    let uid = crate::common::my_uid();
    let issuers = ["cli", "api", "auto"]
        .map(|name| issuer_toml(name, Algorithm::Es256))
        .concat();
    let config = format!(
        "{issuers}max_ttl_seconds = 1\nrotation_period_seconds = 4\n{}",
        crate::common::lifecycle_toml()
    );
    c.write_config(&config);
    c.run("root.sh", "");
    // `serve` waits for `status`, which wants every issuer to have a key; the first
    // keys of `cli` and `api` are revoked below to make room for a first key again.
    for issuer in ["cli", "api", "auto"] {
        c.signetd_ok(&format!(
            "keys generate --config signetd.toml --issuer {issuer}"
        ));
    }
    let (cli_first, api_first) = (c.kid("cli", "active"), c.kid("api", "active"));
    let auto = c.kid("auto", "active");
    let socket = c.path("signetd.sock");
    let _daemon = c.serve(&c.path("signetd.toml"), &socket);

    c.signetd_ok(&format!(
        "keys revoke --config signetd.toml --kid {cli_first}"
    ));
    c.signetd_ok("keys generate --config signetd.toml --issuer cli");
    let cli = c.kid("cli", "active");
    c.signetd_ok("keys rotate --config signetd.toml --issuer cli");
    let cli_next = c.kid("cli", "pending");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = |path: &str, body: Option<Value>| {
        let reply = runtime.block_on(crate::common::request_unix(
            &socket,
            Method::POST,
            path,
            body.as_ref(),
        ));
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.json);
        reply.json["kid"].as_str().unwrap_or_default().to_string()
    };
    post(&format!("/v1/keys/{api_first}/revoke"), None);
    let api = post("/v1/keys", Some(serde_json::json!({"issuer": "api"})));
    let api_next = post("/v1/issuers/api/rotate", Some(serde_json::json!({})));

    let audit = c.audit_dir();
    let record = |event: &str, kid: &str| {
        crate::common::audit_records(&audit)
            .into_iter()
            .find(|r| r["event"] == event && r["kid"] == kid)
    };
    let auto_next = runtime.block_on(crate::common::eventually(30, async || {
        crate::common::audit_records(&audit)
            .iter()
            .any(|r| r["event"] == "key_rotate" && r["issuer"] == "auto")
            && record("key_generate", &cli).is_some()
            && record("key_rotate", &cli_next).is_some()
    }));
    assert!(
        auto_next,
        "records: {:?}",
        crate::common::audit_records(&audit)
    );

    let by_cli = format!("generated outside the daemon by cli uid {uid} at ");
    let generated = record("key_generate", &cli).unwrap();
    let detail = generated["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&by_cli) && detail.ends_with(", now active"),
        "{generated}"
    );
    let rotated = record("key_rotate", &cli_next).unwrap();
    let detail = rotated["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&by_cli) && detail.ends_with(", now pending"),
        "{rotated}"
    );
    assert_eq!(record("key_generate", &api).unwrap()["caller"]["uid"], uid);
    assert_eq!(
        record("key_rotate", &api_next).unwrap()["caller"]["uid"],
        uid
    );
    let automatic = crate::common::audit_records(&audit)
        .into_iter()
        .find(|r| r["event"] == "key_rotate" && r["issuer"] == "auto")
        .unwrap();
    assert_eq!(automatic["caller"]["name"], "lifecycle", "{automatic}");
    assert_ne!(automatic["kid"], auto.as_str());
    // Each generation once: the daemon's own keys are not seen again as made outside it.
    for kid in [&cli, &cli_next, &api, &api_next] {
        let records = crate::common::audit_records(&audit);
        let generations = records.iter().filter(|r| {
            r["kid"] == kid.as_str() && (r["event"] == "key_generate" || r["event"] == "key_rotate")
        });
        assert_eq!(generations.count(), 1, "{kid}");
    }
}

/// The export checks each signed transcript against the token as well as the root: a
/// ceremony that failed, and one whose key the token no longer holds, are flagged
/// (valid records, kept and published), while the others stay `ok`.
#[test]
fn the_export_flags_failed_ceremonies_and_keys_the_token_no_longer_holds() {
    let c = Ceremony::new("signetd-cer-flags");
    c.ready_with_keys();
    let ed = c.kid("ed", "active");
    // A failed step still leaves a transcript, signed since the CA is ready.
    c.signetd_fails(
        "keys revoke --config signetd.toml --kid es-20200101-00000000 --transcript ceremonies/failed-revoke.json",
    );
    // The ed key's private half is deleted behind signetd's back.
    let id: String = ed.bytes().map(|b| format!("{b:02x}")).collect();
    c.pkcs11_tool(&["--delete-object", "--type", "privkey", "--id", &id]);

    let out = c.run("export-public.sh", "--out export-again");
    let flagged = |name: &str| {
        out.lines()
            .any(|l| l.starts_with("FLAG ") && l.contains(name))
    };
    assert!(flagged("failed-revoke.json"), "{out}");
    assert!(out.contains("the ceremony did not complete"), "{out}");
    assert!(
        out.contains(&format!("key {ed} it created is not in the token")),
        "{out}"
    );
    // The es key's transcript is checked and clean.
    let es = c.kid("es", "active");
    let es_transcript = c
        .transcripts()
        .into_iter()
        .find(|t| c.read(t).contains(&es))
        .expect("a transcript names the es key");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok ") && l.contains(&es_transcript)),
        "{out}"
    );
}
