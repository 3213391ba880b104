//! The daemon inside the sandbox packaging/signetd.service sets up, without systemd:
//! `signetd serve` runs under strace on a real token, mints, verifies and stops, and
//! every system call it made must pass the unit's `SystemCallFilter=` (expanded by
//! `systemd-analyze syscall-filter`, as systemd expands it),
//! `MemoryDenyWriteExecute=` (no mapping made writable and executable, no mapping made
//! executable afterwards) and `RestrictAddressFamilies=`. A unit change that would kill
//! or cripple the daemon at its first such call fails here, not on an operator's host.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use signetd::Algorithm;

use crate::common::{TestToken, issuer_toml, repo_root};

/// Calls made only because the test runs as root, which the unit never does
/// (`User=signetd`): SQLite, when root, gives a new journal the database file's owner
/// with `fchown` (`robust_fchown` in its Unix VFS; as any other user it makes no such
/// call, checked with `setpriv --reuid`), and ignores a failure.
const ROOT_ONLY: &[&str] = &["fchown"];

fn as_root() -> bool {
    crate::common::my_uid() == 0
}

/// The values of every `KEY=` line of the unit, in order.
fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// The system calls `@group` stands for, nested groups expanded.
fn expand(group: &str, cache: &mut HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    if let Some(known) = cache.get(group) {
        return known.clone();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", group])
        .output()
        .expect("run systemd-analyze (package systemd; scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {group}"
    );
    let mut names = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let word = line.trim();
        if word.is_empty() || word.starts_with('#') {
            continue;
        }
        if word.starts_with('@') {
            names.extend(expand(word, cache));
        } else {
            names.insert(word.to_string());
        }
    }
    cache.insert(group.to_string(), names.clone());
    names
}

/// What the unit's `SystemCallFilter=` lines allow, read as systemd reads them: the
/// first line is an allow list, a `~` line takes its calls away, a later plain line
/// adds its calls back.
fn allowed_syscalls(unit: &str) -> BTreeSet<String> {
    let mut cache = HashMap::new();
    let mut allowed = BTreeSet::new();
    let lines = unit_settings(unit, "SystemCallFilter");
    assert!(
        lines.first().is_some_and(|l| !l.starts_with('~')),
        "the unit's first SystemCallFilter= must be an allow list: {lines:?}"
    );
    for line in lines {
        let (deny, list) = match line.strip_prefix('~') {
            Some(list) => (true, list),
            None => (false, line.as_str()),
        };
        for item in list.split_whitespace() {
            let calls = if item.starts_with('@') {
                expand(item, &mut cache)
            } else {
                BTreeSet::from([item.to_string()])
            };
            for call in calls {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    allowed
}

/// One traced call: its name and its arguments as strace printed them.
struct Call {
    name: String,
    args: String,
}

/// The calls of an `strace -f` log; a call split across lines (`<unfinished ...>`) is
/// taken from its first line.
fn calls(log: &str) -> Vec<Call> {
    log.lines()
        .filter_map(|line| {
            let (_pid, rest) = line.split_once(' ')?;
            let rest = rest.trim_start();
            if rest.starts_with("<...") || rest.starts_with("---") || rest.starts_with("+++") {
                return None;
            }
            let (name, args) = rest.split_once('(')?;
            Some(Call {
                name: name.to_string(),
                args: args.to_string(),
            })
        })
        .collect()
}

#[test]
fn the_daemon_runs_within_the_units_sandbox() {
    let unit = std::fs::read_to_string(repo_root().join("packaging/signetd.service")).unwrap();
    let allowed = allowed_syscalls(&unit);
    assert!(allowed.contains("read") && !allowed.contains("reboot"));

    let t = TestToken::create("sandbox");
    let (config, socket) = t.write_config(&issuer_toml("auth", Algorithm::Es256));
    t.init_ca_and_key(&config, "auth");
    let trace = t.path("strace.log");
    let trace_arg = trace.display().to_string();
    let mut daemon = t.serve_under(&["strace", "-f", "-qq", "-o", &trace_arg], &config, &socket);
    let socket_arg = socket.display().to_string();
    let token = t.signetd_ok(&[
        "token",
        "mint",
        "--socket",
        &socket_arg,
        "--issuer",
        "auth",
        "--aud",
        "api",
    ]);
    t.signetd_ok(&["token", "verify", "--socket", &socket_arg, &token]);
    // strace blocks fatal signals (with -o, by default): SIGTERM goes to the daemon,
    // the first process of the trace, and strace exits with its status.
    let log = std::fs::read_to_string(&trace).unwrap();
    let pid = log.split_whitespace().next().expect("an empty trace");
    let killed = Command::new("kill").args(["-TERM", pid]).status().unwrap();
    assert!(killed.success());
    assert!(daemon.0.wait().unwrap().success());

    let log = std::fs::read_to_string(&trace).unwrap();
    let calls = calls(&log);
    assert!(
        calls.iter().any(|c| c.name == "execve") && calls.iter().any(|c| c.name == "accept4"),
        "the trace does not cover the daemon serving:\n{}",
        &log[..log.len().min(2000)]
    );

    let refused: Vec<String> = calls
        .iter()
        .filter(|c| {
            let root_only = as_root() && ROOT_ONLY.contains(&c.name.as_str());
            !allowed.contains(&c.name) && !root_only
        })
        .map(|c| format!("{}({}", c.name, c.args))
        .collect();
    assert!(
        refused.is_empty(),
        "packaging/signetd.service's SystemCallFilter= refuses system calls the daemon makes: {refused:#?}"
    );

    for call in &calls {
        let prot_exec = call.args.contains("PROT_EXEC");
        let writable_exec = prot_exec && call.args.contains("PROT_WRITE");
        let exec_later = prot_exec && matches!(call.name.as_str(), "mprotect" | "pkey_mprotect");
        assert!(
            !(writable_exec || exec_later || call.name == "shmat"),
            "MemoryDenyWriteExecute=yes refuses {}({}",
            call.name,
            call.args
        );
    }

    let families: BTreeSet<String> = unit_settings(&unit, "RestrictAddressFamilies")
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(str::to_string)
        .collect();
    for call in calls.iter().filter(|c| c.name == "socket") {
        let family = call.args.split(',').next().unwrap_or_default().trim();
        assert!(
            families.contains(family),
            "RestrictAddressFamilies= refuses socket({}",
            call.args
        );
    }
}
