//! Other clients over TLS: curl mints with a client certificate, `openssl s_client` is
//! shown TLS 1.3 (and refused TLS 1.2), and `signetd token mint --url` mints from a
//! `signetd serve` that reloads its certificate on SIGHUP and refuses unsafe settings at
//! start.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use serde_json::Value;
use signetd::Algorithm;

use super::pki::{self, Pki};
use super::{TlsDaemon, issuer, served_certificate};
use crate::common::{TestToken, eventually, generate_key, signetd_bin};

fn run(command: &mut Command) -> Output {
    tokio::task::block_in_place(|| command.output())
        .unwrap_or_else(|e| panic!("{command:?}: {e} (scripts/test.sh installs curl and openssl)"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_mints_with_a_client_certificate_and_openssl_sees_tls_1_3() {
    generate_key("tls-curl", Algorithm::Es256).await;
    let pki = Pki::new();
    let daemon = TlsDaemon::start(&issuer("tls-curl", &["dns:curl.example.org"]), &pki.tls).await;
    let (cert, key) = pki.write_leaf("curl", &pki.ca.client(40, &["curl.example.org"], false));
    let port = daemon.tls.port();
    let url = format!("https://localhost:{port}/v1/tokens");
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["--silent", "--show-error", "--max-time", "20"])
            .arg("--cacert")
            .arg(&pki.tls.client_ca)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-H", "content-type: application/json"])
            .args(["--data", r#"{"issuer":"tls-curl","aud":"api"}"#])
            .arg(&url);
        if with_cert {
            c.arg("--cert").arg(&cert).arg("--key").arg(&key);
        }
        run(&mut c)
    };
    let out = curl(true);
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reply["token"].as_str().unwrap().split('.').count(),
        3,
        "{reply}"
    );
    let out = curl(false);
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["error"]["code"], "unauthenticated", "{reply}");

    let s_client = |version: &str| {
        let mut c = Command::new("openssl");
        c.args(["s_client", "-brief", version, "-servername", "localhost"])
            .args(["-connect", &format!("127.0.0.1:{port}")])
            .arg("-CAfile")
            .arg(&pki.tls.client_ca)
            .stdin(std::process::Stdio::null());
        run(&mut c)
    };
    let out = s_client("-tls1_3");
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("Protocol version: TLSv1.3"), "{said}");
    assert!(said.contains("Verification: OK"), "{said}");
    let out = s_client("-tls1_2");
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        !out.status.success(),
        "TLS 1.2 is off unless configured: {said}"
    );
    assert!(said.contains("protocol version"), "{said}");
}

/// The `tls = https://ADDR` that `signetd serve` logs.
fn logged_tls_addr(log: &str) -> Option<std::net::SocketAddr> {
    let at = log.find("tls=https://")? + "tls=https://".len();
    log[at..].split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_mints_for_the_cli_over_https_reloads_on_sighup_and_refuses_unsafe_settings() {
    let token = TestToken::create("tls-serve");
    let pki = Pki::new();
    let tls_table = format!(
        "[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ncrl = {:?}\nreload_check_seconds = 0\n",
        pki.tls.cert,
        pki.tls.key,
        pki.tls.client_ca,
        pki.tls.crl.as_ref().unwrap()
    );
    let rest = format!("{}{tls_table}", issuer("served", &["dns:cli.example.org"]));
    let (config, socket) = token.write_config(&rest);
    token.init_ca_and_key(&config, "served");
    let c = config.to_str().unwrap();

    // Refused at start: plain HTTP off loopback, and a group-readable TLS key.
    let written = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        written.replace("http = \"off\"", "http = \"0.0.0.0:0\""),
    )
    .unwrap();
    let (ok, _, err) = token.signetd(&["serve", "--config", c]);
    assert!(
        !ok && err.contains("listen.http") && err.contains("not a loopback address"),
        "{err}"
    );
    std::fs::write(&config, &written).unwrap();
    std::fs::set_permissions(&pki.tls.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err) = token.signetd(&["serve", "--config", c]);
    assert!(
        !ok && err.contains("tls.key") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&pki.tls.key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let daemon = token.serve(&config, &socket);
    let log = std::fs::read_to_string(token.path("serve.log")).unwrap();
    let addr = logged_tls_addr(&log).unwrap_or_else(|| panic!("no tls address logged:\n{log}"));

    // The CLI mints over HTTPS with a client certificate.
    let (cert, key) = pki.write_leaf("cli", &pki.ca.client(50, &["cli.example.org"], false));
    let url = format!("https://localhost:{}", addr.port());
    let mut cli = Command::new(signetd_bin());
    cli.env_remove("SIGNETD_SOCKET")
        .args([
            "token", "mint", "--issuer", "served", "--aud", "api", "--url", &url,
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--cacert")
        .arg(&pki.tls.client_ca);
    let out = run(&mut cli);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().split('.').count(), 3);
    // With a revoked certificate the CLI says which alert the server sent.
    let revoked = pki.ca.client(pki::REVOKED, &["cli.example.org"], false);
    let (cert, key) = pki.write_leaf("revoked", &revoked);
    let mut cli = Command::new(signetd_bin());
    cli.args([
        "token", "mint", "--issuer", "served", "--aud", "api", "--url", &url,
    ])
    .arg("--cert")
    .arg(&cert)
    .arg("--key")
    .arg(&key)
    .arg("--cacert")
    .arg(&pki.tls.client_ca);
    let out = run(&mut cli);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CertificateRevoked"),
        "{}",
        text(&out.stderr)
    );

    // SIGHUP (the file poll is off here) brings in a new certificate.
    let trust = pki.client(None);
    assert_eq!(
        served_certificate(addr, trust.clone()).await,
        pki.server.der
    );
    let new = pki.ca.server(2);
    pki::write_key(&pki.tls.key, &new.key_pem);
    pki::write(&pki.tls.cert, &new.pem);
    let pid = daemon.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let switched = eventually(10, async || {
        served_certificate(addr, trust.clone()).await == new.der
    })
    .await;
    assert!(switched, "SIGHUP did not reload the certificate");
    let log = std::fs::read_to_string(token.path("serve.log")).unwrap();
    assert!(log.contains("TLS files reloaded"), "{log}");
}
