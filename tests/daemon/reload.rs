//! SIGHUP reloads the config of a running `signetd serve`: issuers, policy and limits
//! take effect without dropping a connection or a key; a config that does not validate,
//! or that changes what only a restart can, is refused and the running one stays. Every
//! reload is an audit record.

use std::path::Path;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::client::Endpoint;

use crate::common::*;

fn admin_toml() -> String {
    format!("[admin]\ncallers = [\"uid:{}\"]\n", my_uid())
}

/// The `config_reload` records of the log in `dir`.
fn reload_records(dir: &Path) -> Vec<Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["event"] == "config_reload")
        .collect()
}

async fn mint_status(socket: &Path, issuer: &str) -> Reply {
    request_unix(
        socket,
        Method::POST,
        "/v1/tokens",
        Some(&json!({"issuer": issuer, "aud": "api"})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_issuer_and_its_limits_take_effect_while_a_connection_keeps_minting() {
    let t = TestToken::create("reload");
    let base = format!("{}{}", admin_toml(), issuer_toml("a", Algorithm::Es256));
    let (config, socket) = t.write_config(&base);
    t.init_ca_and_key(&config, "a");
    let daemon = t.serve(&config, &socket);

    // One keep-alive connection minting for `a` until told to stop; every answer must
    // be a token, and the connection must outlive the reload.
    let minter = Minter::start(Endpoint::Unix(socket.clone()), "a");
    assert!(eventually(20, async || minter.minted() > 0).await);
    let reply = mint_status(&socket, "b").await;
    assert_eq!(reply.code(), "unknown_issuer");

    // `b` appears, with a limit of two tokens a minute per caller.
    let b = format!(
        "{}rate_per_principal = \"2/m\"\n",
        issuer_toml("b", Algorithm::Es256)
    );
    t.write_config(&format!("{base}{b}"));
    daemon.hangup();
    let generated = eventually(20, async || {
        request_unix(
            &socket,
            Method::POST,
            "/v1/keys",
            Some(&json!({"issuer": "b"})),
        )
        .await
        .status
            == 200
    })
    .await;
    assert!(
        generated,
        "the admin could not generate b's first key after the reload"
    );
    let before = minter.minted();
    for _ in 0..2 {
        let reply = mint_status(&socket, "b").await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let reply = mint_status(&socket, "b").await;
    assert_eq!(reply.code(), "rate_limited");
    // `b`'s key is published beside `a`'s.
    let jwks = request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
    assert!(
        kids(&jwks).iter().any(|k| k.starts_with("b-")),
        "{:?}",
        jwks.json
    );

    // The minting connection went on after the reload, on the same connection.
    assert!(eventually(20, async || minter.minted() > before + 10).await);
    minter.stop().await;

    let records = reload_records(&t.audit_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["outcome"], "ok");
    let detail = records[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("issuers added: b; config sha256 "),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_is_refused_and_the_running_one_stays() {
    let t = TestToken::create("reload-bad");
    let base = issuer_toml("a", Algorithm::Es256);
    let (config, socket) = t.write_config(&base);
    t.init_ca_and_key(&config, "a");
    let daemon = t.serve(&config, &socket);
    let good = std::fs::read_to_string(&config).unwrap();

    // Three refusals: a file that does not parse, one that does not validate (an issuer
    // without audiences) and one that moves the socket (a restart's business). Each
    // time the old policy keeps minting.
    let bad = [
        (format!("{good}\n[issuers.a"), "config_invalid"),
        (
            format!("{good}\n[issuers.b]\niss = \"https://b\"\naudiences = []\n"),
            "config_invalid",
        ),
        (
            good.replace("signetd.sock", "elsewhere.sock"),
            "restart_required",
        ),
    ];
    for (n, (text, code)) in bad.iter().enumerate() {
        std::fs::write(&config, text).unwrap();
        daemon.hangup();
        let refused = eventually(20, async || reload_records(&t.audit_dir()).len() > n).await;
        assert!(refused, "no config_reload record after bad config {n}");
        let record = &reload_records(&t.audit_dir())[n];
        assert_eq!(record["outcome"], "refused", "{record}");
        assert_eq!(record["code"], *code, "{record}");
        let reply = mint_status(&socket, "a").await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(log.contains("config reload refused"), "{log}");
    assert!(!log.contains(&t.pin()), "the PIN is in the log");

    // A valid config that names no caller for `a` takes effect: the policy is the new one.
    std::fs::write(
        &config,
        good.replace(&format!("\"uid:{}\"", my_uid()), "\"uid:4242\""),
    )
    .unwrap();
    daemon.hangup();
    let refused = eventually(20, async || {
        mint_status(&socket, "a").await.code() == "caller_not_allowed"
    })
    .await;
    assert!(refused, "the new policy did not take effect");
    let records = reload_records(&t.audit_dir());
    assert_eq!(records.last().unwrap()["outcome"], "ok");
    assert!(
        records.last().unwrap()["detail"]
            .as_str()
            .unwrap()
            .starts_with("issuers changed: a;"),
        "{records:?}"
    );
}
