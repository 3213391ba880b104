//! Independent verification: PyJWT (through tests/interop/verify_jwt.py) checks tokens
//! minted by the real daemon against the JWKS it serves over HTTP.

use std::process::Command;

use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{TestDaemon, generate_key, issuer_toml, repo_root};

/// The Python with PyJWT: `SIGNETD_TEST_PYTHON` (scripts/test.sh sets it to its venv),
/// else `python3`. A missing PyJWT fails the test: it must not pass by not running.
fn python() -> String {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{python} cannot import PyJWT and cryptography: run scripts/test.sh, which installs them into \
             target/test-venv, or set SIGNETD_TEST_PYTHON to a Python that has them"
        ),
    }
}

struct PyVerdict {
    valid: bool,
    claims: Value,
    stderr: String,
}

fn pyjwt_verify(
    daemon: &TestDaemon,
    token: &str,
    iss: &str,
    aud: &str,
    max_ttl: u64,
    alg: Algorithm,
) -> PyVerdict {
    let url = format!("http://{}/.well-known/jwks.json", daemon.http);
    let out = Command::new(python())
        .arg(repo_root().join("tests/interop/verify_jwt.py"))
        .args([
            "--jwks-url",
            &url,
            "--iss",
            iss,
            "--aud",
            aud,
            "--max-ttl",
            &max_ttl.to_string(),
        ])
        .args(["--alg", alg.jws_name(), token])
        .output()
        .unwrap();
    PyVerdict {
        valid: out.status.success(),
        claims: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn check(issuer: &str, algorithm: Algorithm) {
    generate_key(issuer, algorithm).await;
    let daemon = TestDaemon::start(&issuer_toml(issuer, algorithm)).await;
    let iss = format!("https://{issuer}.example");
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":issuer,"sub":"svc-a","aud":"api","ttl_seconds":45,"claims":{"scope":"read"}}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["token"].as_str().unwrap().to_string();

    let verdict =
        tokio::task::block_in_place(|| pyjwt_verify(&daemon, &token, &iss, "api", 60, algorithm));
    assert!(
        verdict.valid,
        "PyJWT rejected a valid {algorithm} token: {}",
        verdict.stderr
    );
    assert_eq!(verdict.claims["iss"], iss.as_str());
    assert_eq!(verdict.claims["aud"], "api");
    assert_eq!(verdict.claims["scope"], "read");
    let (iat, exp) = (
        verdict.claims["iat"].as_u64().unwrap(),
        verdict.claims["exp"].as_u64().unwrap(),
    );
    assert!(exp - iat <= 60, "exp - iat within the cap");

    // The same verifier rejects what it must: a changed payload, a wrong audience or
    // issuer, and a lifetime above what the verifier allows.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims: Value =
        serde_json::from_slice(&signetd::token::jws::unb64(&parts[1]).unwrap()).unwrap();
    claims["scope"] = json!("admin");
    parts[1] = signetd::token::jws::b64(serde_json::to_vec(&claims).unwrap());
    let tampered = parts.join(".");
    let rejections = tokio::task::block_in_place(|| {
        [
            pyjwt_verify(&daemon, &tampered, &iss, "api", 60, algorithm),
            pyjwt_verify(&daemon, &token, &iss, "web", 60, algorithm),
            pyjwt_verify(
                &daemon,
                &token,
                "https://other.example",
                "api",
                60,
                algorithm,
            ),
            pyjwt_verify(&daemon, &token, &iss, "api", 30, algorithm),
        ]
    });
    for verdict in rejections {
        assert!(
            !verdict.valid && verdict.stderr.contains("INVALID"),
            "{}",
            verdict.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_es256_tokens_against_the_served_jwks() {
    check("interop-es", Algorithm::Es256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_eddsa_tokens_against_the_served_jwks() {
    check("interop-ed", Algorithm::EdDsa).await;
}

/// A raw-signing caller signs a JWT of its own making that claims another issuer's
/// `iss`. Neither PyJWT nor signetd's verifier may accept it: the raw key is not in the
/// JWKS, and naming a JWT key's kid does not make the raw key's signature verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_signature_cannot_pass_as_a_token_of_any_issuer() {
    let jwt_kid = generate_key("interop-victim", Algorithm::Es256).await;
    let raw_kid = crate::common::generate_raw_key("interop-forger", Algorithm::Es256).await;
    let config = format!(
        "{}{}raw_sign = true\n",
        issuer_toml("interop-victim", Algorithm::Es256),
        issuer_toml("interop-forger", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    let now = signetd::service::unix_now();
    let claims = json!({"iss":"https://interop-victim.example","aud":"api","sub":"admin","iat":now,"exp":now + 30,"jti":"forged"});
    for kid in [&raw_kid, &jwt_kid] {
        let header = json!({"alg":"ES256","typ":"JWT","kid":kid});
        let input = format!(
            "{}.{}",
            signetd::token::jws::b64(header.to_string()),
            signetd::token::jws::b64(claims.to_string())
        );
        let reply = daemon
            .post(
                "/v1/sign",
                &json!({"issuer":"interop-forger","message": signetd::token::jws::b64(&input)}),
            )
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        let forged = format!("{input}.{}", reply.json["signature"].as_str().unwrap());
        let verdict = tokio::task::block_in_place(|| {
            pyjwt_verify(
                &daemon,
                &forged,
                "https://interop-victim.example",
                "api",
                60,
                Algorithm::Es256,
            )
        });
        assert!(
            !verdict.valid,
            "PyJWT accepted a forged token under kid {kid}"
        );
        let jwks: signetd::keys::JwkSet =
            serde_json::from_slice(&daemon.get("/.well-known/jwks.json").await.raw).unwrap();
        let expected = signetd::token::verify::Expected {
            now,
            leeway: 5,
            ..Default::default()
        };
        let err = signetd::token::verify::verify(&forged, &jwks, &expected).unwrap_err();
        assert!(
            matches!(err.code(), "unknown_key" | "bad_signature"),
            "{err}"
        );
    }
}

/// After a key or a jti is revoked and the cache lifetime has passed, a PyJWT verifier
/// that refetches the JWKS and checks signetd's revocation list rejects the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_rejects_revoked_keys_and_tokens_once_the_cache_lifetime_has_passed() {
    generate_key("interop-rev", Algorithm::Es256).await;
    let kid = generate_key("interop-rev-key", Algorithm::Es256).await;
    let config = format!(
        "{}{}{}",
        issuer_toml("interop-rev", Algorithm::Es256),
        issuer_toml("interop-rev-key", Algorithm::Es256),
        crate::common::lifecycle_toml()
    );
    let daemon = TestDaemon::start(&config).await;
    let check = |token: &str, iss: &str| {
        let out = Command::new(python())
            .arg(repo_root().join("tests/interop/verify_jwt.py"))
            .args([
                "--jwks-url",
                &format!("http://{}/.well-known/jwks.json", daemon.http),
            ])
            .args([
                "--revocations-url",
                &format!("http://{}/v1/revocations", daemon.http),
            ])
            .args(["--iss", iss, "--aud", "api", "--max-ttl", "60", token])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mint = async |issuer: &str| {
        daemon
            .post("/v1/tokens", &json!({"issuer": issuer, "aud": "api"}))
            .await
            .json
    };
    let by_jti = mint("interop-rev").await;
    let by_key = mint("interop-rev-key").await;
    let (jti_token, key_token) = (
        by_jti["token"].as_str().unwrap(),
        by_key["token"].as_str().unwrap(),
    );
    let (ok, why) = tokio::task::block_in_place(|| check(jti_token, "https://interop-rev.example"));
    assert!(ok, "valid before revocation: {why}");

    let revoked = daemon
        .post(
            "/v1/revocations",
            &json!({"jti": by_jti["jti"], "exp": by_jti["expires_at"]}),
        )
        .await;
    assert_eq!(revoked.status, 200);
    assert_eq!(
        daemon
            .post(&format!("/v1/keys/{kid}/revoke"), &json!({}))
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // the 1 s cache lifetime
    let (ok, why) = tokio::task::block_in_place(|| check(jti_token, "https://interop-rev.example"));
    assert!(!ok && why.contains("revoked"), "{why}");
    let (ok, why) =
        tokio::task::block_in_place(|| check(key_token, "https://interop-rev-key.example"));
    assert!(!ok && why.contains("INVALID"), "{why}");
}
