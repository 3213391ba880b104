//! Issue 4: rotation with pre-publication, retirement and archival, revocation, the
//! admin API, and the verify endpoint with single use.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signetd::Algorithm;
use signetd::service::unix_now;
use signetd::token::jws::b64;

use crate::common::{
    TestDaemon, eventually, generate_key, issuer_toml, kids, lifecycle_toml, mint, my_uid, sign_as,
};

async fn verify(
    daemon: &TestDaemon,
    token: &str,
    audience: &str,
    single_use: bool,
) -> crate::common::Reply {
    daemon
        .post(
            "/v1/verify",
            &json!({"token": token, "audience": audience, "single_use": single_use}),
        )
        .await
}

#[tokio::test]
async fn verify_accepts_a_valid_token_and_single_use_rejects_its_replay() {
    generate_key("life-once", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("life-once", Algorithm::Es256),
        lifecycle_toml()
    ))
    .await;
    let token = mint(&daemon, "life-once").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let reply = verify(&daemon, &token, "api", false).await;
    assert_eq!(
        (reply.status, reply.json["valid"].as_bool()),
        (200, Some(true)),
        "{:?}",
        reply.json
    );
    assert_eq!(reply.json["claims"]["iss"], "https://life-once.example");
    // Anonymous verifiers (TCP) may verify, but not consume.
    let body = json!({"token": token, "audience": "api"}).to_string();
    let tcp = daemon
        .tcp(
            Method::POST,
            "/v1/verify",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!(tcp.status, 200);
    let body = json!({"token": token, "audience": "api", "single_use": true}).to_string();
    let tcp = daemon
        .tcp(
            Method::POST,
            "/v1/verify",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
    assert_eq!((tcp.status, tcp.code()), (403, "caller_not_allowed"));

    assert_eq!(verify(&daemon, &token, "api", true).await.status, 200);
    let replay = verify(&daemon, &token, "api", true).await;
    assert_eq!((replay.status, replay.code()), (422, "replayed"));
}

/// HMAC-SHA256, to build the classic confusion attack: an HS256 token whose secret is
/// the issuer's public key.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    block[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::digest([pad(0x36), message.to_vec()].concat());
    Sha256::digest([pad(0x5c), inner.to_vec()].concat()).to_vec()
}

#[tokio::test]
async fn verify_rejects_each_bad_token_with_its_own_code() {
    let kid = generate_key("life-bad", Algorithm::Es256).await;
    let revoked_kid = generate_key("life-bad-rev", Algorithm::Es256).await;
    let config = format!(
        "{}{}{}",
        issuer_toml("life-bad", Algorithm::Es256),
        issuer_toml("life-bad-rev", Algorithm::Es256),
        lifecycle_toml()
    );
    let daemon = TestDaemon::start(&config).await;
    let now = unix_now();
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let claims = |iat: u64, exp: u64| json!({"iss": "https://life-bad.example", "aud": "api", "iat": iat, "exp": exp, "jti": format!("j{iat}{exp}")});

    let good = mint(&daemon, "life-bad").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut payload: Value =
        serde_json::from_slice(&signetd::token::jws::unb64(&parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("admin");
    parts[1] = b64(payload.to_string());
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": kid}).to_string()),
        b64(claims(now, now + 30).to_string())
    );
    let jwk = daemon.get(&format!("/v1/keys/{kid}")).await.json["jwk"].to_string();
    let hs_input = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": kid}).to_string()),
        b64(claims(now, now + 30).to_string())
    );
    let hs256 = format!(
        "{hs_input}.{}",
        b64(hmac_sha256(jwk.as_bytes(), hs_input.as_bytes()))
    );
    let unknown = sign_as(
        &kid,
        &json!({"alg": "ES256", "kid": "nobody-1"}),
        &claims(now, now + 30),
    )
    .await;
    // Signed with the ES256 key, named EdDSA: the key is used only as what it is.
    let relabelled = sign_as(
        &kid,
        &json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
        &claims(now, now + 30),
    )
    .await;
    let revoked_key_token = mint(&daemon, "life-bad-rev").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = daemon
        .post(&format!("/v1/keys/{revoked_kid}/revoke"), &json!({}))
        .await;
    assert_eq!(revoke.status, 200, "{:?}", revoke.json);
    let revoked_jti_token = mint(&daemon, "life-bad").await;
    let revoked = daemon
        .post(
            "/v1/revocations",
            &json!({"jti": revoked_jti_token["jti"], "exp": revoked_jti_token["expires_at"]}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);

    let cases = [
        (
            sign_as(&kid, &header, &claims(now - 200, now - 140)).await,
            "api",
            "token_expired",
        ),
        (
            sign_as(&kid, &header, &claims(now + 60, now + 90)).await,
            "api",
            "token_not_yet_valid",
        ),
        (
            sign_as(&kid, &header, &claims(now, now + 3000)).await,
            "api",
            "lifetime_too_long",
        ),
        (good.clone(), "web", "wrong_audience"),
        (none, "api", "algorithm_not_allowed"),
        (hs256, "api", "algorithm_not_allowed"),
        (unknown, "api", "unknown_key"),
        (relabelled, "api", "unknown_key"),
        (tampered, "api", "bad_signature"),
        (revoked_key_token, "api", "key_revoked"),
        (
            revoked_jti_token["token"].as_str().unwrap().to_string(),
            "api",
            "token_revoked",
        ),
        ("not.a.jwt".to_string(), "api", "malformed_token"),
    ];
    for (token, audience, code) in cases {
        let reply = verify(&daemon, &token, audience, false).await;
        assert_eq!((reply.status, reply.code()), (422, code), "{token}");
    }
    assert_eq!(
        verify(&daemon, &good, "api", false).await.status,
        200,
        "the daemon keeps serving"
    );
}

#[tokio::test]
async fn lifecycle_calls_need_an_admin() {
    generate_key("life-admin", Algorithm::Es256).await;
    let config = format!(
        "{}[admin]\ncallers = [\"uid:{}\"]\n",
        issuer_toml("life-admin", Algorithm::Es256),
        my_uid() + 1
    );
    let daemon = TestDaemon::start(&config).await;
    for path in [
        "/v1/issuers/life-admin/rotate",
        "/v1/keys/x/retire",
        "/v1/keys/x/revoke",
        "/v1/revocations",
        "/v1/keys",
    ] {
        let reply = daemon
            .post(path, &json!({"issuer": "life-admin", "jti": "j"}))
            .await;
        assert_eq!((reply.status, reply.code()), (403, "not_admin"), "{path}");
        let tcp = daemon
            .tcp(
                Method::POST,
                path,
                &[("content-type", "application/json")],
                b"{}",
            )
            .await;
        assert_eq!((tcp.status, tcp.code()), (401, "unauthenticated"), "{path}");
    }
}

#[tokio::test]
async fn rotation_prepublishes_activates_then_archives_the_old_key() {
    let first = generate_key("life-rot", Algorithm::Es256).await;
    let config = format!(
        "{}max_ttl_seconds = 1\n{}",
        issuer_toml("life-rot", Algorithm::Es256),
        lifecycle_toml()
    );
    let daemon = TestDaemon::start(&config).await;
    let rotated = daemon.post("/v1/issuers/life-rot/rotate", &json!({})).await;
    assert_eq!(
        (rotated.status, rotated.json["state"].as_str()),
        (200, Some("pending")),
        "{:?}",
        rotated.json
    );
    let next = rotated.json["kid"].as_str().unwrap().to_string();
    let again = daemon.post("/v1/issuers/life-rot/rotate", &json!({})).await;
    assert_eq!((again.status, again.code()), (409, "invalid_state"));

    // Published at once, not signing yet.
    let jwks = kids(&daemon.get("/.well-known/jwks.json").await);
    assert!(jwks.contains(&first) && jwks.contains(&next));
    assert_eq!(mint(&daemon, "life-rot").await["kid"], first.as_str());

    // After the pre-publication delay the next key signs; the old one stays published.
    assert!(
        eventually(6, async || mint(&daemon, "life-rot").await["kid"]
            == next.as_str())
        .await,
        "never activated"
    );
    let old = daemon.get(&format!("/v1/keys/{first}")).await;
    assert!(matches!(
        old.json["state"].as_str(),
        Some("retired" | "archived")
    ));
    // Once every token it signed has expired (1 s TTL + 5 s leeway), it is archived:
    // out of the JWKS, still served by kid with its certificate.
    assert!(
        eventually(12, async || daemon
            .get(&format!("/v1/keys/{first}"))
            .await
            .json["state"]
            == "archived")
        .await,
        "never archived"
    );
    assert!(!kids(&daemon.get("/.well-known/jwks.json").await).contains(&first));
    let archived = daemon.get(&format!("/v1/keys/{first}")).await;
    assert!(
        archived.json["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        daemon
            .get(&format!("/v1/keys/{first}/attestation"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revocations_leave_the_jwks_at_once_and_are_listed_with_caching_headers() {
    let kid = generate_key("life-revoke", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("life-revoke", Algorithm::Es256),
        lifecycle_toml()
    ))
    .await;
    let before = daemon.get("/v1/revocations").await;
    assert_eq!(before.header("cache-control"), "public, max-age=1");
    let etag = before.header("etag").to_string();
    let unchanged = daemon
        .unix(
            Method::GET,
            "/v1/revocations",
            &[("if-none-match", &etag)],
            b"",
        )
        .await;
    assert_eq!(unchanged.status, 304);

    let minted = mint(&daemon, "life-revoke").await;
    let revoked = daemon
        .post(
            "/v1/revocations",
            &json!({"jti": minted["jti"], "exp": minted["expires_at"]}),
        )
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);
    let listed = daemon.get("/v1/revocations").await;
    assert_ne!(listed.header("etag"), etag);
    // Revoking again with a later exp extends the listing; an exp in the past is refused.
    let later = minted["expires_at"].as_u64().unwrap() + 100;
    let again = daemon
        .post(
            "/v1/revocations",
            &json!({"jti": minted["jti"], "exp": later}),
        )
        .await;
    assert_eq!(
        (again.status, again.json["exp"].as_u64()),
        (200, Some(later))
    );
    let past = daemon
        .post("/v1/revocations", &json!({"jti": "old", "exp": 1000}))
        .await;
    assert_eq!((past.status, past.code()), (400, "invalid_request"));
    let listed = daemon.get("/v1/revocations").await;
    let entries: Vec<&Value> = listed.json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["jti"] == minted["jti"])
        .collect();
    assert_eq!(
        (entries.len(), entries[0]["exp"].as_u64()),
        (1, Some(later)),
        "one record, with the later exp"
    );
    assert!(
        listed.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["jti"] == minted["jti"])
    );

    let reply = daemon
        .post(&format!("/v1/keys/{kid}/revoke"), &json!({}))
        .await;
    assert_eq!(
        (reply.status, reply.json["state"].as_str()),
        (200, Some("revoked"))
    );
    assert!(
        !kids(&daemon.get("/.well-known/jwks.json").await).contains(&kid),
        "out of the JWKS at once"
    );
    let listed = daemon.get("/v1/revocations").await;
    assert!(
        listed.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
    );
    assert_eq!(
        daemon
            .post(
                "/v1/tokens",
                &json!({"issuer": "life-revoke", "aud": "api"})
            )
            .await
            .code(),
        "no_active_key"
    );
    let again = daemon
        .post(&format!("/v1/keys/{kid}/revoke"), &json!({}))
        .await;
    assert_eq!((again.status, again.code()), (409, "invalid_state"));
}

/// PyJWT, caching the JWKS for its advertised lifetime and never refetching on an
/// unknown kid, verifies tokens minted continuously across two rotations: none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_rejects_no_token_minted_across_two_rotations() {
    use std::io::Write;
    generate_key("life-loop", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&format!(
        "{}{}",
        issuer_toml("life-loop", Algorithm::Es256),
        lifecycle_toml()
    ))
    .await;
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut verifier = std::process::Command::new(python)
        .arg(crate::common::repo_root().join("tests/interop/verify_stream.py"))
        .args([
            "--jwks-url",
            &format!("http://{}/.well-known/jwks.json", daemon.http),
        ])
        .args([
            "--iss",
            "https://life-loop.example",
            "--aud",
            "api",
            "--cache-seconds",
            "1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tests/interop/verify_stream.py (scripts/test.sh installs PyJWT)");
    let mut feed = verifier.stdin.take().unwrap();
    let mut minted = 0;
    let mut signer = String::new();
    // Mint continuously; rotate, keep minting until the next key signs, twice; then
    // mint a little longer under the last key.
    for round in 0..3 {
        if round > 0 {
            let reply = daemon
                .post("/v1/issuers/life-loop/rotate", &json!({}))
                .await;
            assert_eq!(reply.status, 200, "{:?}", reply.json);
        }
        let started = std::time::Instant::now();
        loop {
            let reply = mint(&daemon, "life-loop").await;
            writeln!(feed, "{}", reply["token"].as_str().unwrap()).unwrap();
            minted += 1;
            let kid = reply["kid"].as_str().unwrap().to_string();
            let switched = kid != signer;
            signer = kid;
            if (round > 0 && switched) || (round == 0 && minted >= 20) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the rotated key never started signing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..20 {
            let reply = mint(&daemon, "life-loop").await;
            writeln!(feed, "{}", reply["token"].as_str().unwrap()).unwrap();
            minted += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(feed);
    let out = tokio::task::block_in_place(|| verifier.wait_with_output()).unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(summary["rejected"], 0, "{summary}");
    assert_eq!(summary["verified"], minted);
    assert_eq!(
        summary["kids"].as_array().unwrap().len(),
        3,
        "two rotations: three keys signed: {summary}"
    );
}

/// An operator revokes a key with the CLI, in another process, while the daemon runs:
/// the daemon's next lifecycle tick re-reads the token and drops the key.
#[tokio::test]
async fn a_key_revoked_with_the_cli_leaves_a_running_daemon_within_a_tick() {
    let t = crate::common::TestToken::create("cli-revoke");
    let (config, socket) = t.write_config(&format!(
        "{}{}",
        issuer_toml("life-cli", Algorithm::Es256),
        lifecycle_toml()
    ));
    let config_arg = config.display().to_string();
    let kid = t.init_ca_and_key(&config, "life-cli");
    let _daemon = t.serve(&config, &socket);
    let published = async || {
        let jwks =
            crate::common::request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
        kids(&jwks).contains(&kid)
    };
    assert!(published().await);
    t.signetd_ok(&["keys", "revoke", "--kid", &kid, "--config", &config_arg]);
    let dropped = eventually(5, async || !published().await).await;
    let listed = crate::common::request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert!(dropped, "the daemon did not pick up the revocation");
    assert!(
        listed.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
    );
}

/// With `rotation_period_seconds`, the lifecycle rotates on its own: a pending successor
/// appears when the active key reaches that age, and signs after pre-publication.
#[tokio::test]
async fn an_issuer_with_a_rotation_period_rotates_on_its_own() {
    let first = generate_key("life-auto", Algorithm::Es256).await;
    let config = format!(
        "{}max_ttl_seconds = 1\nrotation_period_seconds = 4\n{}",
        issuer_toml("life-auto", Algorithm::Es256),
        lifecycle_toml()
    );
    let daemon = TestDaemon::start(&config).await;
    assert!(
        eventually(20, async || mint(&daemon, "life-auto").await["kid"]
            != first.as_str())
        .await,
        "no automatic rotation"
    );
    let keys = daemon.get("/v1/keys").await;
    let mine: Vec<&Value> = keys.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["issuer"] == "life-auto")
        .collect();
    assert!(mine.len() >= 2, "{mine:?}");
}
