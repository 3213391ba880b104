//! README.md's "Running it", run as written: the production path, from the build to a
//! minted token checked by PyJWT, with the paths moved under a temporary root and a
//! stand-in for `systemctl` (`tests/readme/systemctl`). README.md's "How CI runs this"
//! says exactly what differs. Also the token ceremony's PIN-file and SoftHSM2-directory
//! options that the path relies on.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hyper::Method;
use serde_json::Value;

use crate::common::{my_uid, repo_root, request_unix_blocking, signetd_bin};

/// Where the block's paths go: each is moved under the temporary root (also in
/// `tests/readme/systemctl`, which moves the unit's paths the same way).
const MOVED: [&str; 6] = [
    "/etc/signetd",
    "/etc/systemd/system",
    "/var/lib/signetd",
    "/run/signetd",
    "/usr/local",
    "/root",
];

/// Absolute paths the block may name as they are: it only reads them.
const READ_ONLY: [&str; 1] = ["/usr/lib/softhsm/libsofthsm2.so"];

/// The `sh` code blocks of README.md's "Running it" section, joined.
fn running_it() -> String {
    let readme = fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Running it\n")
        .expect("README.md has a \"## Running it\" section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    let blocks: Vec<&str> = section
        .split("\n```sh\n")
        .skip(1)
        .map(|b| b.split_once("\n```").expect("a closed sh block").0)
        .collect();
    assert!(!blocks.is_empty(), "no sh block in \"Running it\"");
    blocks.join("\n")
}

/// Whether `c` may precede a path that starts a word (a shell word, a TOML string, a
/// `KEY=` value).
fn starts_word(c: Option<char>) -> bool {
    c.is_none_or(|c| c.is_whitespace() || "\"'=(<>".contains(c))
}

/// `block` with every path under [`MOVED`] moved under `root`. Panics on another
/// absolute path outside a comment, unless it is in [`READ_ONLY`]: the block would touch
/// the host.
fn move_paths(block: &str, root: &Path) -> String {
    let root = root.to_str().unwrap();
    let mut out = String::new();
    for line in block.split_inclusive('\n') {
        let comment = line.trim_start().starts_with('#');
        let mut rest = line;
        let mut before = None;
        while let Some(i) = rest.find('/') {
            before = rest[..i].chars().next_back().or(before);
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            if !starts_word(before) {
                out.push('/');
                before = Some('/');
                rest = &rest[1..];
                continue;
            }
            let end = rest
                .find(|c: char| c.is_whitespace() || "\"'):".contains(c))
                .unwrap_or(rest.len());
            let path = &rest[..end];
            let moved = MOVED
                .iter()
                .any(|p| path == *p || path.starts_with(&format!("{p}/")));
            if moved {
                out.push_str(root);
            } else {
                assert!(
                    comment || READ_ONLY.contains(&path),
                    "README's \"Running it\" names {path:?}, outside the paths the test moves \
                     ({MOVED:?}) and those it may only read ({READ_ONLY:?}): move it, or add it \
                     to one of the lists in tests/daemon/readme.rs and to README's \"How CI runs this\""
                );
            }
            out.push_str(path);
            before = path.chars().next_back();
            rest = &rest[end..];
        }
        out.push_str(rest);
    }
    out
}

/// Runs `script` as README's reader would, with `bash -e -o pipefail` in the checkout,
/// with `root`'s `usr/local/bin` and the `systemctl` stand-in first on `PATH` and none of
/// the variables that would point signetd or SoftHSM2 elsewhere.
fn run_block(script: &str, root: &Path) -> Output {
    let file = root.join("readme-running-it.sh");
    fs::write(&file, script).unwrap();
    let path = format!(
        "{}:{}:{}",
        repo_root().join("tests/readme").display(),
        root.join("usr/local/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .args(["-e", "-o", "pipefail"])
        .arg(&file)
        .current_dir(repo_root())
        .env("PATH", path)
        .env("SIGNETD_README_ROOT", root);
    for (name, _) in std::env::vars() {
        // What `cargo test` sets for a test (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...) is
        // not a reader's shell: build scripts that watch such variables would make the
        // block's `cargo build --release` rebuild what scripts/test.sh just built.
        let cargo_test = name.starts_with("CARGO_")
            && !["CARGO_HOME", "CARGO_BUILD_JOBS", "CARGO_TARGET_DIR"].contains(&name.as_str());
        if name.starts_with("SIGNETD_") && name != "SIGNETD_README_ROOT"
            || cargo_test
            || [
                "SOFTHSM2_CONF",
                "KRYOPTIC_CONF",
                "OUT_DIR",
                "LD_LIBRARY_PATH",
            ]
            .contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command.output().unwrap()
}

/// A temporary root every user may enter (signetd's user walks through it).
fn temp_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Stops the daemon the block started, however the test ends.
struct StopDaemon(PathBuf);

impl Drop for StopDaemon {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/readme/systemctl"))
            .args(["stop", "signetd"])
            .env("SIGNETD_README_ROOT", &self.0)
            .status();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// PyJWT (`tests/interop/verify_jwt.py`) on `token` against the JWKS file `jwks`.
fn pyjwt(jwks: &Path, token: &str) {
    let python = std::env::var("SIGNETD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(repo_root().join("tests/interop/verify_jwt.py"))
        .arg("--jwks-file")
        .arg(jwks)
        .args(["--iss", "https://auth.example.com"])
        .args([
            "--aud",
            "https://api.example.com",
            "--max-ttl",
            "300",
            token,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT ({python}; scripts/test.sh makes the venv) refuses {token}: {}",
        text(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice", "{claims}");
}

#[test]
fn readme_running_it_works_as_written() {
    assert_eq!(
        my_uid(),
        0,
        "README's \"Running it\" runs as root (it creates the user signetd and runs the \
         daemon as that user), and so must this test; CI does. Run scripts/test.sh as root, \
         or leave this test out with `-- --skip readme::readme_running_it`."
    );
    let tmp = temp_root();
    let root = tmp.path();
    // What every Debian host has before the block begins.
    for dir in [
        "etc/systemd/system",
        "usr/local/bin",
        "usr/local/share",
        "var/lib",
        "run",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::create_dir(root.join("root")).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    let script = move_paths(&running_it(), root);
    for word in ["&&", "||"] {
        assert!(
            !script.contains(word),
            "README's \"Running it\" uses {word}: under bash -e a failure before it would \
             not stop the block; write one command per line"
        );
    }
    let _stop = StopDaemon(root.to_path_buf());
    let out = run_block(&script, root);
    let stdout = text(&out.stdout);
    let log = fs::read_to_string(root.join("run/systemctl/signetd.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "README's \"Running it\" failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{}\n\
         --- daemon ---\n{log}",
        out.status,
        text(&out.stderr)
    );

    // What the block promises about where things are.
    let signetd_uid = fs::metadata(root.join("var/lib/signetd")).unwrap().uid();
    assert_ne!(signetd_uid, 0, "/var/lib/signetd is signetd's");
    let pin = fs::metadata(root.join("etc/signetd/user.pin")).unwrap();
    assert_eq!((pin.uid(), pin.mode() & 0o777), (signetd_uid, 0o600));
    let so_pin = fs::metadata(root.join("root/signetd-so.pin")).unwrap();
    assert_eq!((so_pin.uid(), so_pin.mode() & 0o777), (0, 0o600));
    let token_dir = root.join("var/lib/signetd/token");
    let walk = Command::new("find").arg(&token_dir).output().unwrap();
    assert!(
        walk.status.success() && !text(&walk.stdout).contains(".pin"),
        "no PIN file in the token directory:\n{}",
        text(&walk.stdout)
    );
    assert!(
        fs::read_dir(root.join("var/lib/signetd/ceremonies"))
            .unwrap()
            .count()
            >= 3,
        "the transcripts of init-token, root and issuer-key are under the state directory"
    );
    assert!(root.join("var/lib/signetd/export/root.pem").is_file());

    // The two tokens the block minted: curl's reply, then `token mint`'s line.
    let curl: Value = stdout
        .lines()
        .find(|l| l.starts_with("{\"token\":"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no reply of POST /v1/tokens in:\n{stdout}"));
    let minted = stdout
        .lines()
        .rfind(|l| l.starts_with("eyJ") && l.split('.').count() == 3)
        .unwrap_or_else(|| panic!("no token from signetd token mint in:\n{stdout}"));

    let socket = root.join("run/signetd/signetd.sock");
    let jwks = request_unix_blocking(&socket, Method::GET, "/.well-known/jwks.json");
    assert_eq!(jwks.status, 200, "{:?}", jwks.json);
    let jwks_file = root.join("jwks.json");
    fs::write(&jwks_file, &jwks.raw).unwrap();
    pyjwt(&jwks_file, curl["token"].as_str().unwrap());
    pyjwt(&jwks_file, minted);
}

/// The runner stops at the first command that fails, so the test above fails with it.
#[test]
fn readme_runner_fails_when_a_command_fails() {
    let tmp = temp_root();
    let out = run_block("true\nfalse\necho after\n", tmp.path());
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("after"));
}

#[test]
fn readme_paths_are_moved_under_the_root_and_no_others_are_named() {
    let root = Path::new("/tmp/r");
    assert_eq!(
        move_paths(
            "install -d /etc/signetd\npin_file = \"/etc/signetd/user.pin\"\n--root /var/lib/signetd/export/root.pem x=/root/so.pin",
            root
        ),
        "install -d /tmp/r/etc/signetd\npin_file = \"/tmp/r/etc/signetd/user.pin\"\n--root /tmp/r/var/lib/signetd/export/root.pem x=/tmp/r/root/so.pin"
    );
    // Not paths: a URL, a relative path.
    let kept = "curl http://localhost/v1/tokens scripts/ceremony/*.sh";
    assert_eq!(move_paths(kept, root), kept);
    let other = std::panic::catch_unwind(|| move_paths("cp x /etc/passwd", root));
    assert!(other.is_err(), "a path outside the moved ones is refused");
}

// ---------------------------------------------------------------- init-token.sh

/// `scripts/ceremony/init-token.sh ARGS` in `dir`, on SoftHSM2 whatever the suite's
/// PKCS#11 implementation (`--softhsm-dir` is SoftHSM2's).
fn init_token(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/ceremony/init-token.sh"))
        .args(args)
        .args(["--signetd", signetd_bin(), "--transcript-dir", "ceremonies"])
        .current_dir(dir)
        .env_remove("SIGNETD_PKCS11_MODULE")
        .env_remove("SOFTHSM2_CONF")
        .env_remove("SIGNETD_TRANSCRIPT_DIR")
        .output()
        .unwrap()
}

#[test]
fn init_token_makes_pins_and_a_softhsm_store_outside_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = [
        "--label",
        "readme-it",
        "--new-pins",
        "--pin-file",
        "user.pin",
        "--so-pin-file",
        "so.pin",
        "--softhsm-dir",
        "token",
    ];
    let out = init_token(dir, &args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let conf = dir.join("token/softhsm2.conf");
    assert!(
        stdout.contains(&format!("SOFTHSM2_CONF={}", conf.display())),
        "{stdout}"
    );
    for pin in ["user.pin", "so.pin"] {
        let meta = fs::metadata(dir.join(pin)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{pin}");
        let value = fs::read_to_string(dir.join(pin)).unwrap();
        assert_eq!(value.trim_end().len(), 16, "{pin}");
    }
    assert_ne!(
        fs::read_to_string(dir.join("user.pin")).unwrap(),
        fs::read_to_string(dir.join("so.pin")).unwrap()
    );
    let walk = Command::new("find")
        .arg(dir.join("token"))
        .output()
        .unwrap();
    assert!(
        !text(&walk.stdout).contains(".pin"),
        "{}",
        text(&walk.stdout)
    );
    // The token the script made is the one SoftHSM2 lists in that store.
    let list = Command::new("softhsm2-util")
        .arg("--show-slots")
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(
        text(&list.stdout).contains("readme-it"),
        "{}",
        text(&list.stdout)
    );

    // Again: --new-pins never replaces a PIN file; without it the token is verified.
    let again = init_token(dir, &args);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already exists"),
        "{}",
        text(&again.stderr)
    );
    let args: Vec<&str> = args.into_iter().filter(|a| *a != "--new-pins").collect();
    let verify = init_token(dir, &args);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

#[test]
fn init_token_refuses_pin_files_the_daemon_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("so.pin"), "1234abcd\n").unwrap();
    fs::write(dir.join("user.pin"), "5678abcd\n").unwrap();
    fs::set_permissions(dir.join("so.pin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(dir.join("user.pin"), fs::Permissions::from_mode(0o640)).unwrap();
    let common = [
        "--label",
        "readme-pins",
        "--pin-file",
        "user.pin",
        "--so-pin-file",
        "so.pin",
    ];
    let out = init_token(dir, &[&common[..], &["--softhsm-dir", "token"]].concat());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("user.pin has mode 640") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(!dir.join("token").exists(), "nothing was made");

    // A PIN file inside the token directory would travel with every backup of it.
    let out = init_token(
        dir,
        &[
            "--label",
            "readme-pins",
            "--pin-file",
            "token/user.pin",
            "--so-pin-file",
            "so.pin",
            "--softhsm-dir",
            "token",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("inside --softhsm-dir"),
        "{}",
        text(&out.stderr)
    );
}
