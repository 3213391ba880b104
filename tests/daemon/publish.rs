//! Public endpoints: JWKS with caching headers, key metadata, health; served on both
//! transports, while TCP callers can never sign.

use hyper::Method;
use serde_json::json;
use signetd::Algorithm;

use crate::common::{RawConnection, TestDaemon, generate_key, issuer_toml, post_head};

#[tokio::test]
async fn jwks_is_cacheable_and_revalidates_by_etag() {
    let es = generate_key("pub-es", Algorithm::Es256).await;
    let ed = generate_key("pub-ed", Algorithm::EdDsa).await;
    let config = format!(
        "{}{}",
        issuer_toml("pub-es", Algorithm::Es256),
        issuer_toml("pub-ed", Algorithm::EdDsa)
    );
    let daemon = TestDaemon::start(&format!("{config}[jwks]\nmax_age_seconds = 20\n")).await;

    for reply in [
        daemon.get("/.well-known/jwks.json").await,
        daemon
            .tcp(Method::GET, "/.well-known/jwks.json", &[], b"")
            .await,
    ] {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("cache-control"), "public, max-age=20");
        assert_eq!(reply.header("content-type"), "application/json");
        let etag = reply.header("etag");
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let keys = reply.json["keys"].as_array().unwrap();
        let find = |kid: &str| keys.iter().find(|k| k["kid"] == kid).cloned().unwrap();
        let es_jwk = find(&es);
        assert_eq!(
            (es_jwk["kty"].as_str(), es_jwk["crv"].as_str()),
            (Some("EC"), Some("P-256"))
        );
        assert_eq!(
            (es_jwk["alg"].as_str(), es_jwk["use"].as_str()),
            (Some("ES256"), Some("sig"))
        );
        assert_eq!(
            signetd::token::jws::unb64(es_jwk["y"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let ed_jwk = find(&ed);
        assert_eq!(
            (
                ed_jwk["kty"].as_str(),
                ed_jwk["crv"].as_str(),
                ed_jwk["alg"].as_str()
            ),
            (Some("OKP"), Some("Ed25519"), Some("EdDSA"))
        );
        assert!(ed_jwk.get("y").is_none());
        for key in keys {
            assert!(key.get("d").is_none(), "never a private component");
        }
    }

    let first = daemon.get("/.well-known/jwks.json").await;
    let etag = first.header("etag").to_string();
    let revalidated = daemon
        .unix(
            Method::GET,
            "/.well-known/jwks.json",
            &[("if-none-match", &etag)],
            b"",
        )
        .await;
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.raw.is_empty());
    assert_eq!(revalidated.header("etag"), etag);
    let stale = daemon
        .unix(
            Method::GET,
            "/.well-known/jwks.json",
            &[("if-none-match", "\"other\"")],
            b"",
        )
        .await;
    assert_eq!(stale.status, 200);
}

#[tokio::test]
async fn keys_endpoints_describe_keys_and_token_attributes() {
    let kid = generate_key("pub-keys", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("pub-keys", Algorithm::Es256)).await;
    let list = daemon.tcp(Method::GET, "/v1/keys", &[], b"").await;
    assert_eq!(list.status, 200);
    assert!(
        list.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
    );
    let one = daemon.get(&format!("/v1/keys/{kid}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json["issuer"], "pub-keys");
    assert_eq!(one.json["state"], "active");
    assert_eq!(one.json["alg"], "ES256");
    assert_eq!(
        one.json["token_attributes"],
        json!({"sensitive":true,"always_sensitive":true,"extractable":false,"never_extractable":true,"local":true})
    );
    let missing = daemon.get("/v1/keys/no-such-kid").await;
    assert_eq!((missing.status, missing.code()), (404, "unknown_key"));
}

#[tokio::test]
async fn health_and_readiness() {
    let daemon = TestDaemon::start("").await;
    let health = daemon.tcp(Method::GET, "/healthz", &[], b"").await;
    assert_eq!(
        (health.status, health.json["status"].as_str()),
        (200, Some("ok"))
    );
    let ready = daemon.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json["status"].as_str()),
        (200, Some("ready"))
    );
}

#[tokio::test]
async fn tcp_callers_cannot_mint_or_sign_whatever_they_send() {
    generate_key("pub-tcp", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("pub-tcp", Algorithm::Es256)).await;
    let json_type = [("content-type", "application/json")];
    for (path, body) in [
        (
            "/v1/tokens",
            json!({"issuer":"pub-tcp","aud":"api"}).to_string(),
        ),
        (
            "/v1/sign",
            json!({"issuer":"pub-tcp","digest":"AAAA"}).to_string(),
        ),
        ("/v1/tokens", "{not json".to_string()),
    ] {
        let reply = daemon
            .tcp(Method::POST, path, &json_type, body.as_bytes())
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, "unauthenticated"),
            "{path} {body}"
        );
    }
}

#[tokio::test]
async fn shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    generate_key("pub-drain", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("pub-drain", Algorithm::Es256)).await;
    let socket = daemon.socket.clone();
    let body = json!({"issuer":"pub-drain","aud":"api"}).to_string();
    let (first, second) = body.split_at(10);
    let mut conn = RawConnection::open(&socket).await;
    // One whole request first, so the connection is surely accepted and being served
    // (under load, accepting can lag) before the partial one and the shutdown.
    conn.send(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    assert_eq!(conn.reply().await.0, 200);
    conn.send(format!("{}{first}", post_head(body.len())).as_bytes())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    let stopping = tokio::spawn(daemon.shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        tokio::net::UnixStream::connect(&socket).await.is_err(),
        "no new connections while draining"
    );
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the request in flight"
    );

    conn.send(second.as_bytes()).await;
    let (status, reply) = conn.reply().await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply["token"].as_str().unwrap().starts_with("eyJ"));
    stopping.await.unwrap();
}
