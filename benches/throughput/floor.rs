//! The physical limits of the run: raw `C_Sign` in-process (cryptoki, no signetd code)
//! on the same token, one small `write` + `fdatasync` on the audit log's disk, and what
//! the machine charges to wake a sleeping thread.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use signetd::Algorithm;

use crate::stats::{Percentiles, Samples, on_threads};

/// Which object `C_Sign` uses: the key as stored in the token, or a copy of it made with
/// `C_CopyObject` and `CKA_TOKEN=false`, which lives in the session and never leaves the
/// token either (SoftHSM2 signs these without re-reading the token object).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Token,
    Session,
}

/// One floor measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Floor {
    pub object: ObjectKind,
    pub threads: usize,
    pub ops_per_s: f64,
    pub latency_us: Percentiles,
}

/// The token the daemon signs with, opened by this process.
pub struct Token {
    ctx: Pkcs11,
    slot: Slot,
    pin: String,
}

impl Token {
    pub fn open(module: &str, label: &str, pin: String) -> Token {
        let ctx = Pkcs11::new(module).unwrap();
        let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| i.label().trim_end() == label)
                    .unwrap_or(false)
            })
            .expect("the bench token's slot");
        Token { ctx, slot, pin }
    }

    /// `threads` threads each sign in a loop for `duration` on a session of their own.
    pub fn floor(
        &self,
        kid: &str,
        algorithm: Algorithm,
        object: ObjectKind,
        threads: usize,
        duration: Duration,
    ) -> Floor {
        let setup = || {
            let session = self.ctx.open_rw_session(self.slot).unwrap();
            // Logged in once per application: later sessions see it already.
            let _ = session.login(UserType::User, Some(&self.pin.clone().into()));
            let stored = session
                .find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(kid.as_bytes().to_vec()),
                ])
                .unwrap()[0];
            let key = match object {
                ObjectKind::Token => stored,
                ObjectKind::Session => session
                    .copy_object(stored, &[Attribute::Token(false)])
                    .unwrap(),
            };
            let (mechanism, data) = mechanism(algorithm);
            (session, key, mechanism, data)
        };
        let sign = |(session, key, mechanism, data): &mut Signing| {
            session.sign(mechanism, *key, data).unwrap();
        };
        let (all, elapsed) = on_threads(threads, duration, setup, sign);
        Floor {
            object,
            threads,
            ops_per_s: all.len() as f64 / elapsed.as_secs_f64(),
            latency_us: all.percentiles(),
        }
    }
}

/// A floor thread's session, key, mechanism and data.
type Signing = (
    cryptoki::session::Session,
    cryptoki::object::ObjectHandle,
    Mechanism<'static>,
    Vec<u8>,
);

/// What signetd hands `C_Sign`: a 32-byte digest for ES256 (hashed on the host), the
/// JWS signing input for EdDSA.
fn mechanism(algorithm: Algorithm) -> (Mechanism<'static>, Vec<u8>) {
    match algorithm {
        Algorithm::Es256 => (Mechanism::Ecdsa, vec![7u8; 32]),
        Algorithm::EdDsa => (
            Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
            b"eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaCIsImF1ZCI6ImFwaSJ9".to_vec(),
        ),
    }
}

/// The disk's latency for a durable append, the limit issue 16 set its targets against:
/// append one record-sized line (300 bytes) to a file in `dir` and `fdatasync` it, back
/// to back. (The audit writer now writes in place: [`fsync_in_place_latency`].)
pub fn fsync_latency(dir: &Path, duration: Duration) -> (Percentiles, usize) {
    fsync_latency_after(dir, duration, Duration::ZERO)
}

/// [`fsync_latency`] with the process asleep for `idle` before each append, as a lone
/// request's fsync comes after a round trip with nothing to do (on a virtual machine an
/// idle vCPU and disk make the next fsync slower). Informational: the targets use the
/// back-to-back figure.
pub fn fsync_latency_after(dir: &Path, duration: Duration, idle: Duration) -> (Percentiles, usize) {
    let path = dir.join("bench-fsync.tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let line = [b'x'; 300];
    let mut samples = Samples::default();
    let began = Instant::now();
    while began.elapsed() < duration {
        if !idle.is_zero() {
            std::thread::sleep(idle);
        }
        let t = Instant::now();
        file.write_all(&line).unwrap();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    let n = samples.len();
    (samples.percentiles(), n)
}

/// The disk's latency for what the audit writer does per batch since the segment runs
/// ahead with zeros (docs/audit.md): write a 300-byte line over zeros already in the
/// file, so the file's size does not change, and `fdatasync` it, back to back.
pub fn fsync_in_place_latency(dir: &Path, duration: Duration) -> (Percentiles, usize) {
    use std::os::unix::fs::FileExt;
    const ZEROED: u64 = 4 << 20;
    let path = dir.join("bench-fsync-in-place.tmp");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .unwrap();
    let zeros = vec![0u8; ZEROED as usize];
    file.write_all_at(&zeros, 0).unwrap();
    file.sync_all().unwrap();
    let line = [b'x'; 300];
    let mut samples = Samples::default();
    let (began, mut at) = (Instant::now(), 0);
    while began.elapsed() < duration {
        if at + line.len() as u64 > ZEROED {
            at = 0; // over earlier lines: still in place
        }
        let t = Instant::now();
        file.write_all_at(&line, at).unwrap();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
        at += line.len() as u64;
    }
    let _ = std::fs::remove_file(&path);
    let n = samples.len();
    (samples.percentiles(), n)
}

/// What this machine charges to hand work to a sleeping thread and get it back: two
/// threads pass a byte back and forth through channels, each asleep while the other
/// runs, and each round trip (two hand-offs, two wake-ups) is timed. A lone request
/// crosses threads several times (`sw/op`); on a virtual machine whose idle vCPUs halt,
/// each crossing pays the hypervisor's wake-up, which no code in signetd contains.
pub fn thread_round_trip(duration: Duration) -> (Percentiles, usize) {
    let (to_echo, echo_rx) = std::sync::mpsc::sync_channel::<u8>(1);
    let (echo_tx, back) = std::sync::mpsc::sync_channel::<u8>(1);
    let echo = std::thread::spawn(move || {
        while let Ok(b) = echo_rx.recv() {
            if echo_tx.send(b).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::default();
    let began = Instant::now();
    while began.elapsed() < duration {
        let t = Instant::now();
        to_echo.send(1).unwrap();
        back.recv().unwrap();
        samples.push(t.elapsed());
    }
    drop(to_echo);
    echo.join().unwrap();
    let n = samples.len();
    (samples.percentiles(), n)
}

/// The guest's halt polling (`cpuidle-haltpoll`'s `guest_halt_poll_ns`), when this is a
/// virtual machine that has it: how long an idle vCPU polls before it halts. At 0 every
/// idle moment halts the vCPU and the next wake-up goes through the hypervisor, which
/// is most of a lone request's latency on such a machine (docs/performance.md).
pub fn guest_halt_poll_ns() -> Option<u64> {
    std::fs::read_to_string("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
        .ok()?
        .trim()
        .parse()
        .ok()
}
