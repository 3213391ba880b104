//! Local hardening, shown with the real binary: an unsafe socket directory, config or PIN
//! file stops start-up with a message naming the path and the fix; the CLI refuses a
//! socket some other user bound in the daemon's place; the served daemon is non-dumpable
//! with a core limit of 0.
//!
//! Several parts act as another user (nobody), which only root can arrange; run as
//! anyone else they say so and skip that part.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use signetd::Algorithm;

use crate::common::{TestDaemon, TestToken, generate_key, issuer_toml, my_uid, signetd_bin, token};

const NOBODY: u32 = 65534;

fn as_root_or_skip(what: &str) -> bool {
    if my_uid() != 0 {
        eprintln!("skipping {what}: needs root to act as another user");
        return false;
    }
    true
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `signetd serve` on the shared token with this `[pkcs11]` table and a socket in
/// `socket_dir`; every refusal here comes before the PIN is used, so it never logs in.
fn serve_refused(config: &Path, pkcs11: &str, socket_dir: &Path) -> String {
    let socket = socket_dir.join("signetd.sock");
    std::fs::write(
        config,
        format!(
            "{pkcs11}\n[listen]\nsocket = {:?}\nhttp = \"off\"\n",
            socket.display().to_string()
        ),
    )
    .unwrap();
    chmod(config, 0o644);
    refused(config, &socket)
}

fn refused(config: &Path, socket: &Path) -> String {
    let out = Command::new(signetd_bin())
        .args(["serve", "--config"])
        .arg(config)
        .env(token().module_env().0, token().module_env().1)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "signetd serve started: {stderr}");
    assert!(!socket.exists(), "a refused start leaves no socket");
    assert!(!stderr.contains(&token().pin()), "{stderr}");
    stderr
}

#[test]
fn a_socket_directory_others_can_write_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("run");
    std::fs::create_dir(&sockets).unwrap();
    chmod(&sockets, 0o777);
    let config = dir.path().join("signetd.toml");
    let stderr = serve_refused(&config, &token().pkcs11_toml(), &sockets);
    let shown = sockets.display().to_string();
    assert!(
        stderr.contains(&format!("the socket's directory {shown} has mode 777"))
            && stderr.contains(&format!("chmod go-w {shown}")),
        "{stderr}"
    );
    // Group-writable is refused too (a sticky directory of root's, as /tmp, is not:
    // see the unit test of directory_problem).
    chmod(&sockets, 0o770);
    assert!(serve_refused(&config, &token().pkcs11_toml(), &sockets).contains("mode 770"));
}

#[test]
fn a_config_others_can_write_or_own_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("signetd.toml");
    let shown = config.display().to_string();
    std::fs::write(&config, token().pkcs11_toml()).unwrap();
    chmod(&config, 0o646);
    let stderr = refused(&config, &dir.path().join("none.sock"));
    assert!(
        stderr.contains(&format!("config {shown} has mode 646"))
            && stderr.contains(&format!("chmod go-w {shown}")),
        "{stderr}"
    );
    if !as_root_or_skip("a config owned by another user") {
        return;
    }
    chmod(&config, 0o644);
    chown(&config, NOBODY);
    let stderr = refused(&config, &dir.path().join("none.sock"));
    assert!(
        stderr.contains(&format!("config {shown} is owned by uid {NOBODY}"))
            && stderr.contains(&format!("chown 0 {shown}")),
        "{stderr}"
    );
}

#[test]
fn a_pin_file_another_user_owns_stops_start_up() {
    if !as_root_or_skip("a PIN file owned by another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("user.pin");
    std::fs::copy(token().var("SIGNETD_PIN_FILE"), &pin).unwrap();
    chmod(&pin, 0o600);
    chown(&pin, NOBODY);
    let t = token();
    let pkcs11 = format!(
        "[pkcs11]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
        t.var("SIGNETD_PKCS11_MODULE"),
        t.var("SIGNETD_TOKEN_LABEL"),
        pin.display().to_string()
    );
    let stderr = serve_refused(&dir.path().join("signetd.toml"), &pkcs11, dir.path());
    let shown = pin.display().to_string();
    assert!(
        stderr.contains(&format!(
            "pkcs11.pin_file: {shown} is owned by uid {NOBODY}"
        )) && stderr.contains(&format!("chown 0 {shown}")),
        "{stderr}"
    );
}

/// A Python interpreter any user can run (the test venv may live under /root).
fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The attacker, as nobody: renames the live socket aside, binds its own in its place,
/// and answers whatever request comes with a token of its own after noting (in `log`) how
/// many bytes it was sent.
const ATTACKER: &str = r#"
import os, socket, sys
path, aside, log = sys.argv[1:4]
os.rename(path, aside)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(8)
open(log + ".ready", "w").close()
s.settimeout(20)
got = b""
try:
    c, _ = s.accept()
    c.settimeout(2)
    try:
        while True:
            data = c.recv(65536)
            if not data:
                break
            got += data
    except socket.timeout:
        pass
    body = b'{"token":"attacker.token.here","kid":"x","jti":"x","expires_at":0,"token_sha256":"x"}'
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
except socket.timeout:
    pass
open(log, "w").write(str(len(got)))
"#;

fn mint_with_cli(socket: &Path, extra: &[&str]) -> Output {
    Command::new(signetd_bin())
        .args([
            "token",
            "mint",
            "--issuer",
            "harden-hijack",
            "--aud",
            "api",
            "--socket",
        ])
        .arg(socket)
        .args(extra)
        .env_remove("SIGNETD_SOCKET_OWNER")
        .output()
        .unwrap()
}

fn wait_for(path: &Path, seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_refuses_a_socket_another_user_bound_in_the_daemons_place() {
    if !as_root_or_skip("the socket hijack") {
        return;
    }
    generate_key("harden-hijack", Algorithm::Es256).await;
    let daemon = TestDaemon::start(&issuer_toml("harden-hijack", Algorithm::Es256)).await;
    let socket = daemon.socket.clone();
    let minted = tokio::task::block_in_place(|| mint_with_cli(&socket, &[]));
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );

    // The directory becomes writable by others after start (a later chmod, an old
    // deployment): nobody replaces the live socket with one of its own.
    chmod(daemon.dir.path(), 0o777);
    let log: PathBuf = daemon.dir.path().join("attacker.log");
    let mut attacker = Command::new(system_python())
        .args(["-c", ATTACKER])
        .arg(&socket)
        .arg(daemon.dir.path().join("aside.sock"))
        .arg(&log)
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let ready = wait_for(&log.with_extension("log.ready"), 10);
    if !ready {
        let _ = attacker.kill();
        panic!("the attacker did not bind within 10 s");
    }
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), NOBODY);

    let out = tokio::task::block_in_place(|| mint_with_cli(&socket, &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "minted from the attacker: {stdout}");
    assert!(!stdout.contains("attacker"), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "its listener belongs to uid {NOBODY}, not the expected owner"
        )) && stderr.contains(&socket.display().to_string()),
        "{stderr}"
    );
    let sent = tokio::task::block_in_place(|| {
        assert!(
            wait_for(&log, 10),
            "the attacker did not finish within 10 s"
        );
        let _ = attacker.wait();
        std::fs::read_to_string(&log).unwrap()
    });
    assert_eq!(sent, "0", "the client sent nothing to the attacker");
}

#[test]
fn socket_owner_names_the_one_user_that_may_serve() {
    // The flag narrows the default: a root daemon is refused when another uid is named.
    if !as_root_or_skip("--socket-owner against a root daemon") {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The CA (and audit key) first, as every daemon test does, so no two make them.
    runtime.block_on(crate::common::ca());
    let daemon = runtime.block_on(TestDaemon::start(""));
    let status = |owner: &str| {
        Command::new(signetd_bin())
            .args(["status", "--socket-owner", owner, "--socket"])
            .arg(&daemon.socket)
            .output()
            .unwrap()
    };
    assert!(status("0").status.success());
    assert!(status("root").status.success());
    let other = status(&NOBODY.to_string());
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr)
            .contains("not the expected owner (uid 65534 (--socket-owner))"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    drop(daemon);
}

/// The owner of `/proc/PID/status` and the uid on its `Uid:` line. proc(5): the files of
/// `/proc/PID` are owned by the process's effective uid, except that they are root's
/// when the process is not dumpable. So a process running as nobody whose files are
/// root's has made itself non-dumpable.
fn proc_owner_and_uid(pid: u32) -> (u32, u32) {
    let path = format!("/proc/{pid}/status");
    let owner = std::fs::metadata(&path).unwrap().uid();
    let status = std::fs::read_to_string(&path).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (owner, uid)
}

#[test]
fn the_served_daemon_is_not_dumpable_and_writes_no_core() {
    if !as_root_or_skip("the non-dumpable daemon (it runs as nobody to make it observable)") {
        return;
    }
    // The control: an ordinary process of nobody's has its /proc files in its own name.
    let mut control = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let seen = proc_owner_and_uid(control.id());
    let _ = control.kill();
    let _ = control.wait();
    assert_eq!(
        seen,
        (NOBODY, NOBODY),
        "a dumpable process owns its /proc files"
    );

    // A token, config and directory of nobody's own, so the daemon can run as nobody.
    let t = TestToken::create("harden-dump");
    let (config, socket) = t.write_config("");
    for entry in walk(t.dir.path()) {
        chown(&entry, NOBODY);
    }
    // Started with an unlimited core size, as `ulimit -c unlimited` would leave it.
    let daemon = t.serve_under(
        &[
            "prlimit",
            "--core=unlimited",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &config,
        &socket,
    );
    let pid = daemon.0.id();
    let (owner, uid) = proc_owner_and_uid(pid);
    assert_eq!(uid, NOBODY, "the daemon runs as nobody");
    assert_eq!(
        owner, 0,
        "/proc/{pid}/status is root's: the daemon is not dumpable"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "soft and hard core limits are 0: {core}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            all.extend(walk(&path));
        } else {
            all.push(path);
        }
    }
    all
}
