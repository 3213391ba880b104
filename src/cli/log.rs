//! Where the daemon's and the commands' log lines go, and in which format.

use clap::ValueEnum;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, with the fields of the event and of its spans (the
    /// `request` span carries `request_id`), for log shippers.
    Json,
}

/// Lines the daemon's log thread holds while stderr does not take them; past it, new
/// lines are dropped and counted (`signetd_log_lines_dropped_total`). About 5 MiB at the
/// few hundred bytes of a mint's line. `SIGNETD_LOG_BUFFER_LINES` overrides it.
const BUFFERED_LINES: usize = 16 * 1024;

/// [`BUFFERED_LINES`], or `SIGNETD_LOG_BUFFER_LINES` if it is a whole number from 1 to
/// 1,048,576 (a value outside that is reported on stderr and ignored).
fn buffered_lines() -> usize {
    let Ok(value) = std::env::var("SIGNETD_LOG_BUFFER_LINES") else {
        return BUFFERED_LINES;
    };
    match value.parse::<usize>() {
        Ok(lines @ 1..=1_048_576) => lines,
        _ => {
            eprintln!(
                "signetd: SIGNETD_LOG_BUFFER_LINES={value:?} is not a number of lines from 1 to 1048576; holding {BUFFERED_LINES}"
            );
            BUFFERED_LINES
        }
    }
}

/// Bytes gathered into one `write` to stderr when lines come faster than they are
/// written.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Where log lines go: straight to stderr (the commands), or through the daemon's log
/// thread.
pub enum Output {
    /// Each line written to stderr by the thread that logs it, waiting if stderr is
    /// slow: for one-shot commands, whose few lines must come out in order with what
    /// they print.
    Direct,
    /// For the daemon: when stderr is a pipe or a socket (the journal's stream, a log
    /// shipper), lines are handed to a thread of their own that writes them, so a
    /// request never waits for its reader. A journal that stalls (it is one process,
    /// and blocks its writers once its socket's buffer is full) would otherwise stall
    /// every request that logs. Lines past [`BUFFERED_LINES`] (or
    /// `SIGNETD_LOG_BUFFER_LINES`) are dropped and counted
    /// instead of waited for; the audit log, which is what must not be lost, never goes
    /// this way. A file has no reader to wait for, and a terminal is someone watching:
    /// lines go to them directly, in order with everything else written there.
    Daemon,
}

/// Whether stderr is read by another process that can fall behind: a pipe or a socket.
fn stderr_has_a_reader() -> bool {
    rustix::fs::fstat(std::io::stderr()).is_ok_and(|stat| {
        matches!(
            rustix::fs::FileType::from_raw_mode(stat.st_mode),
            rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
        )
    })
}

/// Installs the subscriber: `SIGNETD_LOG` filters (`info`, `signetd=debug`, ...), else
/// `default_level`; lines go to stderr, which systemd's journal collects. With
/// [`Output::Daemon`] the returned guard writes out the lines still held when dropped:
/// keep it until the process ends.
pub fn init(
    format: LogFormat,
    default_level: &str,
    output: Output,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNETD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let (writer, guard) = match output {
        Output::Daemon if stderr_has_a_reader() => {
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(buffered_lines())
                .thread_name("signetd-log")
                .finish(std::io::BufWriter::with_capacity(
                    WRITE_BUFFER_BYTES,
                    std::io::stderr(),
                ));
            let dropped = writer.error_counter();
            signetd::telemetry::count_dropped_log_lines(move || dropped.dropped_lines() as u64);
            (BoxMakeWriter::new(writer), Some(guard))
        }
        Output::Direct | Output::Daemon => (BoxMakeWriter::new(std::io::stderr), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        // Plain text, on a terminal too: the `ansi` feature is left out, as colouring
        // every field costs each request more than anything else in its line.
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    guard
}

/// Writes out the lines the daemon's log thread still holds, waiting at most
/// [`FLUSH_WAIT`]: a reader that has stopped reading must not keep the daemon from
/// exiting. (The guard's own drop waits about a second, then reports on stdout, which
/// under systemd is the same stalled journal: so it is dropped on a thread of its own.)
pub fn flush(guard: tracing_appender::non_blocking::WorkerGuard) {
    let (done, flushed) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("signetd-log-flush".to_string())
        .spawn(move || {
            drop(guard);
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = flushed.recv_timeout(FLUSH_WAIT);
    }
}

/// How long the daemon waits at exit for its log lines to be written.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);
