//! Minting over the Unix socket, end to end.

use serde_json::json;
use sha2::{Digest, Sha256};
use signetd::Algorithm;
use signetd::keys::JwkSet;
use signetd::token::verify::{self, Expected};

use crate::common::{TestDaemon, decode_parts, generate_key, issuer_toml};

async fn jwks(daemon: &TestDaemon) -> JwkSet {
    serde_json::from_slice(&daemon.get("/.well-known/jwks.json").await.raw).unwrap()
}

#[tokio::test]
async fn es256_token_has_daemon_owned_claims_and_verifies() {
    let kid = generate_key("mint-es", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("mint-es", Algorithm::Es256)).await;
    let reply = daemon
        .post(
            "/v1/tokens",
            &json!({"issuer":"mint-es","sub":"alice","aud":"api","ttl_seconds":30,"claims":{"scope":"read","n":7}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["token"].as_str().unwrap();
    let (header, claims) = decode_parts(token);
    assert_eq!(header, json!({"alg":"ES256","typ":"JWT","kid":kid}));
    assert_eq!(claims["iss"], "https://mint-es.example");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["scope"], "read");
    assert_eq!(claims["n"], 7);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 30);
    assert!(iat.abs_diff(signetd::service::unix_now()) <= 5);
    assert_eq!(reply.json["kid"], kid.as_str());
    assert_eq!(reply.json["jti"], claims["jti"]);
    assert_eq!(reply.json["expires_at"], exp);
    let jti = signetd::token::jws::unb64(claims["jti"].as_str().unwrap()).unwrap();
    assert_eq!(jti.len(), 16, "jti is 128 bits");
    let digest = Sha256::digest(token.as_bytes());
    assert_eq!(reply.json["token_sha256"], signetd::service::hex(&digest));

    let keys = jwks(&daemon).await;
    let expected = Expected {
        issuer: Some("https://mint-es.example"),
        audience: Some("api"),
        max_ttl: Some(60),
        now: iat,
        leeway: 0,
        profile: Some(signetd::token::profile::Profile::Jwt),
    };
    verify::verify(token, &keys, &expected).expect("the token verifies against the served JWKS");
    // A flipped signature bit must not verify: the check above can fail.
    let mut forged = token.to_string();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert!(verify::verify(&forged, &keys, &expected).is_err());
}

#[tokio::test]
async fn eddsa_token_verifies_and_ttl_defaults_to_the_issuer_max() {
    let kid = generate_key("mint-ed", Algorithm::EdDsa).await;
    let daemon = TestDaemon::start(&issuer_toml("mint-ed", Algorithm::EdDsa)).await;
    let reply = daemon
        .post(
            "/v1/tokens",
            &json!({"issuer":"mint-ed","aud":["api","web"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["token"].as_str().unwrap();
    let (header, claims) = decode_parts(token);
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], kid.as_str());
    assert_eq!(claims["aud"], json!(["api", "web"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        60
    );
    assert!(claims.get("sub").is_none());
    let expected = Expected {
        audience: Some("web"),
        now: claims["iat"].as_u64().unwrap(),
        ..Expected::default()
    };
    verify::verify(token, &jwks(&daemon).await, &expected).unwrap();
}

#[tokio::test]
async fn concurrent_mints_all_succeed_with_distinct_jtis() {
    generate_key("mint-many", Algorithm::Es256).await;
    let daemon =
        std::sync::Arc::new(TestDaemon::start(&issuer_toml("mint-many", Algorithm::Es256)).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let daemon = daemon.clone();
        tasks.push(tokio::spawn(async move {
            let mut jtis = Vec::new();
            for _ in 0..10 {
                let reply = daemon
                    .post("/v1/tokens", &json!({"issuer":"mint-many","aud":"api"}))
                    .await;
                assert_eq!(reply.status, 200, "{:?}", reply.json);
                jtis.push(reply.json["jti"].as_str().unwrap().to_string());
            }
            jtis
        }));
    }
    let mut all = std::collections::HashSet::new();
    for task in tasks {
        for jti in task.await.unwrap() {
            assert!(all.insert(jti), "duplicate jti");
        }
    }
    assert_eq!(all.len(), 160);
}

#[tokio::test]
async fn token_mint_cli_talks_to_the_daemon_socket() {
    generate_key("mint-cli", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("mint-cli", Algorithm::Es256)).await;
    let out = mint_cli(
        &daemon,
        &[
            "--issuer",
            "mint-cli",
            "--aud",
            "api",
            "--sub",
            "bob",
            "--claim",
            "nonce=abc",
        ],
        &["--claim", "level=3", "--ttl", "20"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let (_, claims) = decode_parts(token.trim());
    assert_eq!(
        (
            claims["sub"].as_str(),
            claims["nonce"].as_str(),
            claims["level"].as_u64()
        ),
        (Some("bob"), Some("abc"), Some(3))
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        20
    );

    // A refusal comes back as a clear message and a failing exit status.
    let out = mint_cli(
        &daemon,
        &["--issuer", "mint-cli", "--aud", "elsewhere"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("audience_not_allowed") && stderr.contains("422"),
        "{stderr}"
    );
}

/// Runs `signetd token mint ARGS... --socket <daemon's socket>` off the async runtime.
async fn mint_cli(daemon: &TestDaemon, args: &[&str], more: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(crate::common::signetd_bin());
    command
        .args(["token", "mint"])
        .args(args)
        .args(more)
        .arg("--socket")
        .arg(&daemon.socket);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}
