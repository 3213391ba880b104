//! The test harness, shared by every integration test and the benchmark
//! (`benches/throughput.rs` includes this file): one way to set up a token
//! (`softhsm/dev-token.sh`, itself under test), one daemon served in-process, one
//! `signetd serve` subprocess, and one HTTP client, the CLI's own (`signetd::client`).
//!
//! The token is SoftHSM2's, or kryoptic's when `SIGNETD_TEST_PKCS11=kryoptic` (with the
//! module in `SIGNETD_KRYOPTIC_MODULE`; `scripts/test.sh` runs the suite on both). Tests
//! never ask which: whatever the two do differently is signetd's to handle
//! (docs/hsm-compatibility.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use serde_json::Value;
use signetd::client::{self, Endpoint};
use signetd::hsm::Hsm;
use signetd::store::SqlStore;
use signetd::{Algorithm, Config, Service, api};
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A throwaway token: created by `softhsm/dev-token.sh` under `dir/token`, with room
/// beside it for a config, a socket, an audit log and whatever a test writes.
pub struct TestToken {
    /// Where the token lives; removed on drop.
    pub dir: TempDir,
    /// What `dev-token.sh --format env` printed.
    pub env: HashMap<String, String>,
}

impl TestToken {
    /// A new token under a temporary directory, made by `softhsm/dev-token.sh`.
    ///
    /// Tests that run other processes against a token use one of these of their own:
    /// SoftHSM2's file store does not hold up to several processes writing one token
    /// while this process's parallel tests write it too.
    pub fn create(label: &str) -> TestToken {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("softhsm/dev-token.sh"))
            .arg(dir.path().join("token"))
            .arg(label)
            .args(["--format", "env", "--signetd", signetd_bin()])
            .env_remove("SIGNETD_PKCS11_MODULE");
        if let Some(module) = kryoptic_module() {
            command.arg("--kryoptic").arg(module);
        }
        let out = command.output().expect("run softhsm/dev-token.sh");
        assert!(
            out.status.success(),
            "dev-token.sh failed (is softhsm2 installed? scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        TestToken { dir, env }
    }

    /// A path in the token's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment variable that points the PKCS#11 module at this token's store
    /// (`SOFTHSM2_CONF` or `KRYOPTIC_CONF`), and its value.
    pub fn module_env(&self) -> (&'static str, &str) {
        ["SOFTHSM2_CONF", "KRYOPTIC_CONF"]
            .into_iter()
            .find_map(|name| Some((name, self.env.get(name)?.as_str())))
            .expect("dev-token.sh printed neither SOFTHSM2_CONF nor KRYOPTIC_CONF")
    }

    /// `program args...` (split on whitespace) run in the token's directory with its
    /// module config, and none of the defaults signetd and its scripts read from the
    /// environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>, args: &str) -> Command {
        let mut command = Command::new(program);
        let (name, value) = self.module_env();
        command
            .args(args.split_whitespace())
            .env(name, value)
            .env_remove("SIGNETD_CONFIG")
            .env_remove("SIGNETD_SOCKET")
            .env_remove("SIGNETD_TRANSCRIPT_DIR")
            .current_dir(self.dir.path());
        command
    }

    /// Runs the signetd binary against this token; returns success, stdout, stderr.
    pub fn signetd(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.signetd_output(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs `signetd` with `args` like [`TestToken::signetd`] and returns its standard
    /// output; panics, with the arguments and both outputs, unless it succeeded.
    pub fn signetd_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.signetd(args);
        assert!(ok, "signetd {args:?} failed: {out}{err}");
        out
    }

    /// Runs `helper`, an ignored test of this binary (`module::name`), in a process of
    /// its own with `env` set, and returns its standard output; panics unless it ran
    /// and passed. A PKCS#11 module serves one token configuration per process, and this
    /// process's is the shared test token: what must use this token's through the
    /// library runs there.
    pub fn run_helper_test(&self, helper: &str, env: (&str, &Path)) -> String {
        let out = self
            .command(std::env::current_exe().unwrap(), "")
            .args([helper, "--exact", "--ignored", "--nocapture"])
            .env(env.0, env.1)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && said.contains("1 passed"),
            "{helper}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        said
    }

    /// Runs the signetd binary against this token.
    pub fn signetd_output(&self, args: &[&str]) -> Output {
        self.command(signetd_bin(), "").args(args).output().unwrap()
    }

    /// What OpenSC's `pkcs11-tool -L` (not our code) says of this token: `token NAME`
    /// line values by NAME, e.g. `manufacturer`, `model`, `label`.
    pub fn token_info(&self, name: &str) -> String {
        let out = self
            .command("pkcs11-tool", "-L --module")
            .arg(self.var("SIGNETD_PKCS11_MODULE"))
            .output()
            .expect("run pkcs11-tool (package opensc; scripts/test.sh installs it)");
        let listing = String::from_utf8_lossy(&out.stdout).into_owned();
        let wanted = format!("token {name}");
        listing
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .find(|(k, _)| k.trim() == wanted)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("pkcs11-tool -L printed no {wanted:?}:\n{listing}"))
    }

    /// Runs OpenSC's `pkcs11-tool`, logged in to this token, with `args`; panics unless
    /// it succeeds, and returns its standard output.
    pub fn pkcs11_tool(&self, args: &[&str]) -> String {
        let out = self
            .command("pkcs11-tool", "")
            .args(["--module", self.var("SIGNETD_PKCS11_MODULE")])
            .args(["--token-label", self.var("SIGNETD_TOKEN_LABEL")])
            .args(["--login", "--pin", &self.pin()])
            .args(args)
            .output()
            .expect("run pkcs11-tool (package opensc; scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Writes a config for this token: its `[pkcs11]` table, a socket in its directory,
    /// HTTP off, an audit log in `audit/` (unless `rest` has an `[audit]` table), and
    /// `rest`. Returns the config path and the socket path.
    pub fn write_config(&self, rest: &str) -> (PathBuf, PathBuf) {
        let config = self.path("signetd.toml");
        let socket = self.path("signetd.sock");
        let listen = format!(
            "[listen]\nsocket = {:?}\nhttp = \"off\"\n",
            socket.display().to_string()
        );
        let rest = with_audit_dir(rest, &self.audit_dir());
        std::fs::write(&config, format!("{}\n{listen}{rest}", self.pkcs11_toml())).unwrap();
        (config, socket)
    }

    /// With the real CLI: a self-signed attestation CA, then the first key of `issuer`.
    /// Returns the key's kid.
    pub fn init_ca_and_key(&self, config: &Path, issuer: &str) -> String {
        let c = config.to_str().unwrap();
        let out = self.signetd_output(&["attest", "init-ca", "--self-signed", "--config", c]);
        // The exit status says whether it died by a signal (stderr is empty then).
        assert!(
            out.status.success(),
            "attest init-ca: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = self.signetd_ok(&["keys", "generate", "--issuer", issuer, "--config", c]);
        // "generated and attested ES256 key KID for issuer ..."
        let kid = out.split_whitespace().nth(5).unwrap().to_string();
        assert!(kid.starts_with(&format!("{issuer}-")), "{out}");
        kid
    }

    /// With the real CLI: `signetd attest export` into `public/` in the token's
    /// directory (the root, the chain and every key's certificate); returns that path.
    pub fn export_public(&self, config: &Path) -> PathBuf {
        let public = self.path("public");
        self.signetd_ok(&[
            "attest",
            "export",
            "--config",
            config.to_str().unwrap(),
            "--out",
            public.to_str().unwrap(),
        ]);
        public
    }

    /// The audit directory [`TestToken::write_config`] names.
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    /// Starts `signetd serve` on this token and waits until it is ready.
    pub fn serve(&self, config: &Path, socket: &Path) -> ServedDaemon {
        self.serve_under(&[], config, socket)
    }

    /// [`TestToken::serve`] run by a wrapper such as `prlimit --fsize=N`. The daemon's
    /// output goes to `serve.log` in the token's directory.
    pub fn serve_under(&self, wrapper: &[&str], config: &Path, socket: &Path) -> ServedDaemon {
        self.serve_under_within(wrapper, config, socket, Duration::from_secs(20))
    }

    /// [`TestToken::serve_under`], waiting up to `wait` for it to be ready: for wrappers
    /// that slow the daemon down, such as valgrind.
    pub fn serve_under_within(
        &self,
        wrapper: &[&str],
        config: &Path,
        socket: &Path,
        wait: Duration,
    ) -> ServedDaemon {
        let socket_arg = socket.display().to_string();
        self.serve_until(wrapper, config, "ready", wait, &mut || {
            self.signetd(&["status", "--socket", &socket_arg]).0
        })
    }

    /// Starts `signetd serve` and waits until it answers `/healthz` (it serves), ready
    /// to sign or not: for daemons expected to start with problems.
    pub fn serve_live(&self, config: &Path, socket: &Path) -> ServedDaemon {
        // A blocking request of its own: callers may be inside a runtime already.
        let healthy = || -> std::io::Result<bool> {
            use std::io::{Read, Write};
            let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
            stream.write_all(
                b"GET /healthz HTTP/1.1\r\nHost: signetd\r\nConnection: close\r\n\r\n",
            )?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply)?;
            Ok(reply.starts_with("HTTP/1.1 200"))
        };
        self.serve_until(&[], config, "serving", Duration::from_secs(20), &mut || {
            healthy().unwrap_or(false)
        })
    }

    fn serve_until(
        &self,
        wrapper: &[&str],
        config: &Path,
        what: &str,
        wait: Duration,
        up: &mut dyn FnMut() -> bool,
    ) -> ServedDaemon {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = self.command(program, "");
                c.args(args).arg(signetd_bin());
                c
            }
            None => self.command(signetd_bin(), ""),
        };
        let log_path = self.path("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = command
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut daemon = ServedDaemon(child);
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = daemon.0.try_wait().unwrap() {
                panic!("signetd serve exited ({status}):\n{}", log());
            }
            if up() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "signetd serve was not {what} within {wait:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("dev-token.sh did not print {name}"))
    }

    pub fn pin(&self) -> String {
        std::fs::read_to_string(self.var("SIGNETD_PIN_FILE"))
            .unwrap()
            .trim_end()
            .to_string()
    }

    /// The `[pkcs11]` table for this token.
    pub fn pkcs11_toml(&self) -> String {
        self.pkcs11_toml_with(2)
    }

    /// The `[pkcs11]` table for this token, with `sessions` worker sessions.
    pub fn pkcs11_toml_with(&self, sessions: usize) -> String {
        format!(
            "[pkcs11]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\nsessions = {sessions}\n",
            self.var("SIGNETD_PKCS11_MODULE"),
            self.var("SIGNETD_TOKEN_LABEL"),
            self.var("SIGNETD_PIN_FILE"),
        )
    }
}

/// `rest` with an `[audit]` table naming `dir`, unless it already has one.
pub fn with_audit_dir(rest: &str, dir: &Path) -> String {
    if rest.contains("[audit]") {
        rest.to_string()
    } else {
        format!("{rest}\n[audit]\ndir = {:?}\n", dir.display().to_string())
    }
}

/// The kryoptic module to make tokens with, when `SIGNETD_TEST_PKCS11=kryoptic`; `None`
/// for SoftHSM2 (the default).
pub fn kryoptic_module() -> Option<PathBuf> {
    match std::env::var("SIGNETD_TEST_PKCS11").as_deref() {
        Ok("kryoptic") => Some(
            std::env::var_os("SIGNETD_KRYOPTIC_MODULE")
                .expect("SIGNETD_TEST_PKCS11=kryoptic needs SIGNETD_KRYOPTIC_MODULE (scripts/test.sh sets both)")
                .into(),
        ),
        Ok("softhsm2") | Ok("") | Err(_) => None,
        Ok(other) => panic!("SIGNETD_TEST_PKCS11={other:?}: expected softhsm2 or kryoptic"),
    }
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

static TOKEN: OnceLock<TestToken> = OnceLock::new();
static HSM: OnceLock<Arc<Hsm>> = OnceLock::new();

pub fn token() -> &'static TestToken {
    TOKEN.get_or_init(|| {
        let token = TestToken::create("signetd-test");
        let (name, value) = token.module_env();
        // SAFETY: `set_var` is unsound only while another thread reads the environment
        // without std's lock. Rust code reads it through std (which takes that lock), and
        // the only C code here that reads it, the module's C_Initialize, runs after this
        // returns: every test reaches PKCS#11 through this OnceLock, whose initializer
        // runs exactly once while other callers block on it.
        unsafe { std::env::set_var(name, value) };
        token
    })
}

/// The one logged-in PKCS#11 context of this test process.
pub fn hsm() -> Arc<Hsm> {
    hsm_with_sessions(2)
}

/// [`hsm`], opened with `sessions` worker sessions if this is its first use (the
/// benchmark asks for one per CPU).
pub fn hsm_with_sessions(sessions: usize) -> Arc<Hsm> {
    HSM.get_or_init(|| {
        let config = Config::parse(&token().pkcs11_toml_with(sessions)).unwrap();
        Arc::new(Hsm::open(config.hsm_settings().unwrap()).expect("log in to the test token"))
    })
    .clone()
}

/// The state store of the test token: key records and certificates of its keys, shared
/// (like the token) by every test of the process and every daemon it serves in-process.
pub fn store_url() -> String {
    format!("sqlite://{}", token().path("state/signetd.db").display())
}

/// Brings the test token's state store's schema up to date, once per process, on a
/// runtime of its own: daemons and tests of the process then only connect, and never
/// race to create the same tables.
fn migrate_store() -> signetd::config::StoreLocation {
    static MIGRATED: OnceLock<()> = OnceLock::new();
    let location = signetd::config::StoreLocation::Sqlite {
        path: token().path("state/signetd.db"),
    };
    MIGRATED.get_or_init(|| {
        let location = location.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async { drop(SqlStore::open(&location).await.unwrap()) })
        })
        .join()
        .unwrap()
    });
    location
}

/// The test token's state store (see [`store_url`]), on a pool of this test's own: a
/// pool belongs to the runtime that made it, and each test has its own runtime.
pub async fn store() -> Arc<SqlStore> {
    Arc::new(SqlStore::connect(&migrate_store()).await.unwrap())
}

/// The uid this test runs as.
pub fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

/// An `[issuers.NAME]` JWT issuer allowing this process's uid.
pub fn issuer_toml(name: &str, algorithm: Algorithm) -> String {
    format!(
        "[issuers.{name}]\niss = \"https://{name}.example\"\nalgorithm = \"{algorithm}\"\naudiences = [\"api\", \"web\"]\ncallers = [\"uid:{}\"]\n",
        my_uid()
    )
}

/// An `[issuers.NAME]` raw-signing issuer allowing this process's uid.
pub fn raw_issuer_toml(name: &str, algorithm: Algorithm) -> String {
    format!("{}raw_sign = true\n", issuer_toml(name, algorithm))
}

static CA: tokio::sync::OnceCell<signetd::attest::AttestationCa> =
    tokio::sync::OnceCell::const_new();

/// The test token's attestation CA, created (self-signed) on first use.
pub async fn ca() -> &'static signetd::attest::AttestationCa {
    CA.get_or_init(|| async {
        let (hsm, store) = (hsm(), store().await);
        let pair = signetd::attest::ca::create_key(&hsm, &*store)
            .await
            .expect("create the test CA key");
        let ca = signetd::attest::ca::self_sign(&hsm, &*store, &pair, "signetd test CA", 30)
            .await
            .expect("self-sign the test CA");
        // The audit key too, once: otherwise the first daemons, started in parallel,
        // would each try to generate it for their first checkpoint.
        signetd::keys::store::generate(
            &hsm,
            &*store,
            signetd::audit::AUDIT_ISSUER,
            Algorithm::Es256,
            signetd::keys::KeyPurpose::Raw,
            30,
            "test",
        )
        .await
        .expect("generate the audit key");
        ca
    })
    .await
}

/// Generates and attests the first (JWT) key of `issuer` in the test token.
pub async fn generate_key(issuer: &str, algorithm: Algorithm) -> String {
    generate_key_for(issuer, algorithm, signetd::keys::KeyPurpose::Jwt)
        .await
        .kid
}

/// Generates and attests the first key of a raw-signing `issuer` in the test token.
pub async fn generate_raw_key(issuer: &str, algorithm: Algorithm) -> String {
    generate_key_for(issuer, algorithm, signetd::keys::KeyPurpose::Raw)
        .await
        .kid
}

/// Generates and attests the first key of `issuer` in the test token, after the CA.
pub async fn generate_key_for(
    issuer: &str,
    algorithm: Algorithm,
    purpose: signetd::keys::KeyPurpose,
) -> signetd::keys::StoredKey {
    ca().await;
    signetd::keys::store::generate(
        &hsm(),
        &*store().await,
        issuer,
        algorithm,
        purpose,
        30,
        "test",
    )
    .await
    .unwrap()
}

/// A `signetd serve` process; dropping it stops the process (SIGTERM, then SIGKILL
/// after 10 s), so a failing test never leaves a daemon behind.
pub struct ServedDaemon(pub std::process::Child);

impl ServedDaemon {
    /// SIGKILL, as a crash would.
    pub fn crash(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        assert!(self.signal_term());
        self.0.wait().unwrap()
    }

    /// SIGHUP: the daemon reloads its config and TLS files.
    pub fn hangup(&self) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(status.success(), "kill -HUP {pid}: {status}");
    }

    fn signal_term(&self) -> bool {
        let pid = self.0.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for ServedDaemon {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        if self.signal_term() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon served in-process, as `signetd serve` runs it ([`signetd::daemon::run`]),
/// on a temporary Unix socket and a loopback TCP port; dropping it shuts it down.
pub struct TestDaemon {
    pub socket: PathBuf,
    pub http: SocketAddr,
    pub dir: TempDir,
    /// Read by the benchmark, for its audit statistics.
    #[allow(dead_code)]
    pub service: Arc<Service>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl TestDaemon {
    /// Starts a daemon whose config is the test token's `[pkcs11]` table plus `rest`.
    pub async fn start(rest: &str) -> TestDaemon {
        Self::start_with_mode(rest, 0o660).await
    }

    pub async fn start_with_mode(rest: &str, socket_mode: u32) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let config = daemon_config(&token().pkcs11_toml(), rest, &dir);
        let service = Arc::new(Service::start(config, hsm()).await.unwrap());
        Self::serve(dir, service, socket_mode).await
    }

    /// Serves `service`, made by the caller (the benchmark gives it a log that discards
    /// records), on a socket in `dir`.
    pub async fn serve(dir: TempDir, service: Arc<Service>, socket_mode: u32) -> TestDaemon {
        let socket = dir.path().join("signetd.sock");
        let listeners = api::Listeners {
            unix: api::bind_unix(&socket, socket_mode).unwrap().0,
            http: Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            tls: None,
            max_connections: 1024,
            metrics: None,
        };
        let http = listeners.http.as_ref().unwrap().local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(signetd::daemon::run(listeners, service.clone(), async {
            let _ = stopped.await;
        }));
        TestDaemon {
            socket,
            http,
            dir,
            service,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops accepting, drains, and waits for `serve` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap().await.unwrap();
    }

    /// A request over the Unix socket.
    pub async fn unix(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let endpoint = Endpoint::Unix(self.socket.clone());
        request(&endpoint, method, path, headers, body).await
    }

    /// A request over TCP.
    pub async fn tcp(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let endpoint = Endpoint::Tcp(self.http.to_string());
        request(&endpoint, method, path, headers, body).await
    }

    /// `POST` JSON over the Unix socket.
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        request_unix(&self.socket, Method::POST, path, Some(body)).await
    }

    /// `GET` over the Unix socket.
    pub async fn get(&self, path: &str) -> Reply {
        self.unix(Method::GET, path, &[], b"").await
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The config of an in-process daemon: `pkcs11` and `rest`, with an audit log in `dir`
/// unless `rest` has an `[audit]` table, and the test token's state store ([`store_url`],
/// where its keys are recorded) unless `rest` has a `[store]` table. (Not the default
/// store beside the audit dir: the daemon must find the token's keys, and for an audit
/// dir of `/tmp/X` that would be `/tmp/state`, shared by every such test and run.)
pub fn daemon_config(pkcs11: &str, rest: &str, dir: &TempDir) -> Config {
    let mut rest = with_audit_dir(rest, &dir.path().join("audit"));
    if !rest.contains("[store]") {
        migrate_store();
        rest.push_str(&format!("\n[store]\nurl = {:?}\n", store_url()));
    }
    Config::parse(&format!("{pkcs11}\n{rest}")).expect("valid test config")
}

/// A response, with the body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub raw: Bytes,
    pub json: Value,
}

impl Reply {
    /// The stable error code of an error response.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("<none>")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

/// One request through the CLI's client, on a connection of its own.
pub async fn request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(endpoint, method, path, headers, body)
        .await
        .unwrap()
}

/// [`request`], with the client's error instead of a panic when there is no answer
/// (nothing listens, or the daemon died mid-request): for clients that outlive a daemon.
pub async fn try_request(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    let response = client::request(
        endpoint,
        method,
        path,
        headers,
        Bytes::copy_from_slice(body),
    )
    .await?;
    Ok(Reply {
        status: response.status.as_u16(),
        json: serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        headers: response.headers,
        raw: response.body,
    })
}

/// Decodes the header and claims of a compact JWS without verifying it.
pub fn decode_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let header = signetd::token::jws::unb64(parts.next().unwrap()).unwrap();
    let claims = signetd::token::jws::unb64(parts.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&header).unwrap(),
        serde_json::from_slice(&claims).unwrap(),
    )
}

/// The signetd binary built for these tests.
pub fn signetd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_signetd")
}

/// A raw HTTP/1.1 conversation over the Unix socket, for requests a well-behaved client
/// library would not send: trickled or chunked bodies, headers without a body.
pub struct RawConnection(tokio::net::UnixStream);

impl RawConnection {
    pub async fn open(socket: &Path) -> Self {
        RawConnection(tokio::net::UnixStream::connect(socket).await.unwrap())
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::io::AsyncWriteExt::write_all(&mut self.0, bytes)
            .await
            .unwrap();
    }

    /// Reads one response: status and JSON body (by Content-Length).
    pub async fn reply(&mut self) -> (u16, Value) {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.0.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed before a response: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + length {
            let n = self.0.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        (
            status,
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null),
        )
    }
}

/// The head of a `POST /v1/tokens` with a JSON body of `length` bytes.
pub fn post_head(length: usize) -> String {
    format!(
        "POST /v1/tokens HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// Signs any JWS with a key of the test token, as only someone holding the token could:
/// lets tests hand the verifier tokens the daemon would never mint. ES256 signatures are
/// in low-S form, as the daemon's, so the verifier judges the claims.
pub async fn sign_as(kid: &str, header: &Value, claims: &Value) -> String {
    use signetd::token::jws::b64;
    let inventory = signetd::keys::store::inventory(&hsm(), &*store().await)
        .await
        .unwrap();
    let key = inventory
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .expect("a key of the test token");
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = hsm()
        .sign(
            key.key_ref(),
            signetd::signer::SignInput::Message(input.clone().into_bytes()),
        )
        .await
        .unwrap();
    let signature = match key.algorithm {
        Algorithm::Es256 => {
            let parsed = p256::ecdsa::Signature::from_slice(&signature).unwrap();
            parsed.normalize_s().unwrap_or(parsed).to_bytes().to_vec()
        }
        Algorithm::EdDsa => signature,
    };
    format!("{input}.{}", b64(signature))
}

/// Config tables that make this process's uid an admin and a single-use verifier, with a
/// fast lifecycle: JWKS cached 1 s, keys published 2 s before they sign, a 1 s tick.
pub fn lifecycle_toml() -> String {
    let uid = my_uid();
    format!(
        "[admin]\ncallers = [\"uid:{uid}\"]\n[verify]\nsingle_use_callers = [\"uid:{uid}\"]\n\
         [jwks]\nmax_age_seconds = 1\n[lifecycle]\nprepublish_seconds = 2\ntick_seconds = 1\n"
    )
}

/// One request to any daemon's Unix socket (for daemons run as subprocesses).
pub async fn request_unix(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let endpoint = Endpoint::Unix(socket.to_path_buf());
    match body {
        Some(body) => {
            let bytes = serde_json::to_vec(body).unwrap();
            let json = [("content-type", "application/json")];
            request(&endpoint, method, path, &json, &bytes).await
        }
        None => request(&endpoint, method, path, &[], b"").await,
    }
}

/// [`request_unix`] for tests that are not async: on a runtime of its own.
pub fn request_unix_blocking(socket: &Path, method: Method, path: &str) -> Reply {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(request_unix(socket, method, path, None))
}

/// Waits until `check` holds, ticking for at most `seconds`.
pub async fn eventually(seconds: u64, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..seconds * 10 {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

/// The records of the audit segment at `path`, as text: the file up to the zeros that
/// the segment being written is extended with.
pub fn segment_text(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let end = signetd::audit::segment::records_end(&bytes);
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

/// Every record of the audit log in `dir`, parsed, in order.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    signetd::audit::verify::segment_paths(&[dir.to_path_buf()])
        .unwrap()
        .iter()
        .flat_map(|p| {
            segment_text(p)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `signetd token mint` for `issuer` as uid and gid 65534 (nobody), another local
/// caller than this test process, against the socket at `socket`.
pub async fn mint_as_nobody(socket: PathBuf, issuer: &'static str) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(signetd_bin())
            .args([
                "token", "mint", "--issuer", issuer, "--aud", "api", "--socket",
            ])
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The state store's engines, for tests that run on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A state store database of one test's own: an SQLite file at a path the test names,
/// or a fresh PostgreSQL database, owned by a fresh role, made through the superuser
/// URL in `SIGNETD_TEST_POSTGRES_URL` (the cluster `scripts/test.sh` starts) and dropped
/// with the `TestStore`. Without that URL a PostgreSQL test fails if
/// `SIGNETD_REQUIRE_POSTGRES=1` (scripts/test.sh sets it) and is skipped otherwise.
/// (src/store/test_db.rs is the same for the unit tests.)
pub struct TestStore {
    /// The connection string the daemon gets, in `[store] url`.
    pub url: String,
    postgres: Option<(String, String)>,
}

impl TestStore {
    /// A store on `engine`; `sqlite` is the file an SQLite store uses. `None` when the
    /// test is skipped.
    pub async fn new(engine: Engine, sqlite: &Path) -> Option<TestStore> {
        use sqlx::{Connection, Executor};
        if engine == Engine::Sqlite {
            return Some(TestStore {
                url: format!("sqlite://{}", sqlite.display()),
                postgres: None,
            });
        }
        let admin_url = match std::env::var("SIGNETD_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("SIGNETD_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
                "SIGNETD_REQUIRE_POSTGRES=1 but SIGNETD_TEST_POSTGRES_URL is not set: run the \
                 tests with scripts/test.sh, which starts a PostgreSQL cluster and sets it"
            ),
            _ => {
                // Straight to stderr, past libtest's capture, so the skip is seen.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "note: skipping a PostgreSQL test: SIGNETD_TEST_POSTGRES_URL is not set (scripts/test.sh sets it)"
                );
                return None;
            }
        };
        let name = format!("signetd_test_{:016x}", rand::random::<u64>());
        let password = format!("{:032x}", rand::random::<u128>());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to SIGNETD_TEST_POSTGRES_URL");
        for sql in [
            format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"),
            format!("CREATE DATABASE {name} OWNER {name}"),
        ] {
            admin.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
        }
        admin.close().await.unwrap();
        let Ok(signetd::config::StoreLocation::Postgres { host, port, .. }) =
            signetd::config::StoreLocation::from_url(&admin_url)
        else {
            panic!("SIGNETD_TEST_POSTGRES_URL is not a PostgreSQL URL");
        };
        Some(TestStore {
            url: format!("postgres://{name}:{password}@{host}:{port}/{name}"),
            postgres: Some((admin_url, name)),
        })
    }

    /// The `[store]` table naming this store.
    pub fn toml(&self) -> String {
        format!("\n[store]\nurl = {:?}\n", self.url)
    }

    /// Where the store is.
    pub fn location(&self) -> signetd::config::StoreLocation {
        signetd::config::StoreLocation::from_url(&self.url).unwrap()
    }

    /// The PostgreSQL database's name and role (they are the same), or `None` for SQLite.
    pub fn postgres_name(&self) -> Option<&str> {
        self.postgres.as_ref().map(|(_, name)| name.as_str())
    }

    /// Runs statements as the cluster's superuser (PostgreSQL only).
    pub async fn admin(&self, statements: &[String]) {
        use sqlx::{Connection, Executor};
        let (admin_url, _) = self.postgres.as_ref().expect("a PostgreSQL store");
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap();
        for sql in statements {
            admin
                .execute(sqlx::AssertSqlSafe(sql.clone()))
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        admin.close().await.unwrap();
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else {
            return;
        };
        // From a thread of its own: `Drop` cannot await, and may run inside a runtime.
        let dropped = std::thread::spawn(move || {
            use sqlx::{Connection, Executor};
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                    admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await?;
                    admin
                        .execute(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                        .await?;
                    admin.close().await
                })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("note: cannot drop the test database: {e}");
        }
    }
}

/// The `kid` of every entry of a reply's `keys` (a JWKS, `GET /v1/keys`).
pub fn kids(reply: &Reply) -> Vec<String> {
    reply.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Mints a token of `issuer` for audience `api` through `daemon`; panics unless 200.
pub async fn mint(daemon: &TestDaemon, issuer: &str) -> Value {
    let reply = daemon
        .post(
            "/v1/tokens",
            &serde_json::json!({"issuer": issuer, "aud": "api"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    reply.json
}

/// Runs tlogcheck (tests/interop/tlogcheck: Go's golang.org/x/mod/sumdb/note and
/// sumdb/tlog, an implementation of signed notes and RFC 6962 proofs that is not
/// signetd's) in `mode` (`inclusion` or `consistency`) on `bundle`: `Ok` with its `ok: ...`
/// line when it accepts the bundle, `Err` with its reason when it refuses it. Panics when
/// it cannot run or ends any other way (bad usage, a crash): a refusal must be a refusal.
pub fn tlogcheck(mode: &str, bundle: &Value) -> Result<String, String> {
    tlogcheck_with_key(mode, bundle, None)
}

/// [`tlogcheck`], also requiring the bundle's verifier key to be `key` (one published
/// elsewhere, such as by `signetd audit verifier-key`).
pub fn tlogcheck_with_key(mode: &str, bundle: &Value, key: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let program = std::env::var_os("SIGNETD_TEST_TLOGCHECK").expect(
        "SIGNETD_TEST_TLOGCHECK is not set: run the tests with scripts/test.sh, which builds \
         tests/interop/tlogcheck (Go, golang-golang-x-mod-dev) and sets it",
    );
    let mut command = Command::new(&program);
    if let Some(key) = key {
        command.args(["-key", key]);
    }
    let mut child = command
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.to_string_lossy()));
    let input = serde_json::to_vec(bundle).unwrap();
    // Written from a thread of its own, so a refusal before the whole bundle is read never
    // deadlocks against a full pipe.
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) if stdout.starts_with("ok: ") => Ok(stdout),
        Some(1) if !stderr.is_empty() => Err(stderr),
        _ => panic!(
            "tlogcheck {mode} ended with {}:\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        ),
    }
}

/// One keep-alive connection to `endpoint` minting for `issuer` until stopped: every
/// answer must be a token, on that same connection (for reloads that must not drop it).
pub struct Minter {
    stop: Arc<std::sync::atomic::AtomicBool>,
    minted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Minter {
    pub fn start(endpoint: Endpoint, issuer: &str) -> Minter {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let minted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let body = Bytes::from(serde_json::json!({"issuer": issuer, "aud": "api"}).to_string());
        let task = {
            let (stop, minted) = (stop.clone(), minted.clone());
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                let mut connection = client::Connection::open(&endpoint).await.unwrap();
                let json = [("content-type", "application/json")];
                while !stop.load(Relaxed) {
                    let reply = connection
                        .request(Method::POST, "/v1/tokens", &json, body.clone())
                        .await
                        .expect("the minting connection stays open");
                    assert_eq!(reply.status, 200, "{:?}", reply.body);
                    minted.fetch_add(1, Relaxed);
                }
            })
        };
        Minter { stop, minted, task }
    }

    /// Tokens minted so far.
    pub fn minted(&self) -> usize {
        self.minted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops it; a failed answer or a dropped connection fails the test here.
    pub async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
    }
}
