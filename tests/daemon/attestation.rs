//! Attestation, end to end on the test token: every published key carries a chain that
//! verifies to the CA; keys that could leave the token are never attested.

use std::time::SystemTime;

use base64::Engine;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use hyper::Method;
use serde_json::json;
use signetd::Algorithm;
use signetd::attest::certificate::from_pem;
use signetd::attest::verify::verify_key_attestation;
use signetd::keys::{self, Jwk, JwkSet, KeyStoreError};
use signetd::store::KeyMetadata;

use crate::common::{TestDaemon, ca, generate_key, hsm, issuer_toml, kids, token};

fn x5c(jwk: &Jwk) -> Vec<Vec<u8>> {
    let standard = base64::engine::general_purpose::STANDARD;
    jwk.x5c
        .as_ref()
        .expect("x5c")
        .iter()
        .map(|c| standard.decode(c).unwrap())
        .collect()
}

#[tokio::test]
async fn every_published_key_carries_a_chain_that_verifies_to_the_ca() {
    let es = generate_key("att-es", Algorithm::Es256).await;
    let ed = generate_key("att-ed", Algorithm::EdDsa).await;
    let config = format!(
        "{}{}",
        issuer_toml("att-es", Algorithm::Es256),
        issuer_toml("att-ed", Algorithm::EdDsa)
    );
    let daemon = TestDaemon::start(&config).await;
    let jwks: JwkSet =
        serde_json::from_slice(&daemon.get("/.well-known/jwks.json").await.raw).unwrap();
    let root = ca().await.top().to_vec();
    for kid in [&es, &ed] {
        let jwk = jwks.keys.iter().find(|k| &k.kid == kid).unwrap();
        let chain = x5c(jwk);
        assert_eq!(chain.len(), 2, "key certificate, then the CA");
        let verdict = verify_key_attestation(&chain, &root, Some(jwk), SystemTime::now());
        assert!(verdict.ok(), "{:#?}", verdict.checks);
        let attestation = verdict.attestation.unwrap();
        assert_eq!(attestation.key_id.as_bytes(), kid.as_bytes());
        assert_eq!(
            attestation.token.serial_number,
            token().var("SIGNETD_TOKEN_SERIAL")
        );
    }

    // The same chain as PEM, from the attestation endpoint.
    let reply = daemon
        .tcp(Method::GET, &format!("/v1/keys/{es}/attestation"), &[], b"")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        "application/pem-certificate-chain"
    );
    let pem_chain = from_pem(std::str::from_utf8(&reply.raw).unwrap()).unwrap();
    let jwk = jwks.keys.iter().find(|k| k.kid == es).unwrap();
    assert_eq!(pem_chain, x5c(jwk));
    let key = daemon.get(&format!("/v1/keys/{es}")).await;
    assert_eq!(
        from_pem(key.json["certificate"].as_str().unwrap()).unwrap()[0],
        pem_chain[0]
    );
    assert_eq!(
        daemon.get("/v1/keys/nope/attestation").await.code(),
        "unknown_key"
    );
}

#[tokio::test]
async fn verification_names_what_is_wrong() {
    let kid = generate_key("att-neg", Algorithm::Es256).await;
    let other = generate_key("att-neg-other", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("att-neg", Algorithm::Es256),
        issuer_toml("att-neg-other", Algorithm::Es256)
    ))
    .await;
    let jwks: JwkSet =
        serde_json::from_slice(&daemon.get("/.well-known/jwks.json").await.raw).unwrap();
    let jwk = jwks.keys.iter().find(|k| k.kid == kid).unwrap();
    let other_jwk = jwks.keys.iter().find(|k| k.kid == other).unwrap();
    let root = ca().await.top().to_vec();
    let chain = x5c(jwk);
    let failure = |chain: &[Vec<u8>], root: &[u8], jwk: &Jwk| {
        let verdict = verify_key_attestation(chain, root, Some(jwk), SystemTime::now());
        let f = verdict
            .first_failure()
            .expect("verification must fail")
            .clone();
        format!("{}: {}", f.name, f.detail)
    };

    let mut flipped = chain.clone();
    let last = flipped[0].len() - 1;
    flipped[0][last] ^= 0x01;
    assert!(
        failure(&flipped, &root, jwk).contains("link 0 -> 1"),
        "{}",
        failure(&flipped, &root, jwk)
    );

    // Another certificate as the "root": the chain does not lead to it.
    let foreign = x5c(other_jwk)[0].clone();
    assert!(failure(&chain, &foreign, jwk).contains("does not lead to the trusted root"));

    // A JWK whose key is not the certificate's.
    let mut swapped = jwk.clone();
    swapped.x = other_jwk.x.clone();
    swapped.y = other_jwk.y.clone();
    assert!(failure(&chain, &root, &swapped).contains("differs"));

    // Validity is checked at the time asked for.
    let long_ago = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let verdict = verify_key_attestation(&chain, &root, Some(jwk), long_ago);
    assert_eq!(verdict.first_failure().unwrap().name, "validity");
}

/// An extractable key, made directly through PKCS#11 with signetd's labels as an
/// imported key would be, is refused attestation and nothing is written for it.
#[tokio::test]
async fn a_key_that_could_leave_the_token_is_never_attested() {
    ca().await;
    let hsm = hsm();
    let t = token();
    let ctx = cryptoki::context::Pkcs11::new(t.var("SIGNETD_PKCS11_MODULE")).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label() == t.var("SIGNETD_TOKEN_LABEL"))
        .unwrap();
    let session = ctx.open_rw_session(slot).unwrap(); // logged in: login state is per process
    let (kid, label) = ("att-extract-1", "signetd/att-extract/att-extract-1");
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let generate = || {
        session.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::EcParams(p256.clone()),
                Attribute::Id(kid.into()),
                Attribute::Label(label.into()),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Sign(true),
                Attribute::Id(kid.into()),
                Attribute::Label(label.into()),
            ],
        )
    };
    // Set-up, not the subject: SoftHSM2 has once answered CKR_GENERAL_ERROR here (a CI
    // run, while the next test generated keys through the daemon's own sessions), so a
    // general error is tried once more. Any other error, or a second one, fails.
    match generate() {
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::GeneralError, _)) => {
            generate().unwrap();
        }
        first => {
            first.unwrap();
        }
    }
    drop(session);

    let store = crate::common::store().await;
    match keys::store::finish(&hsm, &*store, kid, 30, "test").await {
        Err(KeyStoreError::Attest(e)) => assert!(
            e.to_string()
                .contains("refusing to attest key att-extract-1"),
            "{e}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        store.keys().await.unwrap().iter().all(|k| k.kid != kid),
        "nothing half-written"
    );
    let inventory = keys::store::inventory(&hsm, &*store).await.unwrap();
    assert!(
        inventory
            .problems
            .iter()
            .any(|p| p.contains(kid) && p.contains("could leave the token"))
    );
    keys::store::destroy_incomplete(&hsm, &*store, kid)
        .await
        .unwrap();
    assert!(hsm.key_pair_by_id(kid.into()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_pending_key_is_published_but_does_not_sign_and_a_retired_key_stays_retrievable() {
    let first = generate_key("att-life", Algorithm::Es256).await;
    let (hsm, store) = (hsm(), crate::common::store().await);
    let next = keys::store::prepare_rotation(
        &hsm,
        &*store,
        "att-life",
        Algorithm::Es256,
        keys::KeyPurpose::Jwt,
        30,
        "test",
    )
    .await
    .unwrap();
    assert!(matches!(
        keys::store::prepare_rotation(
            &hsm,
            &*store,
            "att-life",
            Algorithm::Es256,
            keys::KeyPurpose::Jwt,
            30,
            "test",
        )
        .await,
        Err(KeyStoreError::Rotation { .. })
    ));
    let daemon = TestDaemon::start(&issuer_toml("att-life", Algorithm::Es256)).await;
    let published = kids(&daemon.get("/.well-known/jwks.json").await);
    assert!(published.contains(&first) && published.contains(&next.kid));
    let minted = daemon
        .post("/v1/tokens", &json!({"issuer":"att-life","aud":"api"}))
        .await;
    assert_eq!(
        minted.json["kid"],
        first.as_str(),
        "the pending key does not sign yet"
    );
    daemon.shutdown().await;

    keys::store::transition(&*store, &first, keys::KeyState::Retired, "test")
        .await
        .unwrap();
    let daemon = TestDaemon::start(&issuer_toml("att-life", Algorithm::Es256)).await;
    let key = daemon.get(&format!("/v1/keys/{first}")).await;
    assert_eq!(
        (key.status, key.json["state"].as_str()),
        (200, Some("retired"))
    );
    assert!(
        key.json["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        kids(&daemon.get("/.well-known/jwks.json").await).contains(&first),
        "retired keys stay published"
    );
    assert_eq!(
        daemon
            .post("/v1/tokens", &json!({"issuer":"att-life","aud":"api"}))
            .await
            .code(),
        "no_active_key"
    );
}

/// A transcript signed with an issuer key, whose chain also leads to the root, must not
/// pass as signed by the attestation CA: raw-signing callers can make such a signature.
#[tokio::test]
async fn a_transcript_signed_by_an_issuer_key_is_not_a_ca_signature() {
    let kid = generate_key("att-forge", Algorithm::Es256).await;
    let ca = ca().await;
    let hsm = hsm();
    let inventory = keys::store::inventory(&hsm, &*crate::common::store().await)
        .await
        .unwrap();
    let key = inventory.keys.iter().find(|k| k.kid == kid).unwrap();
    let standard = base64::engine::general_purpose::STANDARD;
    let mut x5c = vec![standard.encode(&key.certificate)];
    x5c.extend(ca.chain.iter().map(|c| standard.encode(c)));
    let transcript = signetd::ceremony::Transcript::start("root", hsm.token()).finish(Ok(()));
    let payload = serde_json::to_vec(&transcript).unwrap();
    let header = json!({"alg": "ES256", "typ": signetd::ceremony::TRANSCRIPT_TYP, "x5c": x5c});
    let forged =
        crate::common::sign_as(&kid, &header, &serde_json::from_slice(&payload).unwrap()).await;
    let parts: Vec<&str> = forged.split('.').collect();
    let file = json!({"protected": parts[0], "payload": parts[1], "signature": parts[2], "transcript": transcript});
    let err = signetd::ceremony::verify(&file.to_string(), ca.top()).unwrap_err();
    assert!(
        err.contains("not signed by an attestation CA certificate"),
        "{err}"
    );
    // The same check passes a transcript the CA signed.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    signetd::ceremony::write_transcript(&path, &transcript, Some((&hsm, ca)))
        .await
        .unwrap();
    signetd::ceremony::verify(&std::fs::read_to_string(&path).unwrap(), ca.top()).unwrap();
}
