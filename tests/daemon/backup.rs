//! docs/operations.md's backup and restore, run as written: its "Backing up, step by
//! step" and "Restoring, step by step" blocks, taken from the file, with the paths moved
//! into the test's directory and `systemctl stop|start` standing for the test's daemon.
//! The restored (older) state must not bring a revoked key or a revoked token back: the
//! daemon moves them forward from its audit log, says so, and the operator's next step
//! (a new key) works. Also a revocation made with the CLI while no daemon ran, and a
//! store put back under a running daemon.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hyper::Method;
use serde_json::{Value, json};
use signetd::Algorithm;

use crate::common::{
    Reply, ServedDaemon, TestToken, audit_records, eventually, issuer_toml, kids, lifecycle_toml,
    repo_root, request_unix, signetd_bin,
};

/// One step of a docs/operations.md command block, as the test runs it.
#[derive(Debug)]
enum Step {
    /// Commands for `bash -e -o pipefail`, paths moved.
    Shell(String),
    /// `systemctl stop signetd`.
    Stop,
    /// `systemctl start signetd`.
    Start,
}

/// The `sh` block under the heading `### HEADING` of docs/operations.md, for `token`'s
/// daemon with config `config`: the packaged paths moved into the token's directory,
/// `runuser -u signetd --` and `-o signetd -g signetd` made this process's user (the
/// daemon's here), and split at its `systemctl` lines.
fn procedure(heading: &str, token: &TestToken, config: &Path) -> Vec<Step> {
    let doc = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    let section = doc
        .split_once(&format!("\n### {heading}\n"))
        .unwrap_or_else(|| panic!("docs/operations.md has no \"### {heading}\""))
        .1;
    let block = section
        .split_once("\n```sh\n")
        .and_then(|(_, b)| b.split_once("\n```"))
        .unwrap_or_else(|| panic!("no sh block under \"{heading}\""))
        .0;
    let meta = std::fs::metadata(token.dir.path()).unwrap();
    let moved = |name: &str| token.path(name).display().to_string();
    let moves = [
        ("/etc/signetd/signetd.toml", config.display().to_string()),
        ("/var/lib/signetd/token/tokens", moved("token/tokens")),
        ("/var/lib/signetd/state", moved("state")),
        ("/var/backups/signetd", moved("backups")),
        ("runuser -u signetd -- ", String::new()),
        (
            "-o signetd -g signetd",
            format!("-o {} -g {}", meta.uid(), meta.gid()),
        ),
    ];
    let mut steps = Vec::new();
    let mut shell = String::new();
    for line in block.lines() {
        let line = moves
            .iter()
            .fold(line.to_string(), |l, (from, to)| l.replace(from, to));
        let step = match line.trim() {
            "systemctl stop signetd" => Step::Stop,
            "systemctl start signetd" => Step::Start,
            other => {
                for host in ["/etc/", "/var/", "runuser", "systemctl"] {
                    assert!(
                        !other.contains(host),
                        "a line of \"{heading}\" the test cannot move off the host: {other}"
                    );
                }
                shell.push_str(&line);
                shell.push('\n');
                continue;
            }
        };
        if !shell.is_empty() {
            steps.push(Step::Shell(std::mem::take(&mut shell)));
        }
        steps.push(step);
    }
    if !shell.is_empty() {
        steps.push(Step::Shell(shell));
    }
    steps
}

/// Runs `steps`: shell steps in the token's directory with this build's `signetd` first
/// on `PATH`, a stop by terminating `daemon`, a start by `start`.
fn run_procedure(
    token: &TestToken,
    steps: Vec<Step>,
    daemon: &mut Option<ServedDaemon>,
    mut start: impl FnMut() -> ServedDaemon,
) {
    let bin = Path::new(signetd_bin())
        .parent()
        .unwrap()
        .display()
        .to_string();
    let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
    for step in steps {
        match step {
            Step::Shell(script) => {
                let out = token
                    .command("bash", "-e -o pipefail -c")
                    .arg(&script)
                    .env("PATH", &path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{script}failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Step::Stop => {
                daemon.take().expect("a daemon to stop").terminate();
            }
            Step::Start => *daemon = Some(start()),
        }
    }
}

/// Each key's state as `GET /v1/keys` shows it.
async fn key_state(socket: &Path, kid: &str) -> Option<String> {
    let keys = request_unix(socket, Method::GET, "/v1/keys", None).await;
    keys.json["keys"]
        .as_array()?
        .iter()
        .find(|k| k["kid"] == kid)
        .map(|k| k["state"].as_str().unwrap().to_string())
}

async fn revocations(socket: &Path) -> Reply {
    request_unix(socket, Method::GET, "/v1/revocations", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_token_and_store_do_not_serve_a_revoked_key_or_token_again() {
    let token = TestToken::create("signetd-backup");
    let issuer = "bk";
    let (config, socket) = token.write_config(&format!(
        "{}{}",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml()
    ));
    let c = config.to_str().unwrap();
    let first = token.init_ca_and_key(&config, issuer);
    let mut daemon = Some(token.serve(&config, &socket));
    let mint = async || {
        request_unix(
            &socket,
            Method::POST,
            "/v1/tokens",
            Some(&json!({"issuer": issuer, "aud": "api"})),
        )
        .await
    };
    assert_eq!(mint().await.json["kid"], first.as_str());

    // Backup, as docs/operations.md's block says: the store first (online), then the
    // token (its files, with the daemon stopped).
    let backing_up = procedure("Backing up, step by step", &token, &config);
    run_procedure(&token, backing_up, &mut daemon, || {
        token.serve(&config, &socket)
    });
    let store_copy = token.path("backups/2026-12-01/signetd.db");
    assert!(store_copy.is_file() && token.path("backups/2026-12-01/tokens").is_dir());

    // After the backup: the key is revoked with the CLI (the daemon records what it
    // observes), a token is revoked by an admin, and the issuer gets a new key.
    token.signetd_ok(&["keys", "revoke", "--config", c, "--kid", &first]);
    assert!(
        eventually(10, async || kids(&revocations(&socket).await)
            .contains(&first))
        .await,
        "the daemon never published the revocation"
    );
    let exp = signetd::service::unix_now() + 600;
    let revoked = request_unix(
        &socket,
        Method::POST,
        "/v1/revocations",
        Some(&json!({"jti": "stolen-token", "exp": exp})),
    )
    .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);
    token.signetd_ok(&["keys", "generate", "--config", c, "--issuer", issuer]);
    assert!(
        eventually(10, async || mint().await.status == 200).await,
        "the new key never signed"
    );

    // Restore both from the backup, as docs/operations.md's block says: the daemon
    // stopped, the token's files replaced, the store's WAL files removed, the store put
    // back as signetd's (here: this user's) with mode 0600, the daemon started.
    let restoring = procedure("Restoring, step by step", &token, &config);
    // Not ready once started: the issuer has no key it may sign with (see below).
    run_procedure(&token, restoring, &mut daemon, || {
        // The restored store shows the key active, as it was when copied.
        let (_, listed, _) = token.signetd(&["keys", "list", "--config", c, "--format", "json"]);
        assert!(
            listed.contains("\"active\""),
            "the restored store should show the key active: {listed}"
        );
        token.serve_live(&config, &socket)
    });
    let store = std::fs::metadata(token.path("state/signetd.db")).unwrap();
    assert_eq!(
        (store.uid(), store.mode() & 0o777),
        (crate::common::my_uid(), 0o600),
        "the restored store is the daemon user's, mode 0600"
    );

    assert_eq!(
        key_state(&socket, &first).await.as_deref(),
        Some("revoked"),
        "a restored store brought a revoked key back"
    );
    let listed = revocations(&socket).await;
    assert!(kids(&listed).contains(&first), "{:?}", listed.json);
    assert!(
        listed.json.to_string().contains("stolen-token"),
        "the token revocation was lost: {:?}",
        listed.json
    );
    let jwks = request_unix(&socket, Method::GET, "/.well-known/jwks.json", None).await;
    assert!(!kids(&jwks).contains(&first), "{:?}", jwks.json);
    // The new key's pair and record are both older than the backup's: the issuer has no
    // key now, and says so, rather than sign with the revoked one.
    let refused = mint().await;
    assert_eq!(refused.code(), "no_active_key", "{:?}", refused.json);
    let verify = request_unix(
        &socket,
        Method::POST,
        "/v1/verify",
        Some(&json!({"token": "x.y.z"})),
    )
    .await;
    assert_eq!(
        verify.status, 400,
        "the daemon keeps serving: {:?}",
        verify.json
    );

    // Said loudly: a state_rollback record for each, and an error line.
    let records = audit_records(&token.audit_dir());
    let rolled: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "state_rollback")
        .collect();
    assert!(
        rolled.iter().any(|r| r["kid"] == first.as_str()),
        "{rolled:?}"
    );
    assert!(
        rolled.iter().any(|r| r["jti"] == "stolen-token"),
        "{rolled:?}"
    );
    let log = std::fs::read_to_string(token.path("serve.log")).unwrap();
    assert!(log.contains("state rollback"), "{log}");

    // The operator's next step: a new key, which the running daemon takes up.
    token.signetd_ok(&["keys", "generate", "--config", c, "--issuer", issuer]);
    assert!(
        eventually(10, async || {
            let minted = mint().await;
            minted.status == 200 && minted.json["kid"] != first.as_str()
        })
        .await,
        "no key signed after the restore"
    );
    let out = store_copy.to_str().unwrap();
    let (ok, out, err) = token.signetd(&["store", "backup", "--config", c, "--out", out]);
    assert!(
        !ok && err.contains("exists"),
        "a backup never overwrites: {out}{err}"
    );
}

/// Keys generated or changed with the CLI while no daemon runs are on the audit record
/// after the next start: the daemon compares the store with what its log last recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_changes_made_while_the_daemon_was_stopped_are_recorded_at_the_next_start() {
    let token = TestToken::create("signetd-stopped");
    let issuer = "stopped";
    let (config, socket) = token.write_config(&issuer_toml(issuer, Algorithm::Es256));
    let c = config.to_str().unwrap();
    let first = token.init_ca_and_key(&config, issuer);
    token.serve(&config, &socket).terminate();

    let out = token.signetd_ok(&["keys", "rotate", "--config", c, "--issuer", issuer]);
    let next = out
        .split_whitespace()
        .find(|w| w.starts_with(&format!("{issuer}-")) && *w != first)
        .unwrap_or_else(|| panic!("no kid in {out:?}"))
        .to_string();
    token.signetd_ok(&["keys", "retire", "--config", c, "--kid", &first]);

    // No active key now: serving, not ready.
    let _daemon = token.serve_live(&config, &socket);
    let recorded = async |event: &str, kid: &str, words: &str| {
        audit_records(&token.audit_dir()).iter().any(|r| {
            r["event"] == event
                && r["kid"] == kid
                && r["detail"].as_str().unwrap_or_default().contains(words)
        })
    };
    assert!(
        eventually(10, async || recorded(
            "key_rotate",
            &next,
            "generated outside the daemon by cli uid"
        )
        .await)
        .await,
        "the key rotated while the daemon was stopped has no generation record"
    );
    assert!(
        eventually(10, async || recorded(
            "key_observed",
            &first,
            "active -> retired"
        )
        .await)
        .await,
        "the retirement made while the daemon was stopped was not recorded"
    );
}

/// POST /v1/verify of `token` (audience `api`).
async fn verify(socket: &Path, token: &str) -> Reply {
    let body = json!({"token": token, "audience": "api"});
    request_unix(socket, Method::POST, "/v1/verify", Some(&body)).await
}

/// POST /v1/verify of `token` with `single_use`.
async fn use_once(socket: &Path, token: &str) -> Reply {
    let body = json!({"token": token, "audience": "api", "single_use": true});
    request_unix(socket, Method::POST, "/v1/verify", Some(&body)).await
}

/// A token revoked with the CLI while no daemon ran is recorded at the next start, so
/// a store restored later from an older backup, which lacks it, gets it put back: the
/// token stays refused. Without that record nothing but the store knew of it. Likewise
/// a single-use token consumed after the backup stays consumed: its `verify` record
/// puts the use back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_the_daemon_was_stopped_survives_a_restore_of_an_older_store() {
    let token = TestToken::create("signetd-stopped-revoke");
    let issuer = "sr";
    let (config, socket) = token.write_config(&format!(
        "{}{}",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml()
    ));
    let c = config.to_str().unwrap();
    token.init_ca_and_key(&config, issuer);
    let mut daemon = Some(token.serve(&config, &socket));
    let body = json!({"issuer": issuer, "aud": "api"});
    let minted = request_unix(&socket, Method::POST, "/v1/tokens", Some(&body)).await;
    let jwt = minted.json["token"].as_str().unwrap().to_string();
    let jti = crate::common::decode_parts(&jwt).1["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let single = request_unix(&socket, Method::POST, "/v1/tokens", Some(&body)).await;
    let single = single.json["token"].as_str().unwrap().to_string();
    let single_jti = crate::common::decode_parts(&single).1["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let backing_up = procedure("Backing up, step by step", &token, &config);
    run_procedure(&token, backing_up, &mut daemon, || {
        token.serve(&config, &socket)
    });

    // Used once after the backup.
    let used = use_once(&socket, &single).await;
    assert_eq!(used.status, 200, "{:?}", used.json);
    assert_eq!(use_once(&socket, &single).await.code(), "replayed");

    // Revoked with the CLI while no daemon runs.
    daemon.take().unwrap().terminate();
    token.signetd_ok(&["token", "revoke", "--config", c, "--token", &jwt]);
    daemon = Some(token.serve(&config, &socket));
    let recorded = audit_records(&token.audit_dir())
        .into_iter()
        .find(|r| r["event"] == "token_revoke" && r["jti"] == jti.as_str());
    let recorded = recorded.expect("the revocation made while stopped is recorded at start");
    assert_eq!(recorded["caller"]["name"], "store", "{recorded}");
    assert_eq!(verify(&socket, &jwt).await.code(), "token_revoked");

    // The store (and token) restored from the backup, older than the revocation.
    let restoring = procedure("Restoring, step by step", &token, &config);
    run_procedure(&token, restoring, &mut daemon, || {
        token.serve(&config, &socket)
    });
    let refused = verify(&socket, &jwt).await;
    assert_eq!(refused.code(), "token_revoked", "{:?}", refused.json);
    let replayed = use_once(&socket, &single).await;
    assert_eq!(
        replayed.code(),
        "replayed",
        "a restored store accepted a used single-use token again: {:?}",
        replayed.json
    );
    let records = audit_records(&token.audit_dir());
    for (put_back, what) in [(&jti, "revocation"), (&single_jti, "single use")] {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "state_rollback" && r["jti"] == put_back.as_str()),
            "no state_rollback record for the {what} put back"
        );
    }
    let metrics = request_unix(&socket, Method::GET, "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics.raw);
    assert!(
        metrics.contains("signetd_state_rollbacks_total{kind=\"single_use\"} 1"),
        "{metrics}"
    );
}

/// `signetd_state_rollbacks_total{kind="key"}` as `/metrics` shows it (0 before any).
async fn key_rollbacks(socket: &Path) -> u64 {
    let reply = request_unix(socket, Method::GET, "/metrics", None).await;
    assert_eq!(reply.status, 200);
    String::from_utf8_lossy(&reply.raw)
        .lines()
        .find_map(|l| l.strip_prefix("signetd_state_rollbacks_total{kind=\"key\"} "))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Asserts that every state the daemon served for a key was `revoked`.
fn only_revoked(served: &[Option<String>]) {
    assert!(
        served.iter().all(|s| s.as_deref() == Some("revoked")),
        "served as {served:?}"
    );
}

/// A daemon serving one ES256 key that the CLI has revoked, once the daemon has noted
/// the revocation (its `key_observed` record is written once the witness is raised).
struct Revoked {
    token: TestToken,
    config: PathBuf,
    socket: PathBuf,
    kid: String,
    daemon: ServedDaemon,
}

impl Revoked {
    async fn new(name: &str) -> Revoked {
        let token = TestToken::create(name);
        let (config, socket) = token.write_config(&format!(
            "{}{}",
            issuer_toml("rv", Algorithm::Es256),
            lifecycle_toml()
        ));
        let kid = token.init_ca_and_key(&config, "rv");
        let daemon = token.serve(&config, &socket);
        let c = config.to_str().unwrap();
        token.signetd_ok(&["keys", "revoke", "--config", c, "--kid", &kid]);
        let observed = eventually(15, async || {
            audit_records(&token.audit_dir()).iter().any(|r| {
                r["event"] == "key_observed"
                    && r["kid"] == kid.as_str()
                    && r["detail"].as_str().unwrap_or_default().contains("revoked")
            })
        })
        .await;
        assert!(observed, "the daemon never recorded the revocation");
        Revoked {
            token,
            config,
            socket,
            kid,
            daemon,
        }
    }

    /// A connection of the test's own to the daemon's SQLite store.
    async fn store(&self) -> sqlx::SqliteConnection {
        use sqlx::Connection;
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.token.path("state/signetd.db"))
            .busy_timeout(std::time::Duration::from_secs(10));
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap()
    }

    /// Sets the key `active` again in the store, as a restore would.
    async fn put_back(&self, conn: &mut sqlx::SqliteConnection) {
        use sqlx::Executor;
        let updated = conn
            .execute(sqlx::query("UPDATE keys SET state = 'active' WHERE kid = ?").bind(&self.kid))
            .await
            .unwrap();
        assert_eq!(updated.rows_affected(), 1);
    }

    /// The key's state as the daemon serves it.
    async fn served(&self) -> Option<String> {
        key_state(&self.socket, &self.kid).await
    }

    /// Whether `signetd keys list` shows the key revoked in the store.
    fn stored_revoked(&self) -> bool {
        let c = self.config.to_str().unwrap();
        let listed = self
            .token
            .signetd_ok(&["keys", "list", "--config", c, "--format", "json"]);
        let listed: Value = serde_json::from_str(&listed).unwrap();
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == self.kid.as_str() && k["state"] == "revoked")
    }

    /// Whether the audit log holds a `state_rollback` record of the key.
    fn rollback_recorded(&self) -> bool {
        audit_records(&self.token.audit_dir())
            .iter()
            .any(|r| r["event"] == "state_rollback" && r["kid"] == self.kid.as_str())
    }

    /// Whether the daemon's log holds `text`.
    fn logged(&self, text: &str) -> bool {
        std::fs::read_to_string(self.token.path("serve.log"))
            .unwrap_or_default()
            .contains(text)
    }

    /// The trigger `name`, which fires `when` (`BEFORE` or `AFTER`) the key's row moves
    /// to `revoked` and runs `body` (SQLite takes no parameters in a trigger, so the
    /// kid, the daemon's own hex and dashes, is written in).
    async fn trigger(&self, conn: &mut sqlx::SqliteConnection, name: &str, when: &str, body: &str) {
        use sqlx::Executor;
        assert!(
            self.kid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        );
        let kid = &self.kid;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER {name} {when} UPDATE OF state ON keys \
             WHEN NEW.kid = '{kid}' AND NEW.state = 'revoked' BEGIN {body}; END"
        )))
        .await
        .unwrap();
    }
}

/// The re-read half of rollback detection (docs/operations.md, "Rollback"): a store
/// that goes back under a running daemon (here a revoked key set `active` again with
/// SQL) is moved forward at the next reload; the key is never served as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_put_back_under_a_running_daemon_is_moved_forward_at_the_next_reload() {
    use sqlx::Connection;
    let key = Revoked::new("signetd-live-rollback").await;
    let before = key_rollbacks(&key.socket).await;
    let mut conn = key.store().await;
    key.put_back(&mut conn).await;
    conn.close().await.unwrap();

    let mut served = Vec::new();
    let caught = eventually(15, async || {
        served.push(key.served().await);
        key.rollback_recorded() && key_rollbacks(&key.socket).await > before
    })
    .await;
    assert!(
        caught,
        "no state_rollback record or metric for the key put back"
    );
    served.push(key.served().await);
    only_revoked(&served);
    assert!(key.stored_revoked(), "not moved forward in the store");
}

/// A store put back between a reload's check and its read of the store (here, each
/// time the daemon moves the key forward, a trigger sets it back in the same
/// transaction, so every read finds it behind): the reading is never served. The
/// reload moves forward and reads again, three times in all, then fails and keeps the
/// last good view; once the store keeps the move, the next reload is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_put_back_between_the_check_and_the_read_is_never_served() {
    use sqlx::{Connection, Executor};
    let key = Revoked::new("signetd-reread").await;
    let mut conn = key.store().await;
    key.trigger(
        &mut conn,
        "put_back_again",
        "AFTER",
        "UPDATE keys SET state = 'active' WHERE kid = NEW.kid",
    )
    .await;
    key.put_back(&mut conn).await;

    let mut served = Vec::new();
    let gave_up = eventually(15, async || {
        served.push(key.served().await);
        key.logged("went backwards while it was read")
            && key.logged("keys read behind their recorded state in the state store 3 times")
    })
    .await;
    only_revoked(&served);
    assert!(gave_up, "no reload read the store behind and gave up");
    assert!(
        !key.stored_revoked(),
        "the trigger did not put the key back"
    );

    conn.execute("DROP TRIGGER put_back_again").await.unwrap();
    conn.close().await.unwrap();
    let forward = eventually(15, async || {
        served.push(key.served().await);
        key.stored_revoked()
    })
    .await;
    assert!(forward, "never moved forward once the store kept the move");
    served.push(key.served().await);
    only_revoked(&served);
}

/// A store that refuses the move forward (here a trigger aborts it) fails the reload,
/// which keeps the last good view: the key stays revoked where it is served, the error
/// names the refusal, and once the store takes the move the next reload makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_the_move_forward_keeps_the_last_good_view() {
    use sqlx::{Connection, Executor};
    let mut key = Revoked::new("signetd-refused-forward").await;
    let mut conn = key.store().await;
    key.trigger(
        &mut conn,
        "refuse_forward",
        "BEFORE",
        "SELECT RAISE(ABORT, 'refused by the test')",
    )
    .await;
    key.put_back(&mut conn).await;

    let mut served = Vec::new();
    let refused = eventually(15, async || {
        served.push(key.served().await);
        key.logged("moving them forward failed, and none was moved")
            && key.logged("refused by the test")
    })
    .await;
    assert!(refused, "no reload found the store refusing the move");
    assert!(!key.stored_revoked(), "the store moved");

    // A start that finds the store refusing does not start, and says why.
    key.daemon.terminate();
    let c = key.config.to_str().unwrap();
    let start = key
        .token
        .command("timeout", "")
        .args(["60", signetd_bin(), "serve", "--config", c])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert_eq!(start.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state rollback") && stderr.contains("refused by the test"),
        "{stderr}"
    );

    conn.execute("DROP TRIGGER refuse_forward").await.unwrap();
    conn.close().await.unwrap();
    // Not ready: its issuer's only key is revoked.
    key.daemon = key.token.serve_live(&key.config, &key.socket);
    let forward = eventually(15, async || {
        served.push(key.served().await);
        key.stored_revoked()
    })
    .await;
    assert!(forward, "never moved forward once the store took it");
    served.push(key.served().await);
    only_revoked(&served);
    assert!(
        key.rollback_recorded(),
        "no state_rollback record once moved forward"
    );
}

/// A revocation and a single use put back at start that the store loses again (here a
/// trigger deletes both as soon as the single use, put back after the revocation, is
/// inserted) are still refused: the served view holds every revocation the audit log
/// records, not only those the store shows, and the uses it records are refused from
/// memory until they expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_lost_again_after_they_were_put_back_at_start_are_still_refused() {
    use sqlx::{Connection, Executor};
    let token = TestToken::create("signetd-lost-again");
    let issuer = "la";
    let (config, socket) = token.write_config(&format!(
        "{}{}",
        issuer_toml(issuer, Algorithm::Es256),
        lifecycle_toml()
    ));
    token.init_ca_and_key(&config, issuer);
    let mut daemon = token.serve(&config, &socket);
    let mint = async || {
        let body = json!({"issuer": issuer, "aud": "api"});
        let minted = request_unix(&socket, Method::POST, "/v1/tokens", Some(&body)).await;
        let jwt = minted.json["token"].as_str().unwrap().to_string();
        let claims = crate::common::decode_parts(&jwt).1;
        // Written into the trigger below (triggers take no parameters): base64url.
        let jti = claims["jti"].as_str().unwrap().to_string();
        assert!(
            jti.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        (jwt, jti, claims["exp"].clone())
    };
    let (revoked_jwt, revoked_jti, exp) = mint().await;
    let (used_jwt, used_jti, _) = mint().await;
    let body = json!({"jti": revoked_jti, "exp": exp});
    let revoked = request_unix(&socket, Method::POST, "/v1/revocations", Some(&body)).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.json);
    assert_eq!(verify(&socket, &revoked_jwt).await.code(), "token_revoked");
    assert_eq!(use_once(&socket, &used_jwt).await.status, 200);
    daemon.terminate();

    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(token.path("state/signetd.db"));
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    // Both lost, as a restore from an older backup would lose them.
    for (table, jti) in [
        ("token_revocations", &revoked_jti),
        ("used_jtis", &used_jti),
    ] {
        let lost = format!("DELETE FROM {table} WHERE jti = ?");
        let lost = conn
            .execute(sqlx::query(sqlx::AssertSqlSafe(lost)).bind(jti))
            .await
            .unwrap();
        assert_eq!(lost.rows_affected(), 1, "{table}");
    }
    // Revocations are put back before single uses, each in a transaction of its own.
    conn.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER lose_again AFTER INSERT ON used_jtis WHEN NEW.jti = '{used_jti}' \
         BEGIN DELETE FROM token_revocations WHERE jti = '{revoked_jti}'; \
         DELETE FROM used_jtis WHERE jti = '{used_jti}'; END"
    )))
    .await
    .unwrap();
    conn.close().await.unwrap();

    let _daemon = token.serve(&config, &socket);
    let records = audit_records(&token.audit_dir());
    let put_back = records
        .iter()
        .any(|r| r["event"] == "state_rollback" && r["jti"] == revoked_jti.as_str());
    assert!(put_back, "the revocation was never put back at start");
    let refused = verify(&socket, &revoked_jwt).await;
    assert_eq!(refused.code(), "token_revoked", "{:?}", refused.json);
    let listed = request_unix(&socket, Method::GET, "/v1/revocations", None).await;
    assert!(
        listed.json["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["jti"] == revoked_jti.as_str()),
        "not published: {:?}",
        listed.json
    );
    assert_eq!(use_once(&socket, &used_jwt).await.code(), "replayed");
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    for (table, jti) in [
        ("token_revocations", &revoked_jti),
        ("used_jtis", &used_jti),
    ] {
        let count = format!("SELECT count(*) FROM {table} WHERE jti = ?");
        let in_store: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(jti)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            in_store, 0,
            "the trigger did not take {table}'s row out again"
        );
    }
    conn.close().await.unwrap();
}
