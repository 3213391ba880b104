//! Who may own and change the files signetd trusts at start: the config file, the PIN
//! file and (for the TLS listener) a private key.
//!
//! Whoever can write the config makes themselves an admin at the next start; whoever can
//! read the PIN or a private key can sign. So each such file must be owned by the user
//! signetd runs as (its effective uid) or by root, and no one else may write it; a
//! private file may not even be read by group or others. Each refusal names the path and
//! the command that fixes it.
//!
//! The checks look at the file itself (symlinks followed, as the read does), not at the
//! directories above it: those are the packager's and the operator's (`/etc` is root's).

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::ConfigError;

/// How much others may do with a file signetd trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Others may read it but not write it (the config file).
    Config,
    /// Only its owner may read or write it (a PIN file, a private key).
    Private,
}

/// What is wrong with a file owned by `owner` with mode `mode`, for a process whose
/// effective uid is `euid`; `None` if nothing is.
pub fn file_problem(
    path: &Path,
    kind: FileKind,
    owner: u32,
    mode: u32,
    euid: u32,
) -> Option<String> {
    let shown = path.display();
    if owner != euid && owner != 0 {
        return Some(format!(
            "{shown} is owned by uid {owner}, not by signetd's user (uid {euid}) or root: \
             that user could change it; chown {euid} {shown}"
        ));
    }
    let (forbidden, what, fix) = match kind {
        FileKind::Config => (0o022, "written", "chmod go-w"),
        FileKind::Private => (0o077, "read or written", "chmod 600"),
    };
    if mode & forbidden != 0 {
        return Some(format!(
            "{shown} has mode {:o}: group or others can have it {what}; {fix} {shown}",
            mode & 0o7777
        ));
    }
    None
}

/// What is wrong with the owner of a piece of the daemon's own state (the SQLite state
/// store's directory and file), for a command running as `euid`; `None` if the owner is
/// `euid` or root. `owner_name` is the owner's name, when `/etc/passwd` has it.
///
/// Unlike the config and PIN files, the state is written by the daemon as its user
/// (`signetd`), and SQLite adds `-wal` and `-shm` files beside it as whoever opens it:
/// a `chown` to the caller (root, say) would lock the daemon out of its own store. So
/// the fix named is to run the command as the owner.
pub fn state_owner_problem(
    path: &Path,
    owner: u32,
    euid: u32,
    owner_name: Option<&str>,
) -> Option<String> {
    if owner == euid || owner == 0 {
        return None;
    }
    let shown = path.display();
    let (who, user) = match owner_name {
        Some(name) => (format!("uid {owner} ({name})"), name.to_string()),
        None => (format!("uid {owner}"), "USER".to_string()),
    };
    Some(format!(
        "{shown} is owned by {who}, not by the user running this command (uid {euid}) or \
         root: the state belongs to the daemon's user; run the command as that user, \
         runuser -u {user} -- signetd ... (do not chown it: the daemon could no longer \
         open its own state)"
    ))
}

/// The name of `uid` in `/etc/passwd`, for messages (users only a directory service
/// knows have none here).
pub fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    name_in_passwd(&passwd, uid)
}

fn name_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid.to_string()).then(|| name.to_string())
    })
}

/// Checks the metadata of a file already opened from `path`.
pub fn check_metadata(path: &Path, kind: FileKind, meta: &Metadata) -> Result<(), ConfigError> {
    let euid = rustix::process::geteuid().as_raw();
    match file_problem(path, kind, meta.uid(), meta.mode(), euid) {
        Some(problem) => Err(ConfigError(problem)),
        None => Ok(()),
    }
}

/// Opens `path` for reading and checks the file it opened (not whatever the path names a
/// moment later) as a [`FileKind::Private`] file. `what` names the file in messages,
/// such as `"pkcs11.pin_file"` or `"tls.key"`.
pub fn open_private_file(path: &Path, what: &str) -> Result<File, ConfigError> {
    open_checked(path, what, FileKind::Private)
}

/// Checks the file at `path` as a [`FileKind::Private`] file, for a file a library
/// reads by path itself.
pub fn check_private_file(path: &Path, what: &str) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| ConfigError(format!("{what}: {}: {e}", path.display())))?;
    check_metadata(path, FileKind::Private, &meta).map_err(|e| ConfigError(format!("{what}: {e}")))
}

fn open_checked(path: &Path, what: &str, kind: FileKind) -> Result<File, ConfigError> {
    let fail = |e: std::io::Error| ConfigError(format!("{what}: {}: {e}", path.display()));
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    check_metadata(path, kind, &meta).map_err(|e| ConfigError(format!("{what}: {e}")))?;
    Ok(file)
}

/// Opens the config file at `path` and checks it as a [`FileKind::Config`] file.
pub(super) fn open_config(path: &Path) -> Result<File, ConfigError> {
    let fail =
        |e: std::io::Error| ConfigError(format!("cannot read config {}: {e}", path.display()));
    let file = File::open(path).map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    check_metadata(path, FileKind::Config, &meta)
        .map_err(|e| ConfigError(format!("config {e}")))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_must_be_signetd_or_root_and_only_the_owner_writes() {
        let p = Path::new("/etc/signetd/signetd.toml");
        let check = |kind, owner, mode| file_problem(p, kind, owner, mode, 999);
        assert_eq!(check(FileKind::Config, 999, 0o644), None);
        assert_eq!(check(FileKind::Config, 0, 0o640), None);
        let other = check(FileKind::Config, 1000, 0o644).unwrap();
        assert!(
            other.contains("uid 1000") && other.contains("chown 999 /etc/signetd/signetd.toml")
        );
        let writable = check(FileKind::Config, 0, 0o664).unwrap();
        assert!(writable.contains("mode 664") && writable.contains("chmod go-w /etc/signetd"));
        assert!(check(FileKind::Config, 0, 0o646).is_some());
        assert_eq!(check(FileKind::Private, 999, 0o600), None);
        assert_eq!(check(FileKind::Private, 0, 0o400), None);
        let readable = check(FileKind::Private, 999, 0o640).unwrap();
        assert!(readable.contains("chmod 600"));
        assert!(check(FileKind::Private, 1000, 0o600).is_some());
    }

    #[test]
    fn state_owned_by_another_user_says_run_as_that_user_not_chown() {
        let p = Path::new("/var/lib/signetd/state");
        // root running `signetd keys list` on the daemon's store, as after README's
        // "Running it": a chown to root would lock the daemon out.
        let root = state_owner_problem(p, 990, 0, Some("signetd")).unwrap();
        assert!(
            root.contains("uid 990 (signetd)")
                && root.contains("runuser -u signetd -- signetd")
                && !root.contains("chown 0"),
            "{root}"
        );
        let unnamed = state_owner_problem(p, 990, 1000, None).unwrap();
        assert!(unnamed.contains("runuser -u USER -- signetd"), "{unnamed}");
        assert_eq!(state_owner_problem(p, 990, 990, Some("signetd")), None);
        assert_eq!(state_owner_problem(p, 0, 990, Some("root")), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\nsignetd:x:990:990::/var/lib/signetd:/usr/sbin/nologin\n";
        assert_eq!(name_in_passwd(passwd, 990).as_deref(), Some("signetd"));
        assert_eq!(name_in_passwd(passwd, 991), None);
    }
}
