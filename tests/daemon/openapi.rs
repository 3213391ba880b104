//! The OpenAPI document against the daemon that serves it: the router answers exactly
//! the documented operations, and schemathesis (tests/interop/openapi_schemathesis.py)
//! finds no server error and no response off the schema.

use std::process::Command;

use hyper::Method;
use serde_json::Value;
use signetd::Algorithm;

use crate::common::{
    TestDaemon, generate_key, generate_raw_key, issuer_toml, my_uid, raw_issuer_toml, repo_root,
};

/// A path of the document with each `{parameter}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// axum does not list a router's routes, so the test asks the router: every documented
/// (method, path) reaches a handler (not the fallbacks' `not_found` or
/// `method_not_allowed`), and every other method on a documented path is refused as
/// one the path does not have. Paths the document lacks cannot be probed for; that no
/// code routes outside the route table is checked in `api::openapi`'s unit tests.
#[tokio::test(flavor = "multi_thread")]
async fn the_router_serves_exactly_the_documented_operations() {
    generate_key("openapi-probe", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("openapi-probe", Algorithm::Es256)).await;

    // The document served on each transport is the one the code generates, which the
    // unit tests compare with docs/openapi.json.
    let served = [
        daemon.get("/openapi.json").await,
        daemon.tcp(Method::GET, "/openapi.json", &[], b"").await,
    ];
    for reply in served {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), "application/json");
        assert!(reply.raw == signetd::api::openapi::json());
    }

    let doc: Value = serde_json::from_slice(signetd::api::openapi::json()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 14, "{:?}", paths.keys());
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];
    let mut probed = 0;
    for (path, item) in paths {
        let uri = concrete(path);
        for method in &methods {
            let documented = item.get(method.as_str().to_lowercase()).is_some();
            let reply = daemon.unix(method.clone(), &uri, &[], b"").await;
            let answer = (reply.status, reply.code().to_string());
            if documented {
                probed += 1;
                assert!(
                    answer != (404, "not_found".into()) && answer.1 != "method_not_allowed",
                    "{method} {path} is in the OpenAPI document but the router does not serve it: {answer:?}"
                );
            } else {
                assert_eq!(
                    answer,
                    (405, "method_not_allowed".into()),
                    "{method} {path} is served but not in the OpenAPI document"
                );
            }
        }
    }
    assert!(probed >= 16, "{probed} operations probed");
    // The probe can tell a handler's answer from the fallback's.
    assert_eq!(daemon.get("/v1/nothing").await.code(), "not_found");
}

/// The test venv's Python with schemathesis (scripts/test.sh installs it).
fn python() -> String {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let probe = Command::new(&python)
        .args(["-c", "import schemathesis, requests_unixsocket, pytest"])
        .output();
    match probe {
        Ok(out) if out.status.success() => python,
        _ => panic!(
            "{python} cannot import schemathesis, requests_unixsocket and pytest: run scripts/test.sh, which \
             installs them into target/test-venv, or set SIGNETD_TEST_PYTHON to a Python that has them"
        ),
    }
}

/// schemathesis generates requests from the served document, valid and invalid ones:
/// the public and audit operations over TCP; `/metrics`, minting, signing, verifying
/// and (but for revoking tokens) the admin calls over the Unix socket, as a caller the
/// issuers, `[verify]` and `[admin]` name; and a `jwt-svid` issuer's SPIFFE bundle. No
/// answer may be a 5xx, have an undocumented status, content type or header, or break
/// its status's schema.
/// The `jwt-svid` issuer of the schemathesis run.
const SVID_ISSUER: &str = "openapi-svid";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_response_off_the_schema() {
    // The issuer names the document's examples use, so the examples reach the signer.
    generate_key("auth", Algorithm::Es256).await;
    generate_raw_key("raw", Algorithm::Es256).await;
    generate_key(SVID_ISSUER, Algorithm::Es256).await;
    let uid = my_uid();
    let config = format!(
        "{}{}{}profile = \"jwt-svid\"\ntrust_domain = \"example.org\"\n\
         [verify]\nsingle_use_callers = [\"uid:{uid}\"]\n[admin]\ncallers = [\"uid:{uid}\"]\n",
        issuer_toml("auth", Algorithm::Es256),
        raw_issuer_toml("raw", Algorithm::Es256),
        issuer_toml(SVID_ISSUER, Algorithm::Es256),
    );
    let daemon = TestDaemon::start(&config).await;
    let seen_file = daemon.dir.path().join("seen.json");
    let out = tokio::task::block_in_place(|| {
        Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=short"])
            .arg(repo_root().join("tests/interop/openapi_schemathesis.py"))
            .env("SIGNETD_OPENAPI_HTTP", format!("http://{}", daemon.http))
            .env("SIGNETD_OPENAPI_SOCKET", &daemon.socket)
            .env("SIGNETD_OPENAPI_SEEN", &seen_file)
            .env("SIGNETD_OPENAPI_SVID_ISSUER", SVID_ISSUER)
            .current_dir(daemon.dir.path())
            .output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran both groups of operations, and its requests got where they should: a
    // token minted over the socket (the daemon saw this uid), tokens refused by
    // /v1/verify, and the public documents over TCP.
    assert!(!stdout.contains("skipped"), "{stdout}");
    let seen: Value = serde_json::from_slice(&std::fs::read(&seen_file).unwrap()).unwrap();
    println!("schemathesis: {seen:#}");
    for (operation, status) in [
        ("POST /v1/tokens", 200),
        ("POST /v1/tokens", 400),
        ("POST /v1/tokens", 422),
        ("POST /v1/sign", 200),
        ("POST /v1/verify", 422),
        ("POST /v1/keys/{kid}/revoke", 404),
        ("GET /v1/keys", 200),
        ("GET /.well-known/jwks.json", 200),
        ("GET /openapi.json", 200),
        ("GET /v1/issuers/{name}/spiffe-bundle", 200),
        ("GET /v1/audit/log/checkpoint", 200),
        ("GET /v1/audit/log/verifier-key", 200),
        ("GET /metrics", 200),
    ] {
        let key = format!("{operation} {status}");
        assert!(seen[&key].as_u64().unwrap_or(0) > 0, "no {key}: {seen:#}");
    }
}
