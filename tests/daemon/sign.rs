//! `POST /v1/sign`: raw signatures with an issuer's key, only where the issuer allows it.

use serde_json::json;
use sha2::{Digest, Sha256};
use signetd::Algorithm;
use signetd::token::jws::{b64, unb64};

use crate::common::{TestDaemon, generate_key, generate_raw_key, issuer_toml, raw_issuer_toml};

async fn public_jwk(daemon: &TestDaemon, kid: &str) -> signetd::keys::Jwk {
    let reply = daemon.get(&format!("/v1/keys/{kid}")).await;
    assert_eq!(reply.status, 200);
    serde_json::from_value(reply.json["jwk"].clone()).unwrap()
}

#[tokio::test]
async fn es256_signs_a_digest_in_jws_and_der_form() {
    let kid = generate_raw_key("sign-es", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&raw_issuer_toml("sign-es", Algorithm::Es256)).await;
    let message = b"attested build output";
    let digest = Sha256::digest(message);

    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-es","digest": b64(digest)}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["kid"], kid.as_str());
    assert_eq!(reply.json["alg"], "ES256");
    assert_eq!(reply.json["format"], "jws");
    let signature = unb64(reply.json["signature"].as_str().unwrap()).unwrap();
    // The JWK verifies over the message, whose SHA-256 is the digest we sent.
    public_jwk(&daemon, &kid)
        .await
        .verify(message, &signature)
        .unwrap();
    assert!(
        public_jwk(&daemon, &kid)
            .await
            .verify(b"something else", &signature)
            .is_err()
    );

    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-es","digest": b64(digest),"format":"der"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let der = unb64(reply.json["signature"].as_str().unwrap()).unwrap();
    assert_eq!(der[0], 0x30, "DER SEQUENCE");
    let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
    public_jwk(&daemon, &kid)
        .await
        .verify(message, &parsed.to_bytes())
        .unwrap();

    // A message is hashed on the host for ES256.
    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-es","message": b64(message)}),
        )
        .await;
    assert_eq!(reply.status, 200);
    let signature = unb64(reply.json["signature"].as_str().unwrap()).unwrap();
    public_jwk(&daemon, &kid)
        .await
        .verify(message, &signature)
        .unwrap();
}

#[tokio::test]
async fn eddsa_signs_a_message_and_refuses_digests_and_der() {
    let kid = generate_raw_key("sign-ed", Algorithm::EdDsa).await;
    let daemon = TestDaemon::start(&raw_issuer_toml("sign-ed", Algorithm::EdDsa)).await;
    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-ed","message": b64(b"hello")}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.json["alg"], "EdDSA");
    let signature = unb64(reply.json["signature"].as_str().unwrap()).unwrap();
    public_jwk(&daemon, &kid)
        .await
        .verify(b"hello", &signature)
        .unwrap();

    let digest = b64(Sha256::digest(b"hello"));
    let reply = daemon
        .post("/v1/sign", &json!({"issuer":"sign-ed","digest": digest}))
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"));
    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-ed","message": b64(b"x"),"format":"der"}),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"));
}

#[tokio::test]
async fn sign_input_must_be_exactly_one_well_formed_value() {
    generate_raw_key("sign-bad", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&raw_issuer_toml("sign-bad", Algorithm::Es256)).await;
    for body in [
        json!({"issuer":"sign-bad","digest": b64([0u8; 31])}),
        json!({"issuer":"sign-bad","digest": "not base64!"}),
        json!({"issuer":"sign-bad"}),
        json!({"issuer":"sign-bad","digest": b64([0u8; 32]),"message":"aGk"}),
        json!({"issuer":"sign-bad","digest": b64([0u8; 32]),"format":"pem"}),
    ] {
        let reply = daemon.post("/v1/sign", &body).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn raw_signing_and_minting_never_share_a_key() {
    generate_key("sign-jwt", Algorithm::Es256).await;
    let raw_kid = generate_raw_key("sign-raw", Algorithm::Es256).await;
    let config = format!(
        "{}{}",
        issuer_toml("sign-jwt", Algorithm::Es256),
        raw_issuer_toml("sign-raw", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    let reply = daemon
        .post(
            "/v1/sign",
            &json!({"issuer":"sign-jwt","digest": b64([1u8; 32])}),
        )
        .await;
    assert_eq!((reply.status, reply.code()), (403, "raw_sign_disabled"));
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"sign-raw","aud":"api"}))
        .await;
    assert_eq!((reply.status, reply.code()), (403, "mint_disabled"));
    // The raw-signing key is described by kid, but JWT verifiers never see it.
    assert_eq!(daemon.get(&format!("/v1/keys/{raw_kid}")).await.status, 200);
    let jwks = daemon.get("/.well-known/jwks.json").await;
    assert!(
        jwks.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != raw_kid.as_str())
    );
    // Minting with the JWT issuer is unaffected.
    let reply = daemon
        .post("/v1/tokens", &json!({"issuer":"sign-jwt","aud":"api"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

/// A key generated for raw signatures stays one when the operator later turns
/// `raw_sign` off: it is not published, does not mint, and verifies no JWT.
#[tokio::test]
async fn a_raw_signing_key_is_never_trusted_for_jwts_even_if_the_config_changes() {
    let kid = generate_raw_key("sign-flip", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("sign-flip", Algorithm::Es256),
        crate::common::lifecycle_toml()
    ))
    .await;
    let jwks = daemon.get("/.well-known/jwks.json").await;
    assert!(
        jwks.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kid"] != kid.as_str())
    );
    assert_eq!(
        daemon.get(&format!("/v1/keys/{kid}")).await.json["purpose"],
        "raw"
    );
    let mint = daemon
        .post("/v1/tokens", &json!({"issuer": "sign-flip", "aud": "api"}))
        .await;
    assert_eq!((mint.status, mint.code()), (503, "no_active_key"));
    let now = signetd::service::unix_now();
    let forged = crate::common::sign_as(
        &kid,
        &json!({"alg": "ES256", "typ": "JWT", "kid": kid}),
        &json!({"iss": "https://sign-flip.example", "aud": "api", "iat": now, "exp": now + 30, "jti": "f"}),
    )
    .await;
    let verdict = daemon
        .post("/v1/verify", &json!({"token": forged, "audience": "api"}))
        .await;
    assert_eq!((verdict.status, verdict.code()), (422, "unknown_key"));
}
