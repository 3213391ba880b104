//! The wire: every refusal is the JSON error body with a stable code, whatever part of
//! the request was wrong (even a path segment that is not UTF-8), and a refused admin
//! request is on the audit record however early it was refused.

use std::path::Path;

use hyper::Method;
use serde_json::Value;
use signetd::Algorithm;

use crate::common::{RawConnection, TestDaemon, audit_records, issuer_toml, lifecycle_toml};

/// A daemon whose caller (this process) is an admin, logging to `log`.
async fn admin_daemon(issuer: &str, log: &Path) -> TestDaemon {
    TestDaemon::start(&format!(
        "{}{}[audit]\ndir = {:?}\n",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml(),
        log.display().to_string()
    ))
    .await
}

/// Routes with a path parameter, each with a segment that decodes to invalid UTF-8.
const BAD_SEGMENTS: &[(&str, &str)] = &[
    ("GET", "/v1/keys/%FF"),
    ("GET", "/v1/keys/%FF/attestation"),
    ("POST", "/v1/keys/%FF/retire"),
    ("POST", "/v1/keys/%FF/revoke"),
    ("POST", "/v1/issuers/%FF/rotate"),
    ("POST", "/v1/issuers/a%C3%28b/rotate"),
];

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_json_invalid_request() {
    let log = tempfile::tempdir().unwrap();
    let daemon = admin_daemon("wire-path", log.path()).await;
    for (method, path) in BAD_SEGMENTS {
        let method: Method = method.parse().unwrap();
        let reply = daemon.unix(method, path, &[], b"").await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}: {:?}",
            reply.raw
        );
        assert_eq!(reply.header("content-type"), "application/json", "{path}");
        assert!(
            !reply.json["error"]["message"].as_str().unwrap().is_empty(),
            "{path}"
        );
    }
    // The public routes answer the same over TCP.
    let reply = daemon.tcp(Method::GET, "/v1/keys/%FF", &[], b"").await;
    assert_eq!((reply.status, reply.code()), (400, "invalid_request"));
    assert_eq!(reply.header("content-type"), "application/json");
    // The daemon keeps serving.
    let reply = daemon.get("/v1/keys").await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn refused_admin_calls_with_bad_paths_are_on_the_audit_record() {
    let log = tempfile::tempdir().unwrap();
    let daemon = admin_daemon("wire-audit", log.path()).await;
    let admin_posts = [
        "/v1/keys/%FF/revoke",
        "/v1/keys/%FF/retire",
        "/v1/issuers/%FF/rotate",
    ];
    for path in admin_posts {
        let reply = daemon.unix(Method::POST, path, &[], b"").await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "invalid_request"),
            "{path}"
        );
    }
    daemon.shutdown().await;
    let records = audit_records(log.path());
    for path in admin_posts {
        let request = format!("POST {path}");
        let record = records
            .iter()
            .find(|r| r["event"] == "refused" && r["request"] == request.as_str())
            .unwrap_or_else(|| panic!("no refused record for {request}: {records:?}"));
        assert_eq!(record["code"], "invalid_request", "{record}");
        assert_eq!(record["outcome"], "refused", "{record}");
    }
}

#[tokio::test]
async fn fallbacks_and_probes_keep_their_exact_bodies() {
    let log = tempfile::tempdir().unwrap();
    let daemon = admin_daemon("wire-exact", log.path()).await;
    let reply = daemon.get("/healthz").await;
    assert_eq!(
        (reply.status, &reply.raw[..]),
        (200, &br#"{"status":"ok"}"#[..])
    );
    let cases: &[(Method, &str, u16, &[u8])] = &[
        (
            Method::GET,
            "/v1/%FF",
            404,
            br#"{"error":{"code":"not_found","message":"no such endpoint"}}"#,
        ),
        (
            Method::DELETE,
            "/v1/keys/%FF",
            405,
            br#"{"error":{"code":"method_not_allowed","message":"method not allowed"}}"#,
        ),
        (
            Method::GET,
            "/v1/keys/no-such-kid",
            404,
            br#"{"error":{"code":"unknown_key","message":"unknown key \"no-such-kid\""}}"#,
        ),
    ];
    for (method, path, status, body) in cases {
        let reply = daemon.unix(method.clone(), path, &[], b"").await;
        assert_eq!(
            (reply.status, &reply.raw[..]),
            (*status, *body),
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply.raw)
        );
        assert_eq!(reply.header("content-type"), "application/json");
    }
    // A query string is not read by any route: it changes nothing.
    let reply = daemon.get("/v1/keys/no-such-kid?x=%FF").await;
    assert_eq!((reply.status, reply.code()), (404, "unknown_key"));
}

/// A raw, undecoded non-ASCII byte in the path never reaches the router: hyper refuses
/// the request line with a bare 400 (no body) and closes the connection. It is the one
/// refusal without the JSON body, since no handler or route sees it; the daemon keeps
/// serving.
#[tokio::test]
async fn a_raw_non_ascii_byte_in_the_path_is_refused() {
    let log = tempfile::tempdir().unwrap();
    let daemon = admin_daemon("wire-raw", log.path()).await;
    let mut conn = RawConnection::open(&daemon.socket).await;
    conn.send(b"GET /v1/keys/\xff HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let (status, body) = conn.reply().await;
    assert_eq!((status, body), (400, Value::Null));
    let reply = daemon.get("/healthz").await;
    assert_eq!(reply.status, 200);
}
