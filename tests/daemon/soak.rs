//! The crash soak (issue 11): `signetd serve` is killed with SIGKILL at random moments
//! while clients mint, rotate keys and revoke keys and tokens, and restarted each time.
//! Afterwards every token a client received verifies (PyJWT, against what the last run
//! publishes), has its mint record, no jti appears twice, every acknowledged admin call
//! has its record and took effect, and the whole audit log verifies.
//! `docs/reliability.md`, "Crash soak (kill -9)", says what is checked and why.
//!
//! `SIGNETD_SOAK_KILLS` sets the number of kills (default 3, the normal suite's short
//! run); `SIGNETD_SOAK_SEED` replays a run's random delays (every run prints its seed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signetd::Algorithm;
use signetd::client::Endpoint;

use crate::common::{
    Reply, ServedDaemon, TestToken, audit_records, decode_parts, issuer_toml, my_uid, repo_root,
    try_request,
};

const ISSUER: &str = "soak";
/// Minting clients, each one request at a time.
const MINTERS: usize = 4;
/// The longest lifetime there is: no token expires, and no retired key is archived out
/// of the JWKS, before the checks at the end of even a long soak.
const TTL: u64 = 3600;
/// The kill comes this long at most (uniformly at random) after the first token of a run.
const MAX_KILL_DELAY_MS: u64 = 4000;
/// Between admin calls.
const ADMIN_PAUSE: Duration = Duration::from_millis(200);

/// A token a client received (HTTP 200).
struct Received {
    token: String,
    kid: String,
    jti: String,
}

/// What the daemon told its clients, across all its runs.
#[derive(Default)]
struct Told {
    tokens: Vec<Received>,
    /// Kids of pending keys from acknowledged rotations.
    rotations: Vec<String>,
    /// Kids of acknowledged key revocations.
    key_revocations: Vec<String>,
    /// Jtis of acknowledged token revocations.
    token_revocations: Vec<String>,
    /// Answers other than 200, by request and code: the soak expects some (a rotation
    /// while one is pending; no active key just after a kill between retiring one key
    /// and activating the next) and reports them all.
    refusals: BTreeMap<String, usize>,
    /// Requests that got no answer: the daemon was down or died mid-request.
    unanswered: usize,
}

impl Told {
    fn refused(&mut self, what: &str, reply: &Reply) {
        *self
            .refusals
            .entry(format!("{what} {} {}", reply.status, reply.code()))
            .or_default() += 1;
    }
}

type Shared = Arc<Mutex<Told>>;

/// One request over the socket, `None` when it got no answer.
async fn call(socket: &Path, method: Method, path: &str, body: Option<&Value>) -> Option<Reply> {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    let body = body.map(|b| serde_json::to_vec(b).unwrap());
    let headers: &[(&str, &str)] = match body {
        Some(_) => &[("content-type", "application/json")],
        None => &[],
    };
    try_request(&endpoint, method, path, headers, &body.unwrap_or_default())
        .await
        .ok()
}

/// Mints one token after another until `stop`.
async fn minter(n: usize, socket: Arc<Path>, told: Shared, stop: Arc<AtomicBool>) {
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let body =
            json!({"issuer": ISSUER, "aud": "api", "sub": format!("m{n}-{i}"), "ttl_seconds": TTL});
        let Some(reply) = call(&socket, Method::POST, "/v1/tokens", Some(&body)).await else {
            told.lock().unwrap().unanswered += 1;
            // The daemon is down: try again soon, without spinning.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if reply.status != 200 {
            told.lock().unwrap().refused("mint", &reply);
            // No active key yet, after a kill between retiring one key and activating
            // the next: the next lifecycle tick completes that.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let mut told = told.lock().unwrap();
        let token = reply.json["token"].as_str().unwrap().to_string();
        assert_eq!(
            reply.json["token_sha256"],
            sha256_hex(&token).as_str(),
            "the mint response's hash is of another token"
        );
        told.tokens.push(Received {
            kid: reply.json["kid"].as_str().unwrap().to_string(),
            jti: reply.json["jti"].as_str().unwrap().to_string(),
            token,
        });
    }
}

/// Until `stop`, in turn: asks for a rotation (refused while a successor is pending),
/// revokes the newest received token, and every other turn revokes a retired key (never
/// the active one: minting goes on).
async fn admin(socket: Arc<Path>, told: Shared, stop: Arc<AtomicBool>) {
    let rotate = format!("/v1/issuers/{ISSUER}/rotate");
    for turn in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let reply = call(&socket, Method::POST, &rotate, Some(&json!({}))).await;
        answered(&told, "rotate", reply, |told, r| {
            told.rotations
                .push(r.json["kid"].as_str().unwrap().to_string())
        });

        let newest = told
            .lock()
            .unwrap()
            .tokens
            .last()
            .map(|t| (t.jti.clone(), decode_parts(&t.token).1["exp"].clone()));
        if let Some((jti, exp)) = newest {
            let body = json!({"jti": jti, "exp": exp});
            let reply = call(&socket, Method::POST, "/v1/revocations", Some(&body)).await;
            answered(&told, "revoke-token", reply, |told, r| {
                told.token_revocations
                    .push(r.json["jti"].as_str().unwrap().to_string())
            });
        }

        if turn % 2 == 1
            && let Some(keys) = call(&socket, Method::GET, "/v1/keys", None).await
        {
            let retired = keys.json["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|k| k["issuer"] == ISSUER && k["state"] == "retired")
                .map(|k| k["kid"].as_str().unwrap().to_string());
            if let Some(kid) = retired {
                let path = format!("/v1/keys/{kid}/revoke");
                let reply = call(&socket, Method::POST, &path, Some(&json!({}))).await;
                answered(&told, "revoke-key", reply, |told, _| {
                    told.key_revocations.push(kid.clone())
                });
            }
        }
        tokio::time::sleep(ADMIN_PAUSE).await;
    }
}

/// Files an admin call's answer: `ok` for a 200, else a refusal or no answer.
fn answered(told: &Shared, what: &str, reply: Option<Reply>, ok: impl FnOnce(&mut Told, &Reply)) {
    let mut told = told.lock().unwrap();
    match reply {
        Some(r) if r.status == 200 => ok(&mut told, &r),
        Some(r) => told.refused(what, &r),
        None => told.unanswered += 1,
    }
}

fn sha256_hex(text: &str) -> String {
    signetd::service::hex(&Sha256::digest(text.as_bytes()))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// Waits until a client has received a token beyond the first `seen`: the run just
/// started is serving traffic.
async fn traffic_after(told: &Shared, seen: usize, t: &TestToken) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while told.lock().unwrap().tokens.len() <= seen {
        assert!(
            Instant::now() < deadline,
            "no token minted within 30 s of a restart:\n{}",
            std::fs::read_to_string(t.path("serve.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Verifies `tokens` with PyJWT against the keys in `jwks` (a file): signature, `alg`,
/// `iss`, `aud`, `exp` and the registered claims signetd always sets. Returns its
/// summary: `verified`, `rejected`, `failures`.
fn pyjwt_verify_all(jwks: &Path, tokens: &[&str]) -> Value {
    const SCRIPT: &str = r#"
import json, sys, jwt
keys = {k.key_id: k for k in jwt.PyJWKSet.from_json(open(sys.argv[1]).read()).keys}
verified, failures = 0, []
for line in sys.stdin:
    token = line.strip()
    try:
        kid = jwt.get_unverified_header(token)["kid"]
        if kid not in keys:
            raise jwt.InvalidTokenError(f"kid {kid} is not in the JWKS")
        jwt.decode(token, keys[kid], algorithms=["ES256"], audience="api",
                   issuer=sys.argv[2], options={"require": ["exp", "iat", "iss", "aud", "jti"]})
        verified += 1
    except jwt.PyJWTError as e:
        failures.append(f"{type(e).__name__}: {e}")
print(json.dumps({"verified": verified, "rejected": len(failures), "failures": failures[:20]}))
"#;
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let mut child = std::process::Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(jwks)
        .arg(format!("https://{ISSUER}.example"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run Python (scripts/test.sh sets SIGNETD_TEST_PYTHON to its venv, with PyJWT)");
    let mut feed = child.stdin.take().unwrap();
    for token in tokens {
        writeln!(feed, "{token}").unwrap();
    }
    drop(feed);
    let out = child.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{python} printed no summary (does it have PyJWT? scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// On a failing run, a copy of the token's directory (token store, config, audit log,
/// the daemon's output in `serve.log`) under `target/soak-failed-PID/`, for a look at
/// what the assertion was about.
struct KeptOnFailure<'a>(&'a TestToken);

impl Drop for KeptOnFailure<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let kept = repo_root().join(format!("target/soak-failed-{}", std::process::id()));
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(self.0.dir.path())
            .arg(&kept)
            .status();
        eprintln!(
            "soak: the run's directory is kept in {} ({copied:?})",
            kept.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_mixed_load_loses_no_token_record_or_revocation() {
    let kills = env_number("SIGNETD_SOAK_KILLS").unwrap_or(3) as usize;
    let seed = env_number("SIGNETD_SOAK_SEED").unwrap_or_else(rand::random);
    println!("soak: seed {seed} (SIGNETD_SOAK_SEED replays the kill delays), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let t = TestToken::create("soak");
    // The fastest lifecycle there is (a rotated key signs 2 s after the rotation, at a
    // tick), so rotations complete between kills; this uid is the admin. Small segments
    // and frequent checkpoints, so kills also land in a segment's rollover and in a
    // checkpoint's signing and writing.
    let (config, socket) = t.write_config(&format!(
        "{}max_ttl_seconds = {TTL}\n[admin]\ncallers = [\"uid:{}\"]\n\
         [jwks]\nmax_age_seconds = 1\n[lifecycle]\nprepublish_seconds = 1\ntick_seconds = 1\n\
         [audit]\ndir = {:?}\nsegment_bytes = 262144\ncheckpoint_every = 100\n",
        issuer_toml(ISSUER, Algorithm::Es256),
        my_uid(),
        t.audit_dir().display().to_string()
    ));
    let _evidence = KeptOnFailure(&t);
    let first_kid = t.init_ca_and_key(&config, ISSUER);
    let public = t.export_public(&config);

    let serve = || tokio::task::block_in_place(|| t.serve(&config, &socket));
    let mut daemon: ServedDaemon = serve();
    let told: Shared = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let socket_path: Arc<Path> = Arc::from(socket.as_path());
    let mut clients: Vec<_> = (0..MINTERS)
        .map(|n| tokio::spawn(minter(n, socket_path.clone(), told.clone(), stop.clone())))
        .collect();
    clients.push(tokio::spawn(admin(
        socket_path.clone(),
        told.clone(),
        stop.clone(),
    )));

    for kill in 1..=kills {
        let seen = told.lock().unwrap().tokens.len();
        traffic_after(&told, seen, &t).await;
        let delay = rng.gen_range(0..=MAX_KILL_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        tokio::task::block_in_place(|| daemon.crash());
        let received = told.lock().unwrap().tokens.len();
        println!(
            "soak: kill {kill}, {delay} ms after this run's first token; {received} tokens so far"
        );
        daemon = serve();
    }
    // The last run serves traffic too, then the clients stop.
    let seen = told.lock().unwrap().tokens.len();
    traffic_after(&told, seen, &t).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client panicked");
    }

    // What a verifier sees after the last restart.
    let get = async |path: &str| {
        let reply = call(&socket, Method::GET, path, None)
            .await
            .unwrap_or_else(|| panic!("GET {path}: no answer"));
        assert_eq!(reply.status, 200, "GET {path}: {:?}", reply.json);
        reply.json
    };
    let jwks = get("/.well-known/jwks.json").await;
    let all_keys = get("/v1/keys").await;
    let revocations = get("/v1/revocations").await;
    assert!(
        tokio::task::block_in_place(|| daemon.terminate()).success(),
        "signetd serve did not stop cleanly"
    );
    let told = Arc::into_inner(told).unwrap().into_inner().unwrap();
    let log = std::fs::read_to_string(t.path("serve.log")).unwrap();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");

    let kids_of = |list: &Value| -> HashSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    let published = kids_of(&jwks["keys"]);
    let revoked_keys = kids_of(&revocations["keys"]);
    let revoked_jtis: HashSet<&str> = revocations["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["jti"].as_str().unwrap())
        .collect();

    // Every received token: no jti twice, its claims as the response said, and a key
    // that is published or listed as revoked.
    let mut jtis = HashSet::new();
    for received in &told.tokens {
        assert!(
            jtis.insert(received.jti.as_str()),
            "jti {} was received twice",
            received.jti
        );
        let (header, claims) = decode_parts(&received.token);
        assert_eq!(header["kid"], received.kid.as_str());
        assert_eq!(claims["jti"], received.jti.as_str());
        assert!(
            published.contains(&received.kid) || revoked_keys.contains(&received.kid),
            "{} signed a received token but is neither published nor revoked",
            received.kid
        );
    }
    // Revoked keys leave the JWKS; their tokens are checked against the key as
    // `/v1/keys` still serves it, so "verifies" means the signature is the key's, and
    // revocation is the separate list a verifier also consults.
    for kid in &told.key_revocations {
        assert!(
            revoked_keys.contains(kid),
            "revoked key {kid} is not listed"
        );
        assert!(!published.contains(kid), "revoked key {kid} is published");
    }
    let mut checked_keys: Vec<Value> = jwks["keys"].as_array().unwrap().clone();
    checked_keys.extend(
        all_keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| revoked_keys.contains(k["kid"].as_str().unwrap()))
            .map(|k| k["jwk"].clone()),
    );
    let jwks_file = t.path("soak-jwks.json");
    std::fs::write(&jwks_file, json!({"keys": checked_keys}).to_string()).unwrap();
    let tokens: Vec<&str> = told.tokens.iter().map(|r| r.token.as_str()).collect();
    let verdict = tokio::task::block_in_place(|| pyjwt_verify_all(&jwks_file, &tokens));
    assert_eq!(
        verdict["rejected"], 0,
        "PyJWT rejected received tokens: {verdict}"
    );
    assert_eq!(verdict["verified"], tokens.len(), "{verdict}");

    // The audit log: intact from genesis to the final checkpoint of the clean stop.
    let root = public.join("root.pem");
    let audit = t.audit_dir();
    let (root_arg, audit_arg) = (root.to_str().unwrap(), audit.to_str().unwrap());
    let strict = [
        "audit",
        "verify",
        "--require-signed",
        "--root",
        root_arg,
        audit_arg,
    ];
    let (ok, out, err) = t.signetd(&strict);
    assert!(ok && out.contains("intact"), "{out}{err}");
    let records = audit_records(&audit);
    let mut mints: HashMap<&str, &Value> = HashMap::new();
    let mut minted_jtis = HashSet::new();
    for record in records.iter().filter(|r| r["event"] == "mint") {
        assert_eq!(record["outcome"], "ok", "{record}");
        let jti = record["jti"].as_str().unwrap();
        assert!(minted_jtis.insert(jti), "jti {jti} has two mint records");
        mints.insert(record["token_sha256"].as_str().unwrap(), record);
    }
    for received in &told.tokens {
        let record = mints
            .get(sha256_hex(&received.token).as_str())
            .unwrap_or_else(|| panic!("received token {} has no mint record", received.jti));
        assert_eq!(record["jti"], received.jti.as_str());
        assert_eq!(record["kid"], received.kid.as_str());
        assert_eq!(record["issuer"], ISSUER);
    }
    let has = |event: &str, field: &str, value: &str| {
        records
            .iter()
            .any(|r| r["event"] == event && r["outcome"] == "ok" && r[field] == value)
    };
    for kid in &told.rotations {
        assert!(
            has("key_rotate", "kid", kid),
            "rotation to {kid} has no record"
        );
    }
    for kid in &told.key_revocations {
        assert!(
            has("key_revoke", "kid", kid),
            "revocation of {kid} has no record"
        );
    }
    for jti in &told.token_revocations {
        assert!(
            has("token_revoke", "jti", jti),
            "revocation of {jti} has no record"
        );
        assert!(
            revoked_jtis.contains(jti.as_str()),
            "revoked jti {jti} is not listed"
        );
    }
    // The operator's way to the same record: the CLI, by jti; one starting with '-'
    // when there is one (one jti in 64 does), which clap once took for an option.
    let jti = told
        .tokens
        .iter()
        .map(|r| r.jti.as_str())
        .find(|j| j.starts_with('-'))
        .unwrap_or(&told.tokens.last().unwrap().jti);
    let (ok, out, err) = t.signetd(&["audit", "find", "--root", root_arg, "--jti", jti, audit_arg]);
    assert!(
        ok && out.contains("\"event\":\"mint\"")
            && out.contains("covered by the signed checkpoint"),
        "{out}{err}"
    );

    // What kills in the middle of a key change left in the token: reported, never used
    // (`keys finish` and `keys destroy-incomplete` tidy up); the soak only shows them.
    let listed = t.signetd_ok(&[
        "keys",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let problems = listed["problems"].as_array().unwrap();
    for problem in problems {
        println!("soak: left in the token: {}", problem.as_str().unwrap());
    }
    let count = |event: &str| records.iter().filter(|r| r["event"] == event).count();
    assert_eq!(count("start"), kills + 1, "one start record per run");
    let unclean = records
        .iter()
        .filter(|r| {
            r["event"] == "recovered" && r["detail"].as_str().unwrap_or("").contains("unclean stop")
        })
        .count();
    // A kill between retiring the active key and activating its successor leaves none
    // active: the run after it starts so, and mints get `no_active_key` until its first
    // lifecycle tick completes the change.
    let prefix = format!("{ISSUER}-");
    let without_active = records
        .iter()
        .filter(|r| r["event"] == "start")
        .filter(|r| {
            !r["detail"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .any(|k| k.starts_with(&prefix) && k.ends_with("=active"))
        })
        .count();
    let signers: HashSet<&str> = told.tokens.iter().map(|r| r.kid.as_str()).collect();
    println!(
        "soak: {kills} kills, {} tokens received ({} keys signed them, {first_kid} first), \
         {} rotations, {} key revocations, {} token revocations; \
         {} audit records checked ({} mint, of which {} never answered; {} checkpoint; \
         {unclean} recovered after an unclean stop; {without_active} start(s) with no active key); \
         {} requests unanswered; other answers: {:?}; {} problem(s) left in the token; \
         `audit find --jti {jti}` found its record",
        told.tokens.len(),
        signers.len(),
        told.rotations.len(),
        told.key_revocations.len(),
        told.token_revocations.len(),
        records.len(),
        mints.len(),
        mints.len() - told.tokens.len(),
        count("checkpoint"),
        told.unanswered,
        told.refusals,
        problems.len(),
    );
}
