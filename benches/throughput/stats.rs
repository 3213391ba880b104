//! Latency samples and what is reported of them.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Every latency of a row, in nanoseconds. Rows are seconds long, so keeping each sample
/// and sorting once is exact and cheap (a few hundred thousand `u64`s at most): no
/// histogram crate is needed.
#[derive(Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Samples {
        Samples(Vec::with_capacity(n))
    }

    pub fn push(&mut self, took: Duration) {
        self.0.push(took.as_nanos() as u64);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The p50, p99 and p999, in microseconds (nearest rank).
    pub fn percentiles(mut self) -> Percentiles {
        self.0.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.0.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
            self.0[rank - 1] as f64 / 1000.0
        };
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Voluntary context switches of every thread of a process so far: each is a thread
/// going to sleep to wait (for a job, a reply, the disk), so their count per request
/// counts the hand-offs between threads on its path. Threads that ended are not counted.
pub fn context_switches(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// CPU time used by a process (user + system), read from `/proc/PID/stat`, in seconds.
/// Linux reports it in clock ticks of 1/100 s (USER_HZ), so a row of a few seconds is
/// measured to about 1%.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `op` in a loop on `threads` threads at once for `duration`, each thread with the
/// state `setup` makes it (untimed), and times each call. Returns every sample and how
/// long the slowest thread ran.
pub fn on_threads<S>(
    threads: usize,
    duration: Duration,
    setup: impl Fn() -> S + Sync,
    op: impl Fn(&mut S) + Sync,
) -> (Samples, Duration) {
    let start = Barrier::new(threads);
    let mut all = Samples::default();
    let mut elapsed = Duration::ZERO;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (start, setup, op) = (&start, &setup, &op);
                scope.spawn(move || {
                    let mut state = setup();
                    let mut samples = Samples::with_capacity(1 << 16);
                    start.wait();
                    let began = Instant::now();
                    while began.elapsed() < duration {
                        let t = Instant::now();
                        op(&mut state);
                        samples.push(t.elapsed());
                    }
                    (samples, began.elapsed())
                })
            })
            .collect();
        for worker in workers {
            let (samples, took) = worker.join().unwrap();
            all.extend(samples);
            elapsed = elapsed.max(took);
        }
    });
    (all, elapsed)
}
