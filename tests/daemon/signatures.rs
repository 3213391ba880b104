//! Signatures have one valid form: ES256 signatures are low-S when minted and when
//! signed raw, and `/v1/verify` refuses a high-S copy. Ed25519 goes by `EdDSA` or, if
//! the issuer says so, RFC 9864's `Ed25519`; the verifier accepts both, and PyJWT checks
//! what the daemon emits.

use std::process::Command;

use p256::ecdsa::Signature;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::token::jws::{b64, unb64};

use crate::common::{
    TestDaemon, decode_parts, generate_key, generate_raw_key, issuer_toml, raw_issuer_toml,
    repo_root, sign_as,
};

/// Whether `s ≤ n/2`: `normalize_s` changes only a high S.
fn is_low_s(signature: &Signature) -> bool {
    signature.normalize_s().is_none()
}

/// The same token with `s` replaced by `n − s`: still valid ECDSA over the same input.
fn high_s_copy(token: &str) -> String {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = Signature::from_slice(&unb64(signature).unwrap()).unwrap();
    let flipped = Signature::from_scalars(signature.r(), -*signature.s()).unwrap();
    assert!(!is_low_s(&flipped));
    format!("{input}.{}", b64(flipped.to_bytes()))
}

async fn verify(daemon: &TestDaemon, token: &str) -> (u16, String) {
    let reply = daemon
        .post("/v1/verify", &json!({"token": token, "audience": "api"}))
        .await;
    (reply.status, reply.code().to_string())
}

#[tokio::test]
async fn minted_es256_signatures_are_low_s_and_a_high_s_copy_is_refused() {
    generate_key("sig-low", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("sig-low", Algorithm::Es256)).await;
    // About half of raw ECDSA signatures are high-S, so 40 mints all but surely meet
    // several the daemon had to normalise (1 in 2^40 that none needed it).
    for _ in 0..40 {
        let reply = daemon
            .post("/v1/tokens", &json!({"issuer": "sig-low", "aud": "api"}))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        let token = reply.json["token"].as_str().unwrap();
        let signature = unb64(token.rsplit_once('.').unwrap().1).unwrap();
        assert!(
            is_low_s(&Signature::from_slice(&signature).unwrap()),
            "{token}"
        );
    }
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer": "sig-low", "aud": "api"}))
        .await;
    let token = reply.json["token"].as_str().unwrap();
    assert_eq!(verify(&daemon, token).await, (200, "<none>".to_string()));
    let copy = high_s_copy(token);
    assert_ne!(copy, token);
    assert_eq!(
        verify(&daemon, &copy).await,
        (422, "bad_signature".to_string())
    );
    // The daemon keeps serving, and the original still verifies.
    assert_eq!(verify(&daemon, token).await.0, 200);
}

#[tokio::test]
async fn raw_es256_signatures_are_low_s_in_both_formats() {
    generate_raw_key("sig-raw-low", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&raw_issuer_toml("sig-raw-low", Algorithm::Es256)).await;
    for i in 0u8..20 {
        let digest = b64([i; 32]);
        for format in ["jws", "der"] {
            let reply = daemon
                .post(
                    "/v1/sign",
                    &json!({"issuer": "sig-raw-low", "digest": digest, "format": format}),
                )
                .await;
            assert_eq!(reply.status, 200, "{:?}", reply.json);
            let bytes = unb64(reply.json["signature"].as_str().unwrap()).unwrap();
            let signature = match format {
                "jws" => Signature::from_slice(&bytes).unwrap(),
                _ => Signature::from_der(&bytes).unwrap(),
            };
            assert!(is_low_s(&signature), "{format} signature {i}");
        }
    }
}

fn ed25519_issuer(name: &str, eddsa_alg: &str) -> String {
    format!(
        "{}eddsa_alg = \"{eddsa_alg}\"\n",
        issuer_toml(name, Algorithm::EdDsa)
    )
}

/// `header` with `alg` replaced, signed again by the same key.
async fn renamed(kid: &str, token: &str, alg: &str) -> String {
    let (mut header, claims) = decode_parts(token);
    header["alg"] = json!(alg);
    sign_as(kid, &header, &claims).await
}

#[tokio::test]
async fn an_issuer_can_name_ed25519_either_way_and_verify_accepts_both() {
    let kid_new = generate_key("sig-ed-new", Algorithm::EdDsa).await;
    let kid_old = generate_key("sig-ed-old", Algorithm::EdDsa).await;
    let config = format!(
        "{}{}",
        ed25519_issuer("sig-ed-new", "Ed25519"),
        issuer_toml("sig-ed-old", Algorithm::EdDsa)
    );
    let daemon = TestDaemon::start(&config).await;
    let jwks = daemon.get("/.well-known/jwks.json").await.json;
    let jwk_alg = |kid: &str| {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()["alg"]
            .clone()
    };
    assert_eq!(jwk_alg(&kid_new), "Ed25519");
    assert_eq!(jwk_alg(&kid_old), "EdDSA", "the default");
    let key = daemon.get(&format!("/v1/keys/{kid_new}")).await.json;
    assert_eq!(
        key["jwk"]["alg"], "Ed25519",
        "/v1/keys agrees with the JWKS"
    );

    for (issuer, kid, emitted, other) in [
        ("sig-ed-new", &kid_new, "Ed25519", "EdDSA"),
        ("sig-ed-old", &kid_old, "EdDSA", "Ed25519"),
    ] {
        let reply = daemon
            .post("/v1/tokens", &json!({"issuer": issuer, "aud": "api"}))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        let token = reply.json["token"].as_str().unwrap().to_string();
        assert_eq!(decode_parts(&token).0["alg"], emitted);
        assert_eq!(verify(&daemon, &token).await.0, 200, "{issuer}");
        let token = renamed(kid, &token, other).await;
        assert_eq!(verify(&daemon, &token).await.0, 200, "{issuer} as {other}");
        let token = renamed(kid, &token, "Ed448").await;
        assert_eq!(
            verify(&daemon, &token).await,
            (422, "algorithm_not_allowed".to_string())
        );
    }
}

fn python() -> String {
    std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// PyJWT 2.15 has no `Ed25519` algorithm: it refuses such a JWK outright. This is why
/// `EdDSA` stays the default; when PyJWT learns the name, this test says so.
#[test]
fn stock_pyjwt_does_not_know_the_ed25519_name() {
    let out = Command::new(python())
        .args([
            "-c",
            "import jwt\n\
             k = {'kty': 'OKP', 'crv': 'Ed25519', 'x': '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo'}\n\
             jwt.PyJWK(dict(k, alg='EdDSA'))\n\
             try:\n    jwt.PyJWK(dict(k, alg='Ed25519')); print('knows')\n\
             except jwt.PyJWKError: print('unknown')",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unknown",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_a_token_named_ed25519_against_the_served_jwks() {
    generate_key("sig-ed-py", Algorithm::EdDsa).await;
    let daemon = TestDaemon::start(&ed25519_issuer("sig-ed-py", "Ed25519")).await;
    let reply = daemon
        .post(
            "/v1/tokens",
            &json!({"issuer": "sig-ed-py", "aud": "api", "claims": {"scope": "read"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["token"].as_str().unwrap().to_string();
    let url = format!("http://{}/.well-known/jwks.json", daemon.http);
    let run = |token: &str| {
        Command::new(python())
            .arg(repo_root().join("tests/interop/verify_jwt.py"))
            .args(["--jwks-url", &url, "--iss", "https://sig-ed-py.example"])
            .args(["--aud", "api", "--max-ttl", "60", "--alg", "Ed25519", token])
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| run(&token));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["scope"], "read");
    // A changed payload fails there too.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = b64(r#"{"scope":"admin"}"#);
    parts[1] = &forged;
    let out = tokio::task::block_in_place(|| run(&parts.join(".")));
    assert!(!out.status.success());
}
