//! JWT profiles per issuer (docs/profiles.md): three issuers with three profiles on one
//! daemon, their tokens checked by /v1/verify, by PyJWT and by panva's jose with the
//! `typ` each requires (a custom `typ` too); a token of one profile refused as another;
//! the SPIFFE bundle; and CORS on the public documents.

use std::process::Command;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{
    Reply, TestDaemon, decode_parts, generate_key, issuer_toml, repo_root, sign_as,
};

const TRUST_DOMAIN: &str = "example.org";

/// The three issuers: `prof-jwt` (default profile), `prof-at` (at+jwt) and `prof-svid`
/// (jwt-svid); `at_profile` is the profile line of `prof-at`.
fn three_issuers(at_profile: &str) -> String {
    format!(
        "{}{}{at_profile}\n{}profile = \"jwt-svid\"\ntrust_domain = \"{TRUST_DOMAIN}\"\nspiffe_refresh_hint_seconds = 20\n",
        issuer_toml("prof-jwt", Algorithm::Es256),
        issuer_toml("prof-at", Algorithm::Es256),
        issuer_toml("prof-svid", Algorithm::Es256),
    )
}

async fn mint(daemon: &TestDaemon, body: Value) -> String {
    let reply = daemon.post("/v1/tokens", &body).await;
    assert_eq!(reply.status, 200, "{body}: {:?}", reply.json);
    reply.json["token"].as_str().unwrap().to_string()
}

async fn verify(daemon: &TestDaemon, token: &str) -> Reply {
    daemon
        .post("/v1/verify", &json!({"token": token, "audience": "api"}))
        .await
}

/// A verdict of an independent verifier: valid, and what it printed.
struct Verdict {
    valid: bool,
    stdout: String,
    stderr: String,
}

fn run(command: &mut Command) -> Verdict {
    let out = command.output().unwrap();
    Verdict {
        valid: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// PyJWT (tests/interop/verify_jwt.py) with the header `typ` checked explicitly.
/// Every accepted verdict's claims have `aud: api`; every refused one was refused for
/// its `typ`.
fn assert_typ_verdicts(accepted: &[Verdict], refused: &[Verdict]) {
    for verdict in accepted {
        assert!(verdict.valid, "refused: {}", verdict.stderr);
        let claims: Value = serde_json::from_str(verdict.stdout.trim()).unwrap();
        assert_eq!(claims["aud"], "api");
    }
    for verdict in refused {
        assert!(
            !verdict.valid && verdict.stderr.contains("INVALID") && verdict.stderr.contains("typ"),
            "{}",
            verdict.stderr
        );
    }
}

fn pyjwt(keys: (&str, &str), token: &str, iss: &str, typ: &str, require: &[&str]) -> Verdict {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = Command::new(python);
    command
        .arg(repo_root().join("tests/interop/verify_jwt.py"))
        .args([
            keys.0,
            keys.1,
            "--iss",
            iss,
            "--aud",
            "api",
            "--max-ttl",
            "60",
        ])
        .args(["--typ", typ]);
    for claim in require {
        command.args(["--require", claim]);
    }
    run(command.arg(token))
}

/// panva's jose (tests/interop/verify_jose.mjs): `jwtVerify(..., {typ})`.
fn jose(jwks_url: &str, token: &str, iss: &str, typ: &str, require: &[&str]) -> Verdict {
    assert!(
        std::env::var_os("SIGNETD_TEST_JOSE").is_some(),
        "SIGNETD_TEST_JOSE is not set: run scripts/test.sh, which installs jose into target/test-node"
    );
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("tests/interop/verify_jose.mjs"))
        .args([
            "--jwks-url",
            jwks_url,
            "--iss",
            iss,
            "--aud",
            "api",
            "--typ",
            typ,
        ]);
    for claim in require {
        command.args(["--require", claim]);
    }
    run(command.arg(token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_profiles_mint_verify_and_never_pass_for_each_other() {
    let jwt_kid = generate_key("prof-jwt", Algorithm::Es256).await;
    let at_kid = generate_key("prof-at", Algorithm::Es256).await;
    let svid_kid = generate_key("prof-svid", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&three_issuers("profile = \"at+jwt\"")).await;
    let svid_sub = format!("spiffe://{TRUST_DOMAIN}/ns/prod/sa/web");

    let plain = mint(
        &daemon,
        json!({"issuer":"prof-jwt","sub":"alice","aud":"api"}),
    )
    .await;
    let access = mint(
        &daemon,
        json!({"issuer":"prof-at","sub":"alice","aud":"api","claims":{"client_id":"app-1","scope":"read"}}),
    )
    .await;
    let svid = mint(
        &daemon,
        json!({"issuer":"prof-svid","sub":svid_sub,"aud":"api"}),
    )
    .await;
    assert_eq!(
        decode_parts(&plain).0,
        json!({"alg":"ES256","typ":"JWT","kid":jwt_kid})
    );
    assert_eq!(
        decode_parts(&access).0,
        json!({"alg":"ES256","typ":"at+jwt","kid":at_kid})
    );
    assert_eq!(
        decode_parts(&svid).0,
        json!({"alg":"ES256","typ":"JWT","kid":svid_kid})
    );
    let claims = decode_parts(&access).1;
    assert_eq!(
        (claims["sub"].as_str(), claims["client_id"].as_str()),
        (Some("alice"), Some("app-1"))
    );
    for claim in ["iss", "aud", "iat", "exp", "jti"] {
        assert!(claims.get(claim).is_some(), "RFC 9068 wants {claim}");
    }

    // What each profile refuses at mint, with its code.
    for (body, code) in [
        (
            json!({"issuer":"prof-at","aud":"api","claims":{"client_id":"app-1"}}),
            "missing_claim",
        ),
        (
            json!({"issuer":"prof-at","sub":"alice","aud":"api"}),
            "missing_claim",
        ),
        (json!({"issuer":"prof-svid","aud":"api"}), "missing_claim"),
        (
            json!({"issuer":"prof-svid","sub":"web","aud":"api"}),
            "invalid_spiffe_id",
        ),
        (
            json!({"issuer":"prof-svid","sub":"spiffe://example.org:443/web","aud":"api"}),
            "invalid_spiffe_id",
        ),
        (
            json!({"issuer":"prof-svid","sub":"spiffe://other.org/web","aud":"api"}),
            "trust_domain_not_allowed",
        ),
    ] {
        let reply = daemon.post("/v1/tokens", &body).await;
        assert_eq!((reply.status, reply.code()), (422, code), "{body}");
    }

    for token in [&plain, &access, &svid] {
        let reply = verify(&daemon, token).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }

    // prof-svid's bundle carries the hint its config sets (20 s), not the default
    // (the JWKS's cache lifetime, 15 s: the_spiffe_bundle_holds_the_issuers_jwks_keys).
    let hinted = daemon.get("/v1/issuers/prof-svid/spiffe-bundle").await;
    assert_eq!(hinted.status, 200, "{:?}", hinted.json);
    assert_eq!(hinted.json["spiffe_refresh_hint"], 20, "{:?}", hinted.json);

    // Independent verifiers, each told the typ to require.
    let jwks = format!("http://{}/.well-known/jwks.json", daemon.http);
    let bundle = format!("http://{}/v1/issuers/prof-svid/spiffe-bundle", daemon.http);
    let cases: [(&str, &str, &str, &[&str]); 3] = [
        (&plain, "https://prof-jwt.example", "JWT", &[]),
        (
            &access,
            "https://prof-at.example",
            "at+jwt",
            &["sub", "client_id"],
        ),
        (&svid, "https://prof-svid.example", "JWT", &["sub"]),
    ];
    let (accepted, refused) = tokio::task::block_in_place(|| {
        let accepted: Vec<Verdict> = cases
            .iter()
            .flat_map(|&(token, iss, typ, require)| {
                [
                    pyjwt(("--jwks-url", &jwks), token, iss, typ, require),
                    jose(&jwks, token, iss, typ, require),
                ]
            })
            .chain([pyjwt(
                ("--spiffe-bundle-url", &bundle),
                &svid,
                "https://prof-svid.example",
                "JWT",
                &["sub"],
            )])
            .collect();
        // The same verifiers told another profile's typ refuse the token.
        let refused = [
            pyjwt(
                ("--jwks-url", &jwks),
                &plain,
                "https://prof-jwt.example",
                "at+jwt",
                &[],
            ),
            jose(&jwks, &plain, "https://prof-jwt.example", "at+jwt", &[]),
            pyjwt(
                ("--jwks-url", &jwks),
                &access,
                "https://prof-at.example",
                "JWT",
                &[],
            ),
            jose(&jwks, &access, "https://prof-at.example", "JWT", &[]),
        ];
        (accepted, refused)
    });
    assert_typ_verdicts(&accepted, &refused);

    // Tokens the daemon would never mint, signed with the issuers' own keys: the type
    // of another profile, no type, a header field a JWT-SVID may not have.
    let now = signetd::service::unix_now();
    let claims = json!({"iss":"https://prof-at.example","sub":"alice","aud":"api","client_id":"app-1","iat":now,"exp":now + 30,"jti":"forged-1"});
    for (kid, issuer, header, code) in [
        (
            &at_kid,
            "prof-at",
            json!({"alg":"ES256","typ":"JWT","kid":at_kid}),
            "wrong_token_type",
        ),
        (
            &at_kid,
            "prof-at",
            json!({"alg":"ES256","kid":at_kid}),
            "wrong_token_type",
        ),
        (
            &jwt_kid,
            "prof-jwt",
            json!({"alg":"ES256","typ":"at+jwt","kid":jwt_kid}),
            "wrong_token_type",
        ),
        (
            &svid_kid,
            "prof-svid",
            json!({"alg":"ES256","typ":"at+jwt","kid":svid_kid}),
            "wrong_token_type",
        ),
        (
            &svid_kid,
            "prof-svid",
            json!({"alg":"ES256","typ":"JWT","kid":svid_kid,"cty":"JWT"}),
            "malformed_token",
        ),
    ] {
        let mut claims = claims.clone();
        claims["iss"] = json!(format!("https://{issuer}.example"));
        claims["sub"] = json!(svid_sub);
        let forged = sign_as(kid, &header, &claims).await;
        let reply = verify(&daemon, &forged).await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, code),
            "{header}: {:?}",
            reply.json
        );
    }
    // The same forgery with the right type verifies: the type is what was refused.
    let mut right = claims.clone();
    right["iss"] = json!("https://prof-at.example");
    let fine = sign_as(
        &at_kid,
        &json!({"alg":"ES256","typ":"application/AT+JWT","kid":at_kid}),
        &right,
    )
    .await;
    assert_eq!(verify(&daemon, &fine).await.status, 200);
    daemon.shutdown().await;

    // The operator turns prof-at into a plain JWT issuer: its at+jwt tokens are refused
    // from then on, while prof-jwt's tokens, minted as every token was before profiles
    // existed, stay valid under the default profile.
    let daemon = TestDaemon::start(&three_issuers("profile = \"jwt\"")).await;
    let reply = verify(&daemon, &access).await;
    assert_eq!(
        (reply.status, reply.code()),
        (422, "wrong_token_type"),
        "{:?}",
        reply.json
    );
    assert_eq!(verify(&daemon, &plain).await.status, 200);
    daemon.shutdown().await;
}

/// `prof-sec` with `sec_profile` and `prof-sec-jwt` with `jwt_profile` (profile lines).
fn custom_and_plain(sec_profile: &str, jwt_profile: &str) -> String {
    format!(
        "{}{sec_profile}\n{}{jwt_profile}\n",
        issuer_toml("prof-sec", Algorithm::Es256),
        issuer_toml("prof-sec-jwt", Algorithm::Es256),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_typ_mints_verifies_and_never_passes_for_a_plain_jwt() {
    const SECEVENT: &str = "profile = { typ = \"secevent+jwt\" }";
    let sec_kid = generate_key("prof-sec", Algorithm::Es256).await;
    let jwt_kid = generate_key("prof-sec-jwt", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&custom_and_plain(SECEVENT, "")).await;

    let event = mint(
        &daemon,
        json!({"issuer":"prof-sec","sub":"alice","aud":"api"}),
    )
    .await;
    let plain = mint(
        &daemon,
        json!({"issuer":"prof-sec-jwt","sub":"alice","aud":"api"}),
    )
    .await;
    assert_eq!(
        decode_parts(&event).0,
        json!({"alg":"ES256","typ":"secevent+jwt","kid":sec_kid})
    );
    assert_eq!(
        decode_parts(&plain).0,
        json!({"alg":"ES256","typ":"JWT","kid":jwt_kid})
    );
    for token in [&event, &plain] {
        let reply = verify(&daemon, token).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }

    // PyJWT and jose accept it as secevent+jwt (and the long form of that type), and
    // refuse it as a JWT; the plain issuer's token is no secevent+jwt to them either.
    let jwks = format!("http://{}/.well-known/jwks.json", daemon.http);
    let (sec_iss, jwt_iss) = ("https://prof-sec.example", "https://prof-sec-jwt.example");
    let (accepted, refused) = tokio::task::block_in_place(|| {
        let accepted: Vec<Verdict> = ["secevent+jwt", "application/secevent+jwt"]
            .into_iter()
            .flat_map(|typ| {
                [
                    pyjwt(("--jwks-url", &jwks), &event, sec_iss, typ, &[]),
                    jose(&jwks, &event, sec_iss, typ, &[]),
                ]
            })
            .collect();
        let refused = [
            pyjwt(("--jwks-url", &jwks), &event, sec_iss, "JWT", &[]),
            jose(&jwks, &event, sec_iss, "JWT", &[]),
            pyjwt(("--jwks-url", &jwks), &plain, jwt_iss, "secevent+jwt", &[]),
            jose(&jwks, &plain, jwt_iss, "secevent+jwt", &[]),
        ];
        (accepted, refused)
    });
    assert_typ_verdicts(&accepted, &refused);

    // Each issuer's key signing the other profile's type: refused by /v1/verify.
    let now = signetd::service::unix_now();
    for (kid, issuer, typ) in [
        (&sec_kid, "prof-sec", "JWT"),
        (&jwt_kid, "prof-sec-jwt", "secevent+jwt"),
    ] {
        let claims = json!({"iss":format!("https://{issuer}.example"),"sub":"alice","aud":"api","iat":now,"exp":now + 30,"jti":"forged-sec"});
        let header = json!({"alg":"ES256","typ":typ,"kid":kid});
        let forged = sign_as(kid, &header, &claims).await;
        let reply = verify(&daemon, &forged).await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, "wrong_token_type"),
            "{header}: {:?}",
            reply.json
        );
    }
    daemon.shutdown().await;

    // The operator swaps the two profiles: each minted token is now the other kind, and
    // refused.
    let daemon = TestDaemon::start(&custom_and_plain("profile = \"jwt\"", SECEVENT)).await;
    for token in [&event, &plain] {
        let reply = verify(&daemon, token).await;
        assert_eq!(
            (reply.status, reply.code()),
            (422, "wrong_token_type"),
            "{:?}",
            reply.json
        );
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn the_spiffe_bundle_holds_the_issuers_jwks_keys() {
    let kid = generate_key("prof-bundle", Algorithm::Es256).await;
    generate_key("prof-bundle-plain", Algorithm::Es256).await;
    let config = format!(
        "{}profile = \"jwt-svid\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n{}",
        issuer_toml("prof-bundle", Algorithm::Es256),
        issuer_toml("prof-bundle-plain", Algorithm::Es256),
    );
    let daemon = TestDaemon::start(&config).await;
    let reply = daemon
        .tcp(
            Method::GET,
            "/v1/issuers/prof-bundle/spiffe-bundle",
            &[],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.header("content-type"), "application/json");
    assert!(!reply.header("etag").is_empty());
    let bundle = reply.json;
    // The default hint: the JWKS's cache lifetime (15 s by default).
    assert_eq!(bundle["spiffe_refresh_hint"], 15);
    let keys = bundle["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{bundle}");
    let key = &keys[0];
    assert_eq!(key["use"], "jwt-svid");
    assert_eq!(key["kid"], kid.as_str());
    let members: Vec<&str> = key
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        ["crv", "kid", "kty", "use", "x", "y"],
        "no alg or x5c"
    );

    let jwks = daemon.get("/.well-known/jwks.json").await.json;
    let published = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the key is in the JWKS");
    for member in ["kty", "crv", "x", "y"] {
        assert_eq!(key[member], published[member], "{member}");
    }

    let plain = daemon
        .get("/v1/issuers/prof-bundle-plain/spiffe-bundle")
        .await;
    assert_eq!((plain.status, plain.code()), (404, "no_spiffe_bundle"));
    let unknown = daemon.get("/v1/issuers/nobody/spiffe-bundle").await;
    assert_eq!((unknown.status, unknown.code()), (404, "unknown_issuer"));
    daemon.shutdown().await;
}

const ORIGIN: &str = "https://app.example";

fn allowed(reply: &Reply) -> &str {
    reply.header("access-control-allow-origin")
}

#[tokio::test]
async fn cors_answers_configured_origins_on_public_documents_only() {
    generate_key("prof-cors", Algorithm::Es256).await;
    let config = format!(
        "{}profile = \"jwt-svid\"\ntrust_domain = \"{TRUST_DOMAIN}\"\n[cors]\nallowed_origins = [\"{ORIGIN}\", \"http://localhost:3000\"]\n",
        issuer_toml("prof-cors", Algorithm::Es256)
    );
    let daemon = TestDaemon::start(&config).await;
    let from = |origin| [("origin", origin)];

    for path in [
        "/.well-known/jwks.json",
        "/v1/keys",
        "/v1/revocations",
        "/v1/issuers/prof-cors/spiffe-bundle",
    ] {
        let reply = daemon.tcp(Method::GET, path, &from(ORIGIN), b"").await;
        assert_eq!((reply.status, allowed(&reply)), (200, ORIGIN), "GET {path}");
        assert!(
            reply.header("vary").to_ascii_lowercase().contains("origin"),
            "{path}"
        );
        assert_eq!(reply.header("access-control-allow-credentials"), "");
        let preflight = daemon
            .tcp(
                Method::OPTIONS,
                path,
                &[("origin", ORIGIN), ("access-control-request-method", "GET")],
                b"",
            )
            .await;
        assert_eq!(
            (preflight.status, allowed(&preflight)),
            (200, ORIGIN),
            "OPTIONS {path}"
        );
        let methods = preflight.header("access-control-allow-methods").to_string();
        assert!(
            methods.contains("GET") && !methods.contains("POST"),
            "{methods}"
        );
        let other = daemon
            .tcp(Method::GET, path, &from("https://evil.example"), b"")
            .await;
        assert_eq!(
            (other.status, allowed(&other)),
            (200, ""),
            "GET {path} from elsewhere"
        );
    }

    // Signing, verify and admin requests get no CORS headers, allowed origin or not.
    let mint = daemon
        .unix(
            Method::POST,
            "/v1/tokens",
            &[("origin", ORIGIN), ("content-type", "application/json")],
            br#"{"issuer":"prof-cors","sub":"spiffe://example.org/web","aud":"api"}"#,
        )
        .await;
    assert_eq!((mint.status, allowed(&mint)), (200, ""), "{:?}", mint.json);
    let token = mint.json["token"].as_str().unwrap();
    let body = serde_json::to_vec(&json!({"token": token, "audience": "api"})).unwrap();
    let verified = daemon
        .tcp(
            Method::POST,
            "/v1/verify",
            &[("origin", ORIGIN), ("content-type", "application/json")],
            &body,
        )
        .await;
    assert_eq!(
        (verified.status, allowed(&verified)),
        (200, ""),
        "{:?}",
        verified.json
    );
    let revoke = daemon
        .unix(
            Method::POST,
            "/v1/revocations",
            &[("origin", ORIGIN), ("content-type", "application/json")],
            br#"{"jti":"x","exp":1}"#,
        )
        .await;
    assert_eq!(allowed(&revoke), "", "{:?}", revoke.json);
    for path in ["/v1/tokens", "/v1/verify"] {
        let preflight = daemon
            .tcp(
                Method::OPTIONS,
                path,
                &[
                    ("origin", ORIGIN),
                    ("access-control-request-method", "POST"),
                ],
                b"",
            )
            .await;
        assert_eq!(allowed(&preflight), "", "OPTIONS {path}");
    }
    daemon.shutdown().await;

    // By default: no CORS header anywhere.
    let daemon = TestDaemon::start(&issuer_toml("prof-cors", Algorithm::Es256)).await;
    let reply = daemon
        .tcp(Method::GET, "/.well-known/jwks.json", &from(ORIGIN), b"")
        .await;
    assert_eq!((reply.status, allowed(&reply)), (200, ""));
    let preflight = daemon
        .tcp(
            Method::OPTIONS,
            "/.well-known/jwks.json",
            &[("origin", ORIGIN), ("access-control-request-method", "GET")],
            b"",
        )
        .await;
    assert_eq!((preflight.status, allowed(&preflight)), (405, ""));
    daemon.shutdown().await;
}
