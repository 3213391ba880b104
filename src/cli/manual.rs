//! `signetd man` and `signetd completions`: manual pages and shell completions made
//! from the same clap definitions that parse the command line, so they cannot drift
//! from it. The Debian package runs these on the binary it ships (scripts/package.sh).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;
use clap_mangen::Man;

/// Sections of `signetd(1)` that clap knows nothing of, in roff.
const EXTRA_SECTIONS: &str = r#".SH ENVIRONMENT
.TP
\fBSIGNETD_CONFIG\fR
The config file when \fB\-\-config\fR is not given (default \fI/etc/signetd/signetd.toml\fR).
.TP
\fBSIGNETD_SOCKET\fR, \fBSIGNETD_SOCKET_OWNER\fR
The daemon's socket for client commands when neither \fB\-\-socket\fR nor \fB\-\-config\fR gives it (default \fI/run/signetd/signetd.sock\fR), and who must listen on it.
.TP
\fBSIGNETD_STORE_URL\fR
The state store's connection string; overrides \fBstore.url\fR and \fBstore.url_file\fR.
.TP
\fBSIGNETD_LOG\fR
Log filter, such as \fBinfo\fR or \fBdebug\fR. Logs go to stderr; tokens and PINs never appear in them.
.TP
\fBSOFTHSM2_CONF\fR
With SoftHSM2: its configuration, which says where the token is.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting connections, finish in-flight requests (up to 10 s), exit.
.TP
\fBSIGHUP\fR
Reload (\fBsystemctl reload signetd\fR, which runs \fBsignetd config check\fR first).
.SH FILES
.TP
\fI/etc/signetd/signetd.toml\fR
The config. Check it with \fBsignetd config check\fR.
.TP
\fI/run/signetd/signetd.sock\fR
The Unix socket issuers call.
.TP
\fI/var/lib/signetd/audit\fR, \fI/var/lib/signetd/state\fR
The audit log and the state store.
.TP
\fI/usr/share/signetd/ceremony\fR
The key ceremony scripts (Debian package).
.SH SEE ALSO
\fBsystemd.exec\fR(5), \fBsofthsm2\-util\fR(1), \fBpkcs11\-tool\fR(1); /usr/share/doc/signetd
"#;

/// Writes the completion script for `shell` to stdout.
pub fn completions(mut command: Command, shell: Shell) -> Result<(), String> {
    // Into memory first: clap_complete panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "signetd", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the completions: {e}"))
}

/// With `out`, writes `signetd.1` and one page per subcommand (`signetd-keys-rotate.1`
/// and so on) into that directory and lists them on stdout; without, writes
/// `signetd.1` to stdout.
pub fn man(command: Command, out: Option<&Path>) -> Result<(), String> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let Some(dir) = out else {
        let mut stdout = std::io::stdout().lock();
        return top_page(&command, &mut stdout)
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write the manual page: {e}"));
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("--out {}: {e}", dir.display()))?;
    let fail = |e: std::io::Error| format!("cannot write manual pages into {}: {e}", dir.display());
    let top = dir.join("signetd.1");
    let mut file = std::fs::File::create(&top).map_err(fail)?;
    top_page(&command, &mut file).map_err(fail)?;
    let mut written = vec![top];
    for sub in command.get_subcommands() {
        sub_pages(sub, dir, &mut written).map_err(fail)?;
    }
    let mut stdout = std::io::stdout().lock();
    for path in written {
        writeln!(stdout, "{}", path.display())
            .map_err(|e| format!("cannot list the manual pages: {e}"))?;
    }
    Ok(())
}

/// `signetd.1`: clap's sections, then [`EXTRA_SECTIONS`] before the version.
fn top_page(command: &Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = Man::new(command.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.write_all(EXTRA_SECTIONS.as_bytes())?;
    man.render_version_section(w)
}

/// A page for `command` (a built subcommand, whose name clap has made
/// `signetd-keys-rotate` and so on) and each of its own subcommands, noting each file
/// in `written`.
fn sub_pages(command: &Command, dir: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if command.is_hide_set() {
        return Ok(());
    }
    let page = Man::new(command.clone()).source(format!("signetd {}", env!("CARGO_PKG_VERSION")));
    written.push(page.generate_to(dir)?);
    for sub in command.get_subcommands() {
        sub_pages(sub, dir, written)?;
    }
    Ok(())
}
