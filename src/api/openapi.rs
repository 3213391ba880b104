//! The OpenAPI 3.1 document, built from the route table ([`super::routes`]), the
//! handlers' `#[utoipa::path]` attributes and the [`super::wire`] types; served at
//! `GET /openapi.json`, printed by `signetd openapi`, committed as `docs/openapi.json`.
//!
//! What OpenAPI cannot say exactly is described in words: who is calling is established
//! by the transport (the kernel's peer credentials on the Unix socket, a client
//! certificate over HTTPS), so both are `mutualTLS` security schemes with a description.

use std::sync::LazyLock;

use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{InfoBuilder, LicenseBuilder, OpenApi};

use super::routes;

pub mod errors;

/// The document: every route of [`routes::all`], with the error responses of
/// [`errors`] and the security schemes.
pub fn document() -> OpenApi {
    let mut doc = routes::all().into_openapi();
    // axum spells a parameter that spans segments `{*name}`; OpenAPI has no such form,
    // so the document names it as an ordinary parameter (its description says it may
    // hold slashes).
    doc.paths.paths = std::mem::take(&mut doc.paths.paths)
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    doc.info = InfoBuilder::new()
        .title("signetd")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(DESCRIPTION))
        .license(Some(LicenseBuilder::new().name("Apache-2.0").build()))
        .build();
    doc.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build()
            })
            .collect(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "peerCredentials".into(),
        SecurityScheme::MutualTls {
            description: Some(PEER_CREDENTIALS.into()),
            extensions: None,
        },
    );
    components.security_schemes.insert(
        "mutualTLS".into(),
        SecurityScheme::MutualTls {
            description: Some(MUTUAL_TLS.into()),
            extensions: None,
        },
    );
    components.responses.extend(errors::components());
    doc
}

/// The document as served (by [`super::handlers::openapi`], which gets it from the
/// router, as this module imports the route table) and committed: pretty JSON and a
/// final newline.
pub fn json() -> &'static [u8] {
    static JSON: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let mut json = document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        json.push('\n');
        json.into_bytes()
    });
    &JSON
}

const DESCRIPTION: &str = "A signing daemon for token issuers: it mints short-lived JWTs \
and raw signatures with keys that never leave a PKCS#11 token, publishes the public keys, \
and verifies tokens.\n\n\
One router serves every listener: the Unix socket (callers identified by the kernel), \
HTTPS with client certificates, and a loopback-only plain HTTP listener whose callers are \
anonymous. Anonymous callers get `401 unauthenticated` from the signing and admin \
operations before their body is read.\n\n\
Every error is `{\"error\":{\"code\":\"…\",\"message\":\"…\"}}`; clients match on `code`, \
which never changes. Two refusals come from the HTTP layer before any request exists and \
have no body: a request the parser cannot read (a bare `400`, connection closed) and a \
request head over `limits.max_header_bytes` (`431`). A known path with another method \
gets `405 method_not_allowed`, an unknown path `404 not_found`.";

const PEER_CREDENTIALS: &str = "The Unix socket: the kernel reports the calling process's \
uid, gid and pid (SO_PEERCRED), and the config names callers as `uid:N` or `gid:N`. \
OpenAPI has no scheme for this; it is listed as mutualTLS because, like a client \
certificate, it is established by the transport before any request, not sent with it.";

const MUTUAL_TLS: &str = "The HTTPS listener: a client certificate issued by one of \
`tls.client_ca`; its SPIFFE ID, DNS names or SHA-256 name the caller (`spiffe://…`, \
`dns:…`, `cert-sha256:…`). Without one, callers are anonymous.";

const TAGS: &[(&str, &str)] = &[
    (
        "signing",
        "Minting JWTs and raw signatures (identified callers named by an issuer's policy)",
    ),
    (
        "verify",
        "Verifying tokens (anyone; single use for the configured callers)",
    ),
    ("admin", "The key lifecycle (admins)"),
    (
        "public",
        "Published keys, revocations and this document (anyone, every transport)",
    ),
    ("health", "Liveness and readiness probes"),
    (
        "operations",
        "Metrics for the operator's monitoring (local callers; over TLS the configured ones)",
    ),
    (
        "audit",
        "The audit log as a C2SP transparency log: its signed checkpoint (anyone) and tiles (auditors)",
    ),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// `docs/openapi.json` is the document, byte for byte.
    #[test]
    fn the_committed_document_is_current() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let committed = std::fs::read(&committed).unwrap_or_default();
        assert!(
            committed == super::json(),
            "docs/openapi.json differs from the document the code generates; regenerate it with\n\n    \
             cargo run -q -- openapi > docs/openapi.json\n\nand review the diff"
        );
    }

    /// Routes are added in `api::routes` only, where each one is documented: nothing else
    /// in `src/` may call axum's routing methods.
    #[test]
    fn nothing_routes_around_the_route_table() {
        // Spelt in pieces so that this test does not find itself.
        let forbidden =
            ["route", "route_service", "nest", "nest_service"].map(|m| format!(".{m}("));
        let forbidden: Vec<String> = forbidden
            .into_iter()
            .chain([concat!("axum::", "routing").to_string()])
            .collect();
        let mut found = Vec::new();
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (n, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or("");
                        if forbidden.iter().any(|f| code.contains(f.as_str())) {
                            found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                        }
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "routes added outside src/api/routes.rs would be served but not documented; \
             add them there with routes!(handler) and #[utoipa::path]:\n{}",
            found.join("\n")
        );
    }

    /// What schemathesis and clients rely on: OpenAPI 3.1, every path, the schemes.
    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_slice(super::json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"]["/v1/tokens"]["post"].is_object());
        assert!(doc["paths"]["/openapi.json"]["get"].is_object());
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["peerCredentials"]["type"], "mutualTLS");
        assert_eq!(schemes["mutualTLS"]["type"], "mutualTLS");
    }
}
