//! HTTPS with client certificates: who gets in, who is refused at the handshake and
//! with which alert, one policy for both transports, and certificates replaced while
//! clients keep minting. Certificates are made at test time (see [`pki`]).

mod daemon;
mod pki;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::Method;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::client::{Connection, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    Minter, Reply, TestToken, audit_records, eventually, generate_key, my_uid, request,
    request_unix,
};
pub use daemon::TlsDaemon;
use pki::{Ca, Pki, REVOKED};

/// `POST /v1/tokens` over `endpoint`.
async fn mint(endpoint: &Endpoint, issuer: &str) -> Reply {
    let body = serde_json::to_vec(&json!({"issuer": issuer, "aud": "api"})).unwrap();
    let json = [("content-type", "application/json")];
    request(endpoint, Method::POST, "/v1/tokens", &json, &body).await
}

/// An issuer allowing this process's uid and `callers`.
fn issuer(name: &str, callers: &[&str]) -> String {
    let mut list = vec![format!("\"uid:{}\"", my_uid())];
    list.extend(callers.iter().map(|c| format!("{c:?}")));
    format!(
        "[issuers.{name}]\niss = \"https://{name}.example\"\naudiences = [\"api\"]\ncallers = [{}]\n",
        list.join(", ")
    )
}

/// Connects with `config`, sends a request, and returns the TLS error the server's alert
/// became on this side; panics if the request is served.
async fn refusal(addr: SocketAddr, config: Arc<ClientConfig>) -> rustls::Error {
    let as_tls = |e: std::io::Error| -> rustls::Error {
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => tls.clone(),
            None => panic!("not a TLS error: {e}"),
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    // In TLS 1.3 the client has finished its handshake before the server checks its
    // certificate: the alert arrives on the first read.
    let mut tls = match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => return as_tls(e),
    };
    if let Err(e) = tls
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
    {
        return as_tls(e);
    }
    let mut buf = vec![0; 4096];
    match tls.read(&mut buf).await {
        Err(e) => as_tls(e),
        Ok(n) => panic!("served: {:?}", String::from_utf8_lossy(&buf[..n])),
    }
}

/// PyJWT (tests/interop/verify_jwt.py) verifies `token` of issuer `tls-mint` against the
/// daemon's JWKS; a missing PyJWT fails, as in `interop.rs`.
fn pyjwt_verify(daemon: &TlsDaemon, token: &str) -> (bool, String) {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let out = std::process::Command::new(&python)
        .arg(crate::common::repo_root().join("tests/interop/verify_jwt.py"))
        .args([
            "--jwks-url",
            &format!("http://{}/.well-known/jwks.json", daemon.http),
        ])
        .args([
            "--iss",
            "https://tls-mint.example",
            "--aud",
            "api",
            "--max-ttl",
            "60",
        ])
        .arg(token)
        .output()
        .unwrap_or_else(|e| {
            panic!("{python}: {e} (run scripts/test.sh, which sets SIGNETD_TEST_PYTHON)")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_mints_a_token_pyjwt_verifies_and_the_audit_names_it() {
    generate_key("tls-mint", Algorithm::Es256).await;
    let pki = Pki::new();
    let id = "spiffe://example.org/ns/prod/sa/checkout";
    let daemon = TlsDaemon::start(
        &issuer("tls-mint", &["spiffe://example.org/ns/prod/*"]),
        &pki.tls,
    )
    .await;
    let leaf = pki.ca.client(10, &[id, "checkout.example.org"], false);
    let endpoint = daemon.endpoint(pki.client(Some(&leaf)));

    let reply = mint(&endpoint, "tls-mint").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    let token = reply.json["token"].as_str().unwrap();
    let (valid, stderr) = tokio::task::block_in_place(|| pyjwt_verify(&daemon, token));
    assert!(valid, "PyJWT rejected a token minted over TLS: {stderr}");

    let sha = signetd::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&leaf.der));
    let audit = daemon.audit_text();
    let record = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["event"] == "mint" && r["issuer"] == "tls-mint")
        .expect("a mint record");
    assert_eq!(record["caller"]["transport"], "tls", "{record}");
    assert_eq!(record["caller"]["spiffe_id"], id, "{record}");
    assert_eq!(record["caller"]["cert_sha256"], sha.as_str(), "{record}");
    assert_eq!(
        record["caller"]["dns"],
        json!(["checkout.example.org"]),
        "{record}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_client_is_refused_with_its_own_code() {
    generate_key("tls-refuse", Algorithm::Es256).await;
    let pki = Pki::new();
    let daemon = TlsDaemon::start(
        &issuer("tls-refuse", &["dns:allowed.example.org"]),
        &pki.tls,
    )
    .await;

    // No certificate: public endpoints serve, signing is unauthenticated.
    let anonymous = daemon.endpoint(pki.client(None));
    let jwks = request(&anonymous, Method::GET, "/.well-known/jwks.json", &[], b"").await;
    assert_eq!(jwks.status, 200);
    assert!(jwks.json["keys"].is_array());
    let reply = mint(&anonymous, "tls-refuse").await;
    assert_eq!(
        (reply.status, reply.code()),
        (401, "unauthenticated"),
        "{:?}",
        reply.json
    );

    // Refused at the handshake, each with its alert.
    let other_ca = Ca::new("some other CA").client(11, &["allowed.example.org"], false);
    let expired = pki.ca.client(12, &["allowed.example.org"], true);
    let revoked = pki.ca.client(REVOKED, &["allowed.example.org"], false);
    for (leaf, alert) in [
        (&other_ca, rustls::AlertDescription::UnknownCA),
        (&expired, rustls::AlertDescription::CertificateExpired),
        (&revoked, rustls::AlertDescription::CertificateRevoked),
    ] {
        let error = refusal(daemon.tls, pki.client(Some(leaf))).await;
        assert_eq!(error, rustls::Error::AlertReceived(alert));
    }

    // A valid certificate the policy does not name.
    let unnamed = pki.ca.client(13, &["other.example.org"], false);
    let reply = mint(&daemon.endpoint(pki.client(Some(&unnamed))), "tls-refuse").await;
    assert_eq!(
        (reply.status, reply.code()),
        (403, "caller_not_allowed"),
        "{:?}",
        reply.json
    );
    // ...and the one it names.
    let named = pki.ca.client(14, &["allowed.example.org"], false);
    let reply = mint(&daemon.endpoint(pki.client(Some(&named))), "tls-refuse").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_policy_allows_and_denies_the_same_issuers_over_the_socket_and_tls() {
    generate_key("tls-both-a", Algorithm::Es256).await;
    generate_key("tls-both-b", Algorithm::Es256).await;
    let pki = Pki::new();
    let prod = "spiffe://example.org/ns/prod/*";
    // Issuer a names this uid and the prod namespace; issuer b names neither.
    let config = format!(
        "{}[issuers.tls-both-b]\niss = \"https://tls-both-b.example\"\naudiences = [\"api\"]\ncallers = [\"uid:{}\", \"spiffe://example.org/ns/staging/*\"]\n",
        issuer("tls-both-a", &[prod]),
        my_uid() + 1
    );
    let daemon = TlsDaemon::start(&config, &pki.tls).await;
    let leaf = pki
        .ca
        .client(20, &["spiffe://example.org/ns/prod/sa/api"], false);
    let tls = daemon.endpoint(pki.client(Some(&leaf)));
    let socket = Endpoint::Unix(daemon.socket.clone());
    for endpoint in [&socket, &tls] {
        let a = mint(endpoint, "tls-both-a").await;
        assert_eq!(a.status, 200, "{endpoint:?}: {:?}", a.json);
        let b = mint(endpoint, "tls-both-b").await;
        assert_eq!(
            (b.status, b.code()),
            (403, "caller_not_allowed"),
            "{:?}",
            b.json
        );
    }
    // A prefix ends at a segment boundary: /ns/production is not under /ns/prod.
    let near = pki
        .ca
        .client(21, &["spiffe://example.org/ns/production/sa/api"], false);
    let reply = mint(&daemon.endpoint(pki.client(Some(&near))), "tls-both-a").await;
    assert_eq!((reply.status, reply.code()), (403, "caller_not_allowed"));
    // The socket still mints after all that.
    let reply = request_unix(&daemon.socket, Method::GET, "/readyz", None).await;
    assert_eq!(reply.status, 200);
}

/// The server certificate a new connection is shown.
async fn served_certificate(addr: SocketAddr, config: Arc<ClientConfig>) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_certificate_is_replaced_while_a_client_keeps_minting() {
    generate_key("tls-reload", Algorithm::Es256).await;
    let mut pki = Pki::new();
    pki.tls.reload_check_seconds = 1;
    let daemon =
        TlsDaemon::start(&issuer("tls-reload", &["dns:client.example.org"]), &pki.tls).await;
    let leaf = pki.ca.client(30, &["client.example.org"], false);
    let config = pki.client(Some(&leaf));
    let mut kept = Connection::open(&daemon.endpoint(config.clone()))
        .await
        .unwrap();
    let body = serde_json::to_vec(&json!({"issuer": "tls-reload", "aud": "api"})).unwrap();
    let headers = [("content-type", "application/json")];
    let mut mint_on_kept = async || {
        let reply = kept
            .request(Method::POST, "/v1/tokens", &headers, body.clone().into())
            .await
            .expect("the old connection keeps working");
        assert_eq!(reply.status, 200);
    };
    mint_on_kept().await;
    assert_eq!(
        served_certificate(daemon.tls, config.clone()).await,
        pki.server.der
    );

    // A bad file, by SIGHUP's path: refused, the old certificate stays.
    pki::write(&pki.tls.cert, "not a certificate\n");
    let why = daemon.reloader.reload().unwrap_err();
    assert!(
        why.contains("tls.cert") && why.contains("server.pem"),
        "{why}"
    );
    assert_eq!(
        served_certificate(daemon.tls, config.clone()).await,
        pki.server.der
    );
    mint_on_kept().await;

    // A key that group members could read: refused too, with the fix.
    let new = pki.ca.server(2);
    std::fs::write(&pki.tls.key, &new.key_pem).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pki.tls.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let why = daemon.reloader.reload().unwrap_err();
    assert!(why.contains("chmod 600"), "{why}");
    mint_on_kept().await;

    // The new pair, found by the file poll: new connections see it, the old one mints on.
    pki::write_key(&pki.tls.key, &new.key_pem);
    pki::write(&pki.tls.cert, &new.pem);
    let mut minted = 0;
    let switched = eventually(15, async || {
        mint_on_kept().await;
        minted += 1;
        served_certificate(daemon.tls, config.clone()).await == new.der
    })
    .await;
    assert!(switched, "new connections never saw the new certificate");
    assert!(minted > 0);
    mint_on_kept().await;
    let reply = mint(&daemon.endpoint(config), "tls-reload").await;
    assert_eq!(reply.status, 200);
    // The poll's reload left its audit record, naming the new certificate by hash.
    let sha = signetd::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&new.der));
    let want = format!("files changed; certificate sha256 {sha}");
    let recorded = eventually(10, async || {
        daemon.audit_text().lines().any(|l| {
            let r: Value = serde_json::from_str(l).unwrap();
            r["event"] == "tls_reload" && r["outcome"] == "ok" && r["detail"] == want.as_str()
        })
    })
    .await;
    assert!(
        recorded,
        "no tls_reload record of the poll:\n{}",
        daemon.audit_text()
    );
    pki.server = new;
}

/// `signetd_http_requests_total{route="/metrics",code=CODE,transport="tls"}` in an
/// exposition, 0 if absent; labels in any order.
fn tls_metrics_requests(text: &str, code: &str) -> f64 {
    let want = [
        "route=\"/metrics\"".to_string(),
        format!("code=\"{code}\""),
        "transport=\"tls\"".to_string(),
    ];
    text.lines()
        .filter_map(|l| l.strip_prefix("signetd_http_requests_total{"))
        .filter_map(|l| l.split_once("} "))
        .find(|(labels, _)| {
            let labels: Vec<&str> = labels.split(',').collect();
            labels.len() == want.len() && want.iter().all(|w| labels.contains(&w.as_str()))
        })
        .map_or(0.0, |(_, value)| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_over_tls_go_only_to_the_certificates_metrics_callers_names() {
    generate_key("tls-metrics", Algorithm::Es256).await;
    let pki = Pki::new();
    let scraper_id = "spiffe://example.org/ns/monitoring/sa/prometheus";
    let config = format!(
        "{}[metrics]\ncallers = [{scraper_id:?}]\n",
        issuer("tls-metrics", &["spiffe://example.org/ns/prod/*"])
    );
    let daemon = TlsDaemon::start(&config, &pki.tls).await;
    let scraper = daemon.endpoint(pki.client(Some(&pki.ca.client(40, &[scraper_id], false))));
    let minter = pki
        .ca
        .client(41, &["spiffe://example.org/ns/prod/sa/api"], false);
    let minter = daemon.endpoint(pki.client(Some(&minter)));
    let anonymous = daemon.endpoint(pki.client(None));
    let metrics =
        async |endpoint: &Endpoint| request(endpoint, Method::GET, "/metrics", &[], b"").await;

    let served = metrics(&scraper).await;
    assert_eq!(served.status, 200);
    let text = String::from_utf8_lossy(&served.raw).into_owned();
    assert!(text.contains("# TYPE signetd_build_info gauge"), "{text}");
    let refused = metrics(&minter).await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "caller_not_allowed")
    );
    let refused = metrics(&anonymous).await;
    assert_eq!((refused.status, refused.code()), (401, "unauthenticated"));
    // Both refusals are counted under the route, their codes and the TLS transport.
    // Daemons in this process share one recorder, so what counts is the change since
    // the first scrape (no other test reads /metrics over TLS).
    let after = metrics(&scraper).await;
    assert_eq!(after.status, 200);
    let after = String::from_utf8_lossy(&after.raw).into_owned();
    for code in ["403", "401"] {
        assert_eq!(
            tls_metrics_requests(&after, code) - tls_metrics_requests(&text, code),
            1.0,
            "{code}: {after}"
        );
    }
    // Reading metrics is all the scraper may do; the minter still mints.
    let minted = mint(&scraper, "tls-metrics").await;
    assert_eq!((minted.status, minted.code()), (403, "caller_not_allowed"));
    assert_eq!(mint(&minter, "tls-metrics").await.status, 200);
}

/// The `https://ADDR` the real binary's "signetd serving" log line names.
fn served_tls_address(log: &str) -> SocketAddr {
    let line = log
        .lines()
        .find(|l| l.contains("signetd serving"))
        .unwrap_or_else(|| panic!("no 'signetd serving' line in\n{log}"));
    let from = line
        .find("tls=https://")
        .unwrap_or_else(|| panic!("no tls address in {line}"))
        + "tls=https://".len();
    line[from..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The `tls_reload` records of the log in `dir`.
fn tls_reload_records(dir: &std::path::Path) -> Vec<Value> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["event"] == "tls_reload")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_to_the_served_binary_replaces_its_certificate_and_the_log_records_it() {
    // The real `signetd serve`, with the file poll off: only SIGHUP reloads.
    let t = TestToken::create("tls-sighup");
    let mut pki = Pki::new();
    let tls = &pki.tls;
    let rest = format!(
        "{}[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\nreload_check_seconds = 0\n",
        issuer("hup", &["dns:client.example.org"]),
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
        tls.client_ca.display().to_string(),
    );
    let (config, socket) = t.write_config(&rest);
    t.init_ca_and_key(&config, "hup");
    let daemon = t.serve(&config, &socket);
    let addr = served_tls_address(&std::fs::read_to_string(t.path("serve.log")).unwrap());
    let client = pki.client(Some(&pki.ca.client(50, &["client.example.org"], false)));
    let endpoint = Endpoint::Tls {
        authority: format!("localhost:{}", addr.port()),
        config: client.clone(),
    };
    assert_eq!(
        served_certificate(addr, client.clone()).await,
        pki.server.der
    );

    // One keep-alive TLS connection minting until told to stop: every answer must be a
    // token, on the same connection, through both reloads.
    let minter = Minter::start(endpoint.clone(), "hup");
    assert!(eventually(20, async || minter.minted() > 0).await);

    // A certificate file that does not load: refused, recorded, the old one stays.
    pki::write(&tls.cert, "not a certificate\n");
    daemon.hangup();
    let refused = eventually(20, async || !tls_reload_records(&t.audit_dir()).is_empty()).await;
    assert!(
        refused,
        "no tls_reload record after a SIGHUP with a bad file"
    );
    let record = &tls_reload_records(&t.audit_dir())[0];
    assert_eq!(
        (record["outcome"].as_str(), record["code"].as_str()),
        (Some("refused"), Some("tls_files_invalid")),
        "{record}"
    );
    let why = record["detail"].as_str().unwrap();
    assert!(
        why.starts_with("SIGHUP: tls.cert") && why.contains("server.pem"),
        "{why}"
    );
    assert_eq!(
        served_certificate(addr, client.clone()).await,
        pki.server.der
    );

    // The new pair, key first as docs/tls.md says, then SIGHUP.
    let new = pki.ca.server(2);
    pki::write_key(&tls.key, &new.key_pem);
    pki::write(&tls.cert, &new.pem);
    let before = minter.minted();
    daemon.hangup();
    let switched = eventually(20, async || {
        served_certificate(addr, client.clone()).await == new.der
    })
    .await;
    assert!(switched, "new connections never saw the new certificate");
    let reply = mint(&endpoint, "hup").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);

    // The old connection minted on after the reload, without an error.
    assert!(eventually(20, async || minter.minted() > before + 10).await);
    minter.stop().await;

    let recorded = eventually(20, async || tls_reload_records(&t.audit_dir()).len() == 2).await;
    let records = tls_reload_records(&t.audit_dir());
    assert!(recorded, "{records:?}");
    let record = &records[1];
    assert_eq!(record["outcome"], "ok", "{record}");
    assert_eq!(
        record["caller"],
        json!({"transport": "internal", "name": "daemon"})
    );
    let sha = signetd::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&new.der));
    assert_eq!(
        record["detail"],
        format!("SIGHUP; certificate sha256 {sha}"),
        "{record}"
    );
    // No key material in the log: not a line of either private key.
    let log = std::fs::read_dir(t.audit_dir())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    for key in [&new.key_pem, &pki.server.key_pem] {
        for line in key.lines().filter(|l| !l.starts_with("-----")) {
            assert!(
                !log.contains(line),
                "a private key line is in the audit log"
            );
        }
    }
    pki.server = new;
}
