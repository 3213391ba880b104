//! HSM faults, injected by the fault module (fault-pkcs11/, built by scripts/test.sh):
//! a real `signetd serve` process loads it in place of SoftHSM2 and, through a plan file
//! the test rewrites, sees chosen PKCS#11 calls fail, slow down or hang. Each test checks
//! the error the client gets during the fault, that the daemon recovers by itself, and
//! that a token minted afterwards verifies with PyJWT against the daemon's JWKS.

use std::path::PathBuf;
use std::process::Command;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::client::Endpoint;

use crate::common::{
    Reply, ServedDaemon, TestToken, eventually, issuer_toml, repo_root, request, request_unix,
};

/// The fault module: `SIGNETD_FAULT_MODULE` (scripts/test.sh builds and exports it), else
/// where `cargo build -p fault-pkcs11` puts it.
fn fault_module() -> PathBuf {
    let path = std::env::var_os("SIGNETD_FAULT_MODULE").map_or_else(
        || repo_root().join("target/debug/libfault_pkcs11.so"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no fault module at {}: run scripts/test.sh, or 'cargo build -p fault-pkcs11'",
        path.display()
    );
    path
}

/// A daemon on a token of its own, loading the fault module, with one ES256 issuer `fx`.
pub struct Faulty {
    pub token: TestToken,
    /// The issuer's first key.
    pub kid: String,
    pub socket: PathBuf,
    plan: PathBuf,
    /// Kept so the daemon runs until the test ends.
    _daemon: ServedDaemon,
}

impl Faulty {
    /// Starts it with `pkcs11_extra` added to the `[pkcs11]` table (e.g. a timeout).
    pub fn start(label: &str, pkcs11_extra: &str) -> Faulty {
        Faulty::start_with(label, pkcs11_extra, "fx", "")
    }

    /// [`Faulty::start`] with issuer `issuer` (ES256, with a first key) in place of `fx`,
    /// and `rest` added to the config.
    pub fn start_with(label: &str, pkcs11_extra: &str, issuer: &str, rest: &str) -> Faulty {
        let token = TestToken::create(label);
        let (config, socket) =
            token.write_config(&format!("{}{rest}", issuer_toml(issuer, Algorithm::Es256)));
        let kid = token.init_ca_and_key(&config, issuer);
        let real = token.var("SIGNETD_PKCS11_MODULE").to_string();
        let mut text = std::fs::read_to_string(&config).unwrap();
        for line in pkcs11_extra.lines() {
            // A key given in `pkcs11_extra` replaces the harness's own.
            let key = line.split('=').next().unwrap().trim();
            text = text
                .lines()
                .filter(|l| l.split('=').next().unwrap().trim() != key)
                .map(|l| format!("{l}\n"))
                .collect();
        }
        let text = text.replacen(
            &format!("module = {real:?}\n"),
            &format!(
                "module = {:?}\n{pkcs11_extra}",
                fault_module().display().to_string()
            ),
            1,
        );
        std::fs::write(&config, text).unwrap();
        let plan = token.path("faults.plan");
        let env = [
            format!("SIGNETD_FAULT_PLAN={}", plan.display()),
            format!("SIGNETD_FAULT_TARGET={real}"),
        ];
        let daemon = token.serve_under(&["env", &env[0], &env[1]], &config, &socket);
        Faulty {
            token,
            kid,
            socket,
            plan,
            _daemon: daemon,
        }
    }

    /// Replaces the fault plan (written beside it and renamed over it, so the module
    /// never reads half a plan).
    pub fn plan(&self, rules: &str) {
        let next = self.plan.with_extension("next");
        std::fs::write(&next, rules).unwrap();
        std::fs::rename(&next, &self.plan).unwrap();
    }

    pub async fn mint(&self) -> Reply {
        let body = json!({"issuer": "fx", "sub": "svc", "aud": "api", "ttl_seconds": 60});
        request_unix(&self.socket, Method::POST, "/v1/tokens", Some(&body)).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        request_unix(&self.socket, Method::GET, path, None).await
    }

    /// Waits (up to 20 s) for `/readyz` to answer 200 again after a fault is released.
    pub async fn ready_again(&self) {
        let released = eventually(20, async || self.get("/readyz").await.status == 200).await;
        assert!(
            released,
            "{:?}\n{}",
            self.get("/readyz").await.json,
            self.log()
        );
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.token.path("serve.log")).unwrap_or_default()
    }

    /// Mints a token and has PyJWT verify it against the JWKS the daemon serves now.
    pub async fn mint_and_verify(&self) {
        let reply = self.mint().await;
        assert_eq!(reply.status, 200, "{:?}\n{}", reply.json, self.log());
        let token = reply.json["token"].as_str().unwrap().to_string();
        let jwks = self.get("/.well-known/jwks.json").await;
        let jwks_file = self.token.path("jwks.json");
        std::fs::write(&jwks_file, &jwks.raw).unwrap();
        let out = Command::new(python())
            .arg(repo_root().join("tests/interop/verify_jwt.py"))
            .arg("--jwks-file")
            .arg(&jwks_file)
            .args([
                "--iss",
                "https://fx.example",
                "--aud",
                "api",
                "--max-ttl",
                "60",
            ])
            .args(["--alg", "ES256", &token])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PyJWT rejected a token minted after the fault: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls until a mint succeeds, for at most `seconds`.
    pub async fn recovers_within(&self, seconds: u64) {
        let recovered = eventually(seconds, async || self.mint().await.status == 200).await;
        assert!(
            recovered,
            "no successful mint within {seconds} s after the fault:\n{}",
            self.log()
        );
    }
}

/// The Python with PyJWT, as in `interop.rs`.
fn python() -> String {
    std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Audit records of `event`, in the daemon's log.
fn audit_events(f: &Faulty, event: &str) -> Vec<Value> {
    crate::common::audit_records(&f.token.audit_dir())
        .into_iter()
        .filter(|r| r["event"] == event)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_key_handle_is_looked_up_again_and_signs() {
    // Signing uses session copies by default: a stale copy is forgotten, the key looked
    // up again, and a new copy made.
    let f = Faulty::start("faults-stale", "");
    f.mint_and_verify().await;
    f.plan("function=C_SignInit rv=CKR_KEY_HANDLE_INVALID count=1\n");
    let reply = f.mint().await;
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.json, f.log());
    assert!(f.log().contains("handle is stale"), "{}", f.log());
    f.plan("function=C_SignInit rv=CKR_OBJECT_HANDLE_INVALID count=1\n");
    f.mint_and_verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_refuses_session_copies_signs_with_its_token_objects() {
    let f = Faulty::start("faults-copy", "");
    f.plan("function=C_CopyObject rv=CKR_ACTION_PROHIBITED\n");
    f.mint_and_verify().await;
    f.mint_and_verify().await;
    let log = f.log();
    let refused = log
        .lines()
        .filter(|l| l.contains("refused a session copy of the key") && l.contains(&f.kid))
        .count();
    // Once per worker session that signed with the key (two), not once per signature.
    assert!((1..=2).contains(&refused), "{refused}\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_session_copies_the_token_objects_sign() {
    let f = Faulty::start("faults-nocopy", "session_copies = false\n");
    f.plan("function=C_CopyObject rv=CKR_ACTION_PROHIBITED\n");
    f.mint_and_verify().await;
    assert!(!f.log().contains("session copy"), "{}", f.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_session_is_reopened_and_the_signature_tried_once_more() {
    let f = Faulty::start("faults-session", "");
    // One lost session: the client never sees it.
    for rv in [
        "CKR_SESSION_HANDLE_INVALID",
        "CKR_SESSION_CLOSED",
        "CKR_USER_NOT_LOGGED_IN",
    ] {
        f.plan(&format!("function=C_Sign rv={rv} count=1\n"));
        let reply = f.mint().await;
        assert_eq!(reply.status, 200, "{rv}: {:?}\n{}", reply.json, f.log());
    }
    assert!(
        f.log().contains("trying once more on a fresh session"),
        "{}",
        f.log()
    );
    // Sessions lost on every try: the client gets hsm_unavailable, once per request.
    f.plan("function=C_Sign rv=CKR_SESSION_HANDLE_INVALID\n");
    let reply = f.mint().await;
    assert_eq!((reply.status, reply.code()), (503, "hsm_unavailable"));
    assert!(!reply.header("retry-after").is_empty());
    f.plan("");
    f.recovers_within(10).await;
    f.mint_and_verify().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_lines_carry_the_request_id_of_the_job_it_runs() {
    let f = Faulty::start("faults-request-id", "");
    f.plan("function=C_Sign rv=CKR_SESSION_HANDLE_INVALID count=1\n");
    let body = json!({"issuer": "fx", "sub": "svc", "aud": "api"}).to_string();
    let headers = [
        ("content-type", "application/json"),
        ("x-request-id", "lost-session-7"),
    ];
    let endpoint = Endpoint::Unix(f.socket.clone());
    let reply = request(
        &endpoint,
        Method::POST,
        "/v1/tokens",
        &headers,
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}\n{}", reply.json, f.log());
    // The worker thread's warning, written after the job that lost the session, is
    // inside that request's span.
    let log = f.log();
    let line = log
        .lines()
        .find(|l| l.contains("PKCS#11 session lost; reopening before the next job"))
        .unwrap_or_else(|| panic!("no worker warning in\n{log}"));
    assert!(
        line.contains(" WARN ") && line.contains("request_id=lost-session-7"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_error_is_an_outage_the_daemon_recovers_from() {
    let f = Faulty::start("faults-device", "");
    // Every call fails, re-initialization included, until the plan is lifted.
    f.plan("function=* rv=CKR_DEVICE_ERROR\n");
    let reply = f.mint().await;
    assert_eq!(
        (reply.status, reply.code()),
        (503, "hsm_unavailable"),
        "{}",
        f.log()
    );
    assert_eq!(reply.header("retry-after"), "2");
    let again = f.mint().await;
    assert_eq!(again.code(), "hsm_unavailable");
    assert_eq!(f.get("/readyz").await.status, 503);
    // The public keys stay published meanwhile.
    assert_eq!(f.get("/.well-known/jwks.json").await.status, 200);
    f.plan("");
    // Recovery retries with backoff from 0.5 s: well within 20 s of the device coming back.
    f.recovers_within(20).await;
    f.mint_and_verify().await;
    // The first call to fail: signing, or making the worker's session copy of the key
    // (the first signature in each worker session makes one).
    let first = ["C_SignInit", "C_CopyObject"].map(|f| format!("{f} returned CKR_DEVICE_ERROR"));
    assert!(first.iter().any(|l| f.log().contains(l)), "{}", f.log());
    assert!(f.log().contains("recovered from the outage"), "{}", f.log());
    let recorded = eventually(5, async || !audit_events(&f, "hsm_recovered").is_empty()).await;
    assert!(recorded, "no hsm_recovered record");
    let outage = audit_events(&f, "hsm_outage");
    assert_eq!(outage.len(), 1, "{outage:?}");
    assert!(
        first.iter().any(|l| outage[0]["detail"] == *l),
        "{outage:?}"
    );

    // A token that blinks once (one failed call) is an outage too, and recovers.
    for rv in [
        "CKR_TOKEN_NOT_PRESENT",
        "CKR_DEVICE_REMOVED",
        "CKR_GENERAL_ERROR",
        "CKR_FUNCTION_FAILED",
    ] {
        f.plan(&format!("function=C_Sign rv={rv} count=1\n"));
        let reply = f.mint().await;
        assert_eq!(reply.code(), "hsm_unavailable", "{rv}");
        f.recovers_within(20).await;
    }
    f.mint_and_verify().await;
    // Every outage has its record and then its recovery's, in that order.
    let health = || {
        crate::common::audit_records(&f.token.audit_dir())
            .into_iter()
            .filter_map(|r| match r["event"].as_str() {
                Some(e @ ("hsm_outage" | "hsm_recovered")) => Some(e.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let all = eventually(5, async || health().len() == 10).await;
    let events = health();
    assert!(all, "{events:?}");
    assert!(
        events
            .chunks(2)
            .all(|pair| pair == ["hsm_outage", "hsm_recovered"]),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_beyond_the_queue_is_refused_at_once() {
    // One slow session, two waiting places: most of a burst is refused, none times out.
    let f = Faulty::start(
        "faults-flood",
        "sessions = 1\nqueue = 2\ntimeout_ms = 20000\n",
    );
    f.plan("function=C_Sign delay_ms=300\n");
    let body = json!({"issuer": "fx", "sub": "svc", "aud": "api", "ttl_seconds": 60});
    let mints: Vec<_> = (0..12)
        .map(|_| {
            let (socket, body) = (f.socket.clone(), body.clone());
            tokio::spawn(async move {
                request_unix(&socket, Method::POST, "/v1/tokens", Some(&body)).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for mint in mints {
        replies.push(mint.await.unwrap());
    }
    let codes: Vec<&str> = replies
        .iter()
        .map(|r| if r.status == 200 { "ok" } else { r.code() })
        .collect();
    assert!(codes.contains(&"ok"), "{codes:?}");
    assert!(codes.contains(&"overloaded"), "{codes:?}");
    assert!(
        codes.iter().all(|c| *c == "ok" || *c == "overloaded"),
        "{codes:?}"
    );
    let refused = replies.iter().find(|r| r.code() == "overloaded").unwrap();
    assert_eq!((refused.status, refused.header("retry-after")), (503, "1"));
    f.plan("");
    f.mint_and_verify().await;
}

#[tokio::test]
async fn a_hung_call_times_out_and_a_new_worker_takes_its_place() {
    // One session: without a replacement, the hung call would stop all signing.
    let f = Faulty::start("faults-hang", "sessions = 1\ntimeout_ms = 1500\n");
    f.plan("function=C_Sign hang count=1\n");
    let hung = f.mint().await;
    assert_eq!(
        (hung.status, hung.code()),
        (503, "hsm_timeout"),
        "{:?}",
        hung.json
    );
    // The stuck worker still sits in C_Sign; its replacement signs.
    f.mint_and_verify().await;
    let ready = f.get("/readyz").await;
    assert_eq!(ready.status, 503, "{:?}", ready.json);
    assert!(
        ready.json.to_string().contains("hang inside the module"),
        "{:?}",
        ready.json
    );
    assert!(f.log().contains("abandoning its worker"), "{}", f.log());
    // Lifting the rule lets the hung call return; its worker exits and readiness
    // returns.
    f.plan("");
    f.ready_again().await;
    f.mint_and_verify().await;
}

/// A client that hangs up while its call hangs leaves nobody waiting for the answer; the
/// call is still abandoned at its deadline and its worker replaced.
#[tokio::test]
async fn a_hung_call_whose_client_went_away_is_still_abandoned() {
    let f = Faulty::start("faults-gone", "sessions = 1\ntimeout_ms = 1500\n");
    f.plan("function=C_Sign hang count=1\n");
    // The client gives up long before the deadline; hyper drops the request's future.
    let gone = tokio::time::timeout(std::time::Duration::from_millis(300), f.mint()).await;
    assert!(
        gone.is_err(),
        "the hung mint answered: {:?}",
        gone.map(|r| r.json)
    );
    let named = eventually(20, async || {
        let ready = f.get("/readyz").await;
        ready.status == 503 && ready.json.to_string().contains("hang inside the module")
    })
    .await;
    assert!(named, "{:?}\n{}", f.get("/readyz").await.json, f.log());
    // The one session is stuck in C_Sign; only a replacement worker can sign this.
    f.mint_and_verify().await;
    f.plan("");
    f.ready_again().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_on_a_fresh_session_gets_only_what_is_left_of_the_deadline() {
    // timeout_ms = 3000. The first C_Sign loses its session after 2 s; the retry on a
    // fresh session has at most the 1 s that is left.
    let f = Faulty::start("faults-deadline", "sessions = 1\ntimeout_ms = 3000\n");
    f.mint_and_verify().await;

    // Told structurally, by the answer: a retry that takes 1.5 s would be signed within
    // a timeout of its own, but not within what is left of the first try's.
    f.plan(
        "function=C_Sign rv=CKR_SESSION_HANDLE_INVALID delay_ms=2000 count=1\n\
         function=C_Sign delay_ms=1500 count=1\n",
    );
    let late = f.mint().await;
    assert_eq!(
        (late.status, late.code()),
        (503, "hsm_timeout"),
        "{:?}\n{}",
        late.json,
        f.log()
    );
    assert!(
        f.log().contains("trying once more on a fresh session"),
        "{}",
        f.log()
    );
    // The retry's worker, abandoned in its slow C_Sign, finishes that signature before
    // the next plan, so it cannot take that plan's faults.
    f.ready_again().await;
    f.mint_and_verify().await;

    // A retry that hangs: the answer comes at the one deadline, never a second timeout
    // later. A first try of 2 s plus a fresh 3 s would be at least 5 s; one deadline is
    // 3 s, and the bound leaves 2 s of slack for a loaded machine.
    f.plan(
        "function=C_Sign rv=CKR_SESSION_HANDLE_INVALID delay_ms=2000 count=1\n\
         function=C_Sign hang count=1\n",
    );
    let started = std::time::Instant::now();
    let hung = f.mint().await;
    let took = started.elapsed();
    assert_eq!(
        (hung.status, hung.code()),
        (503, "hsm_timeout"),
        "{:?}\n{}",
        hung.json,
        f.log()
    );
    assert!(
        took < std::time::Duration::from_millis(5000),
        "hsm_timeout after {took:?}: the retry had a timeout of its own\n{}",
        f.log()
    );
    // The hung retry's worker was replaced as for any hung call: the replacement signs
    // while the retry still hangs, and the abandoned worker exits once the call returns.
    f.mint_and_verify().await;
    let ready = f.get("/readyz").await;
    assert!(
        ready.json.to_string().contains("hang inside the module"),
        "{:?}",
        ready.json
    );
    f.plan("");
    f.ready_again().await;
    f.mint_and_verify().await;
}
