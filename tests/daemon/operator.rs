//! What operators and their service manager use around the daemon, on the real binary:
//! `signetd config check` (it checks what `serve` checks before the token, and never
//! loads the PKCS#11 module), the manual pages and shell completions made from the
//! command line's definition, and the `READY=1`/`STOPPING=1` notifications systemd's
//! `Type=notify` waits for (packaging/signetd.service).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use signetd::Algorithm;

use crate::common::{ServedDaemon, TestToken, issuer_toml, signetd_bin};

/// A config and the files it names, in a directory of its own: a PIN file (mode
/// 0600), a "module" that is a text file (so anything that loads it fails), and
/// TLS files made with rcgen.
struct Setup {
    dir: tempfile::TempDir,
}

const PIN: &str = "314159-never-printed";

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        setup.write("not-a-module.so", "this is not a shared library\n", 0o644);
        setup.write("user.pin", &format!("{PIN}\n"), 0o600);
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        setup.write("server.pem", &cert.cert.pem(), 0o644);
        setup.write("server.key", &cert.signing_key.serialize_pem(), 0o600);
        setup.write("clients.pem", &cert.cert.pem(), 0o644);
        std::fs::create_dir(setup.path("run")).unwrap();
        std::fs::set_permissions(setup.path("run"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A complete config: two issuers, TLS, an SQLite store; `edit` changes its text.
    fn config(&self, edit: impl Fn(String) -> String) -> PathBuf {
        let p = |name: &str| format!("{:?}", self.path(name).display().to_string());
        let text = format!(
            "[pkcs11]\nmodule = {}\ntoken_label = \"signetd\"\npin_file = {}\n\n\
             [listen]\nsocket = {}\nhttp = \"off\"\n\n\
             [tls]\nlisten = \"127.0.0.1:0\"\ncert = {}\nkey = {}\nclient_ca = {}\n\n\
             [store]\nurl = \"sqlite://{}\"\n\n[audit]\ndir = {}\n\n{}\n{}",
            p("not-a-module.so"),
            p("user.pin"),
            p("run/signetd.sock"),
            p("server.pem"),
            p("server.key"),
            p("clients.pem"),
            self.path("state/signetd.db").display(),
            p("audit"),
            issuer_toml("auth", Algorithm::Es256),
            issuer_toml("ci", Algorithm::EdDsa),
        );
        self.write("signetd.toml", &edit(text), 0o644)
    }
}

fn signetd(args: &[&str], config: &Path) -> Output {
    Command::new(signetd_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("SIGNETD_STORE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_check_passes_a_good_config_without_loading_the_module() {
    let setup = Setup::new();
    let config = setup.config(|t| t);
    let out = signetd(&["config", "check"], &config);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "one line of summary: {stdout}");
    for part in [
        "is valid",
        "2 issuer(s) (auth, ci)",
        "tls https://127.0.0.1:0",
        "store sqlite",
        "not opened",
    ] {
        assert!(stdout.contains(part), "{part:?} missing from {stdout}");
    }
    assert!(!stdout.contains(PIN) && !stderr.contains(PIN));
    assert!(
        !setup.path("state").exists() && !setup.path("audit").exists(),
        "the check created the store or the audit log"
    );
    // The same config does not start: the module cannot be loaded. So the check
    // above never tried.
    let served = signetd(&["serve"], &config);
    assert!(!served.status.success());
    let served = text(&served.stderr);
    assert!(served.contains("pkcs11_module_unavailable"), "{served}");
}

/// A bad config: what is wrong, how to make it from good files, what the error says.
type Case = (&'static str, Box<dyn Fn(&Setup) -> PathBuf>, &'static str);

#[test]
fn config_check_names_the_first_problem() {
    let cases: Vec<Case> = vec![
        (
            "an unknown key",
            Box::new(|s| s.config(|t| t.replace("http = \"off\"", "htp = \"off\""))),
            "unknown field `htp`",
        ),
        (
            "a caller selector that does not parse",
            Box::new(|s| s.config(|t| t.replacen("callers = [", "callers = [\"uid:alice\", ", 1))),
            "uid:alice",
        ),
        (
            "a group-writable config",
            Box::new(|s| {
                let config = s.config(|t| t);
                std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o664)).unwrap();
                config
            }),
            "chmod go-w",
        ),
        (
            "a PIN file others can read",
            Box::new(|s| {
                s.write("user.pin", &format!("{PIN}\n"), 0o644);
                s.config(|t| t)
            }),
            "pkcs11.pin_file",
        ),
        (
            "a missing module",
            Box::new(|s| s.config(|t| t.replace("not-a-module.so", "missing.so"))),
            "pkcs11.module",
        ),
        (
            "a TLS key others can read",
            Box::new(|s| {
                let key = std::fs::read_to_string(s.path("server.key")).unwrap();
                s.write("server.key", &key, 0o644);
                s.config(|t| t)
            }),
            "tls.key",
        ),
        (
            "a TLS certificate that is not one",
            Box::new(|s| {
                s.write("bad.pem", "not a certificate\n", 0o644);
                s.config(|t| t.replace("server.pem", "bad.pem"))
            }),
            "tls.cert",
        ),
        (
            "a store URL of an unknown engine",
            Box::new(|s| s.config(|t| t.replace("url = \"sqlite://", "url = \"mysql://"))),
            "store.url",
        ),
        (
            "a socket directory others can write",
            Box::new(|s| {
                std::fs::set_permissions(s.path("run"), std::fs::Permissions::from_mode(0o777))
                    .unwrap();
                s.config(|t| t)
            }),
            "listen.socket",
        ),
    ];
    for (what, make, expected) in cases {
        // Each case starts from good files.
        let setup = Setup::new();
        let config = make(&setup);
        let out = signetd(&["config", "check"], &config);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: the check passed");
        assert!(out.stdout.is_empty(), "{what}: {}", text(&out.stdout));
        assert!(
            stderr.contains(expected),
            "{what}: {expected:?} missing from {stderr}"
        );
        assert!(!stderr.contains(PIN), "{what}: {stderr}");
    }
}

#[test]
fn the_manual_pages_render_and_the_bash_completions_load() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(signetd_bin())
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    for page in [
        "signetd.1",
        "signetd-keys-rotate.1",
        "signetd-config-check.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page} not written");
        assert!(listed.contains(page), "{page} not listed: {listed}");
    }
    // man-db and groff render each page without a warning (scripts/test.sh installs
    // man-db).
    let render = |page: &str| {
        let out = Command::new("man")
            .args(["--warnings", "-P", "cat", "-l"])
            .arg(dir.path().join(page))
            .env("MANWIDTH", "100")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("run man (package man-db; scripts/test.sh installs it)");
        assert!(out.status.success(), "man -l {page}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), "", "man -l {page} warned");
        text(&out.stdout)
    };
    let top = render("signetd.1");
    for part in ["SYNOPSIS", "signetd-config(1)", "SIGNETD_CONFIG", "FILES"] {
        assert!(
            top.contains(part),
            "{part:?} missing from signetd(1):\n{top}"
        );
    }
    let check = render("signetd-config-check.1");
    assert!(check.contains("--config"), "{check}");
    assert!(check.contains("not loaded"), "{check}");

    let script = Command::new(signetd_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success());
    let path = dir.path().join("signetd.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    // A fresh bash sources it and then knows how to complete signetd, and offers the
    // subcommands for `signetd con<TAB>`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            "source \"$1\" && complete -p signetd && \
             COMP_WORDS=(signetd con) COMP_CWORD=1 COMP_LINE='signetd con' COMP_POINT=11 && \
             _signetd signetd con signetd && printf '%s\\n' \"${COMPREPLY[@]}\"",
        )
        .arg("bash")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("-F _signetd signetd"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "config"), "{stdout}");
}

#[test]
fn serve_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let t = TestToken::create("notify");
    let (config, socket) = t.write_config(&issuer_toml("auth", Algorithm::Es256));
    t.init_ca_and_key(&config, "auth");
    let notify_path = t.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // A guard against a hang, not a measurement.
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut daemon = ServedDaemon(
        t.command(signetd_bin(), "serve --config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 within 60 s");
    assert_eq!(text(&buf[..n]), "READY=1\n");
    // Ready means ready: the daemon answers /readyz with 200 at once (`status` fails
    // otherwise: READY=1 came before /readyz said ready).
    let socket = socket.display().to_string();
    t.signetd_ok(&["status", "--socket", &socket]);
    assert!(daemon.terminate().success());
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(text(&buf[..n]), "STOPPING=1\n");
}
