//! State at scale: token revocations live in the state store, so revoking 10,000 tokens
//! adds nothing to the PKCS#11 token, and the lifecycle tick does not grow with them.
//!
//! The tick's cost is printed, never asserted (no timing assertions in tests); the
//! figures in docs/scaling.md come from this test's output.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use signetd::Algorithm;

use crate::common::{TestToken, issuer_toml, my_uid, request_unix};

const REVOCATIONS: usize = 10_000;
const CLIENTS: usize = 32;

/// The objects `pkcs11-tool -O` lists, one header line each ("Private Key Object; EC",
/// "Data object 1", "Certificate Object; ..."): every kind, so nothing new hides.
fn token_objects(token: &TestToken) -> Vec<String> {
    let mut objects: Vec<String> = token
        .pkcs11_tool(&["-O"])
        .lines()
        .filter(|line| !line.starts_with(char::is_whitespace) && line.contains("bject"))
        .map(str::to_string)
        .collect();
    // pkcs11-tool lists in no stable order.
    objects.sort();
    objects
}

/// The durations, in µs, of the lifecycle ticks the daemon logged after line `from`
/// of `serve.log`.
fn tick_durations(log: &Path, from: usize) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .skip(from)
        .filter(|line| line.contains("lifecycle tick done"))
        .filter_map(|line| {
            let value = line.split("elapsed_us=").nth(1)?;
            value
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until `count` ticks are logged after line `from`; returns them.
async fn ticks(log: &Path, from: usize, count: usize) -> Vec<u64> {
    for _ in 0..600 {
        let seen = tick_durations(log, from);
        if seen.len() >= count {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "fewer than {count} lifecycle ticks logged within 60 s:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_revocations_leave_the_token_unchanged_and_the_tick_flat() {
    let token = TestToken::create("signetd-scale");
    let issuer = "scale";
    let (config, socket) = token.write_config(&format!(
        "{}[admin]\ncallers = [\"uid:{}\"]\n[lifecycle]\ntick_seconds = 1\n",
        issuer_toml(issuer, Algorithm::Es256),
        my_uid()
    ));
    token.init_ca_and_key(&config, issuer);
    let log = token.path("serve.log");
    let _daemon = token.serve_under(
        &["env", "SIGNETD_LOG=info,signetd::lifecycle=debug"],
        &config,
        &socket,
    );
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = ticks(&log, 0, 5).await;
    // Counted once the daemon runs: its first start makes the audit key.
    let objects = token_objects(&token);

    let exp = signetd::service::unix_now() + 3600;
    let socket = Arc::new(socket);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let socket = socket.clone();
            tokio::spawn(async move {
                for i in (client..REVOCATIONS).step_by(CLIENTS) {
                    let body = json!({"jti": format!("scale-{i:05}"), "exp": exp});
                    let reply =
                        request_unix(&socket, Method::POST, "/v1/revocations", Some(&body)).await;
                    assert_eq!(reply.status, 200, "revocation {i}: {:?}", reply.json);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mark = lines();
    let after = ticks(&log, mark, 5).await;

    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert_eq!(listed.status, 200);
    let jtis = listed.json["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no tokens list: {}", &listed.json.to_string()[..200]));
    assert_eq!(jtis.len(), REVOCATIONS);
    assert_eq!(
        token_objects(&token),
        objects,
        "revocations must not add PKCS#11 objects"
    );
    println!(
        "lifecycle tick, median of 5: {} µs with no revocations, {} µs with {REVOCATIONS} (all ticks: {before:?} then {after:?})",
        median(before.clone()),
        median(after.clone()),
    );
}
