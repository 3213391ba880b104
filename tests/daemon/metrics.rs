//! `GET /metrics`: a real `signetd serve` process, traffic with known outcomes, and its
//! metrics read over the socket and parsed by an independent parser (prometheus_client's,
//! in the test venv: tests/interop/parse_metrics.py). Each family must be there with the
//! counts the traffic implies. Then who may read them: anonymous callers on the loopback
//! HTTP listener may not; the `[metrics] listen` listener serves them and nothing else.
//!
//! The recorder is global to a process, so these tests run the binary: its counts are
//! its own daemon's alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;
use signetd::client::Endpoint;

use crate::common::{
    ServedDaemon, TestToken, audit_records, eventually, issuer_toml, my_uid, raw_issuer_toml,
    repo_root, request, request_unix,
};

/// One sample: its name and labels, and its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// What prometheus_client's parser made of an exposition: its families (by the parser's
/// name, counters without `_total`) and their samples.
#[derive(Debug)]
struct Scrape {
    families: BTreeMap<String, (String, Vec<Sample>)>,
}

impl Scrape {
    /// Parses `text` with prometheus_client; fails the test if it is not valid.
    fn parse(text: &str, dir: &Path) -> Scrape {
        let file = dir.join("metrics.txt");
        std::fs::write(&file, text).unwrap();
        let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let out = Command::new(python)
            .arg(repo_root().join("tests/interop/parse_metrics.py"))
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prometheus_client refused the exposition (run scripts/test.sh for the venv): {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut families = BTreeMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let family: Value = serde_json::from_str(line).unwrap();
            let samples = family["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Sample {
                    name: s["name"].as_str().unwrap().to_string(),
                    labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                    value: s["value"].as_f64().unwrap(),
                })
                .collect();
            let name = family["name"].as_str().unwrap().to_string();
            families.insert(
                name,
                (family["type"].as_str().unwrap().to_string(), samples),
            );
        }
        Scrape { families }
    }

    /// The type of `family`, which must be present.
    fn kind(&self, family: &str) -> &str {
        let Some((kind, _)) = self.families.get(family) else {
            panic!("no family {family}; have {:?}", self.families.keys());
        };
        kind
    }

    /// The value of the sample `name` with exactly `labels`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.families
            .values()
            .flat_map(|(_, samples)| samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// [`Scrape::get`], which must be present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.families))
    }

    /// Every sample of `family` (its parsed name), labels as given.
    fn samples(&self, family: &str) -> &[Sample] {
        self.families.get(family).map_or(&[], |(_, s)| s)
    }
}

/// Reads `/metrics` over the daemon's socket, and parses it.
async fn scrape(socket: &Path, dir: &Path) -> Scrape {
    let reply = request_unix(socket, Method::GET, "/metrics", None).await;
    assert_eq!(reply.status, 200, "{:?}", reply.raw);
    assert!(
        reply
            .header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        reply.headers
    );
    Scrape::parse(std::str::from_utf8(&reply.raw).unwrap(), dir)
}

/// The address after `name = http://` in the daemon's "signetd serving" log line.
fn served_address(log: &str, name: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("signetd serving"))
        .unwrap_or_else(|| panic!("no 'signetd serving' line in\n{log}"));
    let from = line
        .find(&format!("{name}=http://"))
        .unwrap_or_else(|| panic!("no {name} address in {line}"))
        + name.len()
        + "=http://".len();
    line[from..]
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .unwrap()
        .to_string()
}

/// A daemon with a JWT issuer `mx`, a raw-signing issuer `rx`, an issuer `lx` that
/// allows one mint per caller per hour, single-use verification for this uid, the
/// loopback HTTP listener and a `[metrics] listen` listener (both on free ports), and
/// a lifecycle tick every second (it counts the replay store).
struct Metered {
    token: TestToken,
    socket: std::path::PathBuf,
    http: String,
    metrics: String,
    _daemon: ServedDaemon,
}

impl Metered {
    fn start() -> Metered {
        let token = TestToken::create("metrics");
        let uid = my_uid();
        let issuers = format!(
            "{}{}{}rate_per_principal = \"1/h\"\n",
            issuer_toml("mx", Algorithm::Es256),
            raw_issuer_toml("rx", Algorithm::Es256),
            issuer_toml("lx", Algorithm::Es256),
        );
        let rest = format!(
            "[verify]\nsingle_use_callers = [\"uid:{uid}\"]\n[lifecycle]\ntick_seconds = 1\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n{issuers}"
        );
        let (config, socket) = token.write_config(&rest);
        token.init_ca_and_key(&config, "mx");
        for issuer in ["rx", "lx"] {
            let c = config.to_str().unwrap();
            let (ok, _, err) =
                token.signetd(&["keys", "generate", "--issuer", issuer, "--config", c]);
            assert!(ok, "{err}");
        }
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replacen("http = \"off\"", "http = \"127.0.0.1:0\"", 1);
        std::fs::write(&config, text).unwrap();
        let daemon = token.serve(&config, &socket);
        let log = std::fs::read_to_string(token.path("serve.log")).unwrap();
        Metered {
            http: served_address(&log, "http"),
            metrics: served_address(&log, "metrics"),
            token,
            socket,
            _daemon: daemon,
        }
    }

    async fn post(&self, path: &str, body: Value) -> crate::common::Reply {
        request_unix(&self.socket, Method::POST, path, Some(&body)).await
    }

    async fn mint(&self, issuer: &str, audience: &str) -> crate::common::Reply {
        let body = json!({"issuer": issuer, "sub": "svc", "aud": audience, "ttl_seconds": 60});
        self.post("/v1/tokens", body).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_traffic_the_daemon_served() {
    let d = Metered::start();
    // Four mints, two refused by the service (an audience mx does not allow; lx's
    // per-caller limit), one refused before the handler (anonymous, on plain HTTP).
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let reply = d.mint("mx", "api").await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        tokens.push(reply.json["token"].as_str().unwrap().to_string());
    }
    let refused = d.mint("mx", "elsewhere").await;
    assert_eq!(refused.code(), "audience_not_allowed");
    assert_eq!(d.mint("lx", "api").await.status, 200);
    let limited = d.mint("lx", "api").await;
    assert_eq!((limited.status, limited.code()), (429, "rate_limited"));
    let anonymous = request(
        &Endpoint::Tcp(d.http.clone()),
        Method::POST,
        "/v1/tokens",
        &[("content-type", "application/json")],
        br#"{"issuer":"mx","aud":"api"}"#,
    )
    .await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "unauthenticated")
    );
    // One raw signature, one single-use verification.
    let signed = d
        .post("/v1/sign", json!({"issuer": "rx", "message": "aGVsbG8"}))
        .await;
    assert_eq!(signed.status, 200, "{:?}", signed.json);
    let consume = json!({"token": tokens[0], "audience": "api", "single_use": true});
    let verified = d.post("/v1/verify", consume).await;
    assert_eq!(verified.status, 200, "{:?}", verified.json);

    // The replay store's gauge is set at each lifecycle tick: wait for one after the
    // verification (a tick a second).
    let dir = d.token.path("");
    let counted = eventually(10, async || {
        scrape(&d.socket, &dir)
            .await
            .get("signetd_replay_store_jtis", &[])
            == Some(1.0)
    })
    .await;
    assert!(counted, "signetd_replay_store_jtis never read 1");
    let before = audit_records(&d.token.audit_dir());
    let bytes_before = audit_bytes(&d.token.audit_dir());
    let m = scrape(&d.socket, &dir).await;
    let after = audit_records(&d.token.audit_dir());
    let bytes_after = audit_bytes(&d.token.audit_dir());

    // Requests by route template, code and transport.
    assert_eq!(m.kind("signetd_http_requests"), "counter");
    let requests = |route: &str, code: &str, transport: &str| {
        m.get(
            "signetd_http_requests_total",
            &[("code", code), ("route", route), ("transport", transport)],
        )
    };
    assert_eq!(requests("/v1/tokens", "200", "unix"), Some(4.0));
    let refused_code = refused.status.to_string();
    assert_eq!(requests("/v1/tokens", &refused_code, "unix"), Some(1.0));
    assert_eq!(requests("/v1/tokens", "429", "unix"), Some(1.0));
    assert_eq!(requests("/v1/tokens", "401", "tcp"), Some(1.0));
    assert_eq!(requests("/v1/sign", "200", "unix"), Some(1.0));
    assert_eq!(requests("/v1/verify", "200", "unix"), Some(1.0));
    // Every route label is a template of the router, never a raw path.
    for sample in m.samples("signetd_http_requests") {
        let route = &sample.labels["route"];
        assert!(
            [
                "/v1/tokens",
                "/v1/sign",
                "/v1/verify",
                "/readyz",
                "/metrics"
            ]
            .contains(&route.as_str()),
            "{route}"
        );
    }

    // Latency histograms: one observation per operation the handlers ran.
    for (family, ok, error) in [
        ("signetd_mint_duration_seconds", 4.0, 2.0),
        ("signetd_sign_duration_seconds", 1.0, 0.0),
        ("signetd_verify_duration_seconds", 1.0, 0.0),
    ] {
        assert_eq!(m.kind(family), "histogram");
        let count = format!("{family}_count");
        assert_eq!(m.value(&count, &[("outcome", "ok")]), ok, "{family}");
        assert_eq!(
            m.get(&count, &[("outcome", "error")]).unwrap_or(0.0),
            error,
            "{family}"
        );
        let inf = m.value(
            &format!("{family}_bucket"),
            &[("le", "+Inf"), ("outcome", "ok")],
        );
        assert_eq!(inf, ok, "{family}");
    }

    // The PKCS#11 workers (the gauges rise while signing:
    // all_workers_busy_and_a_queue_show_while_signing_is_slow, which also sees them fall
    // back to 0).
    assert_eq!(m.kind("signetd_hsm_queue_depth"), "gauge");
    assert_eq!(m.kind("signetd_hsm_busy_workers"), "gauge");
    // No call failed, no outage (tests/daemon/metrics.rs's fault test has both).
    assert!(m.samples("signetd_hsm_errors").is_empty());
    assert_eq!(m.value("signetd_hsm_outages_total", &[]), 0.0);
    assert_eq!(m.value("signetd_hsm_recoveries_total", &[]), 0.0);

    // The audit log: the records and bytes the files hold, within what was written
    // before and after the scrape (records keep arriving: the scrape's own refusals
    // interval, checkpoints).
    let written = m.value("signetd_audit_records_written_total", &[]);
    assert!(
        (before.len() as f64..=after.len() as f64).contains(&written),
        "{written} records counted, {} to {} in the log",
        before.len(),
        after.len()
    );
    let bytes = m.value("signetd_audit_bytes_written_total", &[]);
    assert!(
        (bytes_before as f64..=bytes_after as f64).contains(&bytes),
        "{bytes} bytes counted, {bytes_before} to {bytes_after} in the log"
    );
    assert_eq!(m.kind("signetd_audit_records_per_fsync"), "histogram");
    assert_eq!(m.value("signetd_audit_records_per_fsync_sum", &[]), written);
    let fsyncs = m.value("signetd_audit_fsync_duration_seconds_count", &[]);
    let batches = m.value("signetd_audit_records_per_fsync_count", &[]);
    // Each successful write is one fsync; each record went in one.
    assert_eq!(fsyncs, batches);
    assert!(
        (1.0..=written).contains(&batches),
        "{batches} batches, {written} records"
    );
    // Refusals: this uid's two (audience, rate limit) one by one; the anonymous one
    // counted into its interval's aggregate.
    let refusals = |recorded| m.get("signetd_audit_refusals_total", &[("recorded", recorded)]);
    assert_eq!(refusals("individual"), Some(2.0));
    assert_eq!(refusals("aggregated"), Some(1.0));

    // Keys: one active key per issuer, every other state zero.
    for issuer in ["mx", "rx", "lx"] {
        for state in ["pending", "active", "retired", "archived", "revoked"] {
            let want = if state == "active" { 1.0 } else { 0.0 };
            let have = m.value("signetd_keys", &[("issuer", issuer), ("state", state)]);
            assert_eq!(have, want, "{issuer} {state}");
        }
    }
    assert_eq!(m.value("signetd_replay_store_jtis", &[]), 1.0);
    assert_eq!(
        m.value(
            "signetd_rate_limited_total",
            &[("issuer", "lx"), ("kind", "principal")]
        ),
        1.0
    );
    assert_eq!(m.samples("signetd_rate_limited").len(), 1);
    assert_eq!(
        m.value(
            "signetd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

/// The bytes of the audit log's records (the segment being written runs ahead with zeros).
fn audit_bytes(dir: &Path) -> u64 {
    signetd::audit::verify::segment_paths(&[dir.to_path_buf()])
        .unwrap()
        .iter()
        .map(|p| crate::common::segment_text(p).len() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_are_refused_metrics_except_on_the_metrics_listener() {
    let d = Metered::start();
    let plain = Endpoint::Tcp(d.http.clone());
    let refused = request(&plain, Method::GET, "/metrics", &[], b"").await;
    assert_eq!((refused.status, refused.code()), (401, "unauthenticated"));
    // The other public endpoints still answer there.
    let jwks = request(&plain, Method::GET, "/.well-known/jwks.json", &[], b"").await;
    assert_eq!(jwks.status, 200);

    let listener = Endpoint::Tcp(d.metrics.clone());
    let served = request(&listener, Method::GET, "/metrics", &[], b"").await;
    assert_eq!(served.status, 200);
    let m = Scrape::parse(std::str::from_utf8(&served.raw).unwrap(), &d.token.path(""));
    assert_eq!(
        m.value(
            "signetd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // The plain listener's refusal above is in it, under its template and transport.
    let counted = m.get(
        "signetd_http_requests_total",
        &[("code", "401"), ("route", "/metrics"), ("transport", "tcp")],
    );
    assert_eq!(counted, Some(1.0));
    // And nothing else is served there: not the JWKS, not a signing route.
    for (method, path) in [
        (Method::GET, "/.well-known/jwks.json"),
        (Method::GET, "/healthz"),
        (Method::POST, "/v1/tokens"),
    ] {
        let reply = request(&listener, method, path, &[], b"").await;
        assert_eq!((reply.status, reply.code()), (404, "not_found"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pkcs11_call_and_the_outage_it_begins_are_counted() {
    let f = crate::faults::Faulty::start("metrics-fault", "");
    let dir = f.token.path("");
    let m = scrape(&f.socket, &dir).await;
    assert_eq!(m.value("signetd_hsm_outages_total", &[]), 0.0);
    f.plan("function=C_Sign rv=CKR_DEVICE_ERROR count=1\n");
    assert_eq!(f.mint().await.code(), "hsm_unavailable");
    f.recovers_within(20).await;
    let m = scrape(&f.socket, &dir).await;
    assert_eq!(m.kind("signetd_hsm_errors"), "counter");
    let errors = m.value(
        "signetd_hsm_errors_total",
        &[("function", "C_Sign"), ("rv", "CKR_DEVICE_ERROR")],
    );
    assert_eq!(errors, 1.0, "{:#?}", m.samples("signetd_hsm_errors"));
    assert_eq!(m.value("signetd_hsm_outages_total", &[]), 1.0);
    assert_eq!(m.value("signetd_hsm_recoveries_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_workers_busy_and_a_queue_show_while_signing_is_slow() {
    // Two sessions (the harness's), each C_Sign held two seconds, and twice as many
    // mints as sessions at once: both workers busy, the other mints queued behind them.
    let f = crate::faults::Faulty::start("metrics-busy", "timeout_ms = 30000\n");
    let dir = f.token.path("");
    let sessions = 2.0;
    f.plan("function=C_Sign delay_ms=2000\n");
    let mints: Vec<_> = (0..4)
        .map(|_| {
            let socket = f.socket.clone();
            tokio::spawn(async move {
                let body = json!({"issuer": "fx", "sub": "svc", "aud": "api", "ttl_seconds": 60});
                request_unix(&socket, Method::POST, "/v1/tokens", Some(&body)).await
            })
        })
        .collect();
    // Reading /metrics needs no worker, so it answers while they are all held.
    let mut seen = (0.0, 0.0);
    let held = eventually(20, async || {
        let m = scrape(&f.socket, &dir).await;
        seen = (
            m.value("signetd_hsm_busy_workers", &[]),
            m.value("signetd_hsm_queue_depth", &[]),
        );
        seen.0 == sessions && seen.1 >= 1.0
    })
    .await;
    assert!(
        held,
        "never all {sessions} workers busy with a queue: last (busy, queued) = {seen:?}"
    );
    for mint in mints {
        let reply = mint.await.unwrap();
        assert_eq!(reply.status, 200, "{:?}", reply.json);
    }
    // Done: idle again, nothing queued. (Eventually: the daemon's own reads of the
    // token, at its lifecycle ticks, take a worker now and then.)
    f.plan("");
    let idle = eventually(20, async || {
        let m = scrape(&f.socket, &dir).await;
        seen = (
            m.value("signetd_hsm_busy_workers", &[]),
            m.value("signetd_hsm_queue_depth", &[]),
        );
        seen == (0.0, 0.0)
    })
    .await;
    assert!(idle, "workers never idle again: (busy, queued) = {seen:?}");
}
