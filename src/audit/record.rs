//! What one audit record says, and the exact line it is written as.
//!
//! A record is one line of JSON with its fields in a fixed order; absent fields are
//! left out. The chain is over the line's exact bytes (without the newline), so a
//! verifier needs no canonical form: `prev` is the lowercase hex SHA-256 of the previous
//! line as it stands in the file.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::Principal;

/// `prev` of the first record of a log.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The first record of a log: carries its random `log_id`.
    Genesis,
    /// The first record of every later segment: the log id and segment number.
    SegmentStart,
    /// A signed statement of the chain's head.
    Checkpoint,
    /// The writer found a torn record at the end of the log and removed it.
    Recovered,
    /// Writes work again after failing; says how many records were refused meanwhile.
    Resumed,
    /// The daemon started.
    Start,
    /// The daemon stopped.
    Stop,
    /// A JWT was minted (`POST /v1/tokens`).
    Mint,
    /// Bytes were signed (`POST /v1/sign`).
    Sign,
    /// A single-use verification consumed (or was refused) a jti.
    Verify,
    /// A signing or admin request was refused; `code` says why.
    Refused,
    /// Refusals of one caller whom no policy names, over one interval, folded into one
    /// record: `count`, `codes`, `requests`, `since`, `until` (see `docs/audit.md`).
    RefusedAggregate,
    /// An issuer's first key was generated: by an admin, or outside the daemon (the CLI;
    /// seen at the next re-read, `detail` naming who from the state store's history).
    KeyGenerate,
    /// A pending successor key was generated: by an admin, by the rotation period, or
    /// outside the daemon (as for [`Event::KeyGenerate`]).
    KeyRotate,
    /// A pending key became active.
    KeyActivate,
    /// A key was retired.
    KeyRetire,
    /// A retired key left the JWKS.
    KeyArchive,
    /// A key was revoked.
    KeyRevoke,
    /// A token was revoked by jti.
    TokenRevoke,
    /// A key changed state outside the daemon (the CLI, another process). Keys that
    /// appear are recorded as generated ([`Event::KeyGenerate`], [`Event::KeyRotate`]).
    KeyObserved,
    /// A key is gone from a readable token (its private key deleted); it stays published
    /// from the last good view until every token it signed has expired. Also written at
    /// start for each key the state store has and the token does not.
    KeyMissing,
    /// At start: the token holds a signetd key pair the state store does not know (an
    /// interrupted generation, or a store that is not this token's). It is neither used
    /// nor published until `signetd keys finish` or `destroy-incomplete`.
    KeyUnknown,
    /// At start: state that an earlier version kept as objects in the token (key
    /// records, certificates, token revocations) was moved into the state store; `detail`
    /// says what, and what was left.
    StateImport,
    /// The token failed with a device or token error; `detail` names the PKCS#11
    /// function and return value. Requests are refused until `hsm_recovered`.
    HsmOutage,
    /// The library was re-initialized and the token and its keys found again after an
    /// `hsm_outage`; signing resumed.
    HsmRecovered,
    /// The daemon was asked to reload its config (SIGHUP): `ok` with what changed and
    /// the file's SHA-256 in `detail`, or `refused` with a `code` (`config_invalid`,
    /// `restart_required`) and why; a refused reload leaves the running config as it was.
    ConfigReload,
    /// The daemon read its TLS files again (SIGHUP, or a change found by
    /// `tls.reload_check_seconds`): `ok` with the new leaf certificate's SHA-256 in
    /// `detail`, or `refused` with `code` `tls_files_invalid` and why; a refused reload
    /// leaves the certificate in use as it was.
    TlsReload,
    /// State that went backwards was found and moved forward: a key the state store
    /// showed behind a state this log records (`kid`, `detail`: both states and the
    /// record that witnessed the later one), or a token revocation (`jti`) the store
    /// had lost. The store was restored from an older backup, or tampered with.
    StateRollback,
}

/// Whether the action happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It was refused; `code` is the stable error code the caller got.
    Refused,
}

/// Who asked, as the transport established it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case")]
pub enum CallerRecord {
    /// A local process on the Unix socket.
    Unix {
        /// Peer uid.
        uid: u32,
        /// Peer primary gid.
        gid: u32,
        /// Peer pid, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
    },
    /// A remote peer that presented a verified client certificate.
    Tls {
        /// Its address, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
        /// The certificate's SPIFFE ID, if it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        spiffe_id: Option<String>,
        /// The certificate's DNS names.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        dns: Vec<String>,
        /// Lowercase hex SHA-256 of the certificate's DER.
        cert_sha256: String,
    },
    /// An unauthenticated TCP peer.
    Tcp {
        /// Its address, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        addr: Option<String>,
    },
    /// The daemon itself (`lifecycle`, `daemon`).
    Internal {
        /// Which part.
        name: String,
    },
}

impl CallerRecord {
    /// The daemon's own part `name`.
    pub fn internal(name: &str) -> Self {
        CallerRecord::Internal {
            name: name.to_string(),
        }
    }
}

impl From<&Principal> for CallerRecord {
    fn from(caller: &Principal) -> Self {
        match caller {
            Principal::Local(p) => CallerRecord::Unix {
                uid: p.uid,
                gid: p.gid,
                pid: p.pid,
            },
            Principal::Remote { addr, certificate } => CallerRecord::Tls {
                addr: addr.map(|a| a.to_string()),
                spiffe_id: certificate.spiffe_id.clone(),
                dns: certificate.dns_names.clone(),
                cert_sha256: crate::util::hex(&certificate.sha256),
            },
            Principal::Anonymous(addr) => CallerRecord::Tcp {
                addr: addr.map(|a| a.to_string()),
            },
        }
    }
}

/// What a caller of the log supplies; the writer adds `seq`, `time` and `prev`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What happened.
    pub event: Event,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<CallerRecord>,
    /// The request, for refusals: `POST /v1/tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The issuer (config name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The token's jti.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Lowercase hex SHA-256 of the exact compact token string (mint, verify), or of the
    /// message signed by `POST /v1/sign` (for a `digest` request, that digest itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Lowercase hex SHA-256 of a raw signature as returned (`POST /v1/sign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_sha256: Option<String>,
    /// Whether it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The stable error code of a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Free text: what changed, why it was refused. Never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How many refusals a `refused_aggregate` record folds together; how many single
    /// uses a `state_rollback` record put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A `refused_aggregate` record's error codes, each with its number of refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes: Option<BTreeMap<String, u64>>,
    /// A `refused_aggregate` record's requests (method and path), each with its number
    /// of refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, u64>>,
    /// Start of the interval a `refused_aggregate` record covers, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// End of that interval (or the stop, if the daemon stopped first), RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Entry {
    /// An entry for `event` with nothing else set.
    pub fn new(event: Event) -> Self {
        Entry {
            event,
            caller: None,
            request: None,
            issuer: None,
            kid: None,
            jti: None,
            token_sha256: None,
            signature_sha256: None,
            outcome: None,
            code: None,
            detail: None,
            count: None,
            codes: None,
            requests: None,
            since: None,
            until: None,
        }
    }

    /// Sets the caller.
    pub fn caller(mut self, caller: impl Into<CallerRecord>) -> Self {
        self.caller = Some(caller.into());
        self
    }

    /// Sets the issuer.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.to_string());
        self
    }

    /// Sets the key id.
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_string());
        self
    }

    /// Sets the outcome to `ok`.
    pub fn ok(mut self) -> Self {
        self.outcome = Some(Outcome::Ok);
        self
    }

    /// Sets the outcome to `refused` with the error's code and message.
    pub fn refused(mut self, code: &str, detail: impl fmt::Display) -> Self {
        self.outcome = Some(Outcome::Refused);
        self.code = Some(code.to_string());
        self.detail = Some(detail.to_string());
        self
    }

    /// Sets the detail.
    pub fn detail(mut self, detail: impl fmt::Display) -> Self {
        self.detail = Some(detail.to_string());
        self
    }
}

/// The JSON members of `value` (an object), each followed by a comma: what goes between
/// a record's `time` and `prev`.
fn members<T: Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string(value).expect("records always serialize");
    debug_assert!(text.starts_with('{') && text.ends_with('}'));
    text.pop();
    text.remove(0);
    if !text.is_empty() {
        text.push(',');
    }
    text
}

impl Entry {
    /// This entry's members for [`line()`]. Callers serialize their own entries, so the
    /// writer's thread only assembles lines and hashes them.
    pub fn members(&self) -> String {
        members(self)
    }
}

/// What genesis, segment-start and checkpoint records carry beyond an entry.
#[derive(Default, Serialize)]
pub struct Extras<'a> {
    /// See [`Record::log_id`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_id: Option<&'a str>,
    /// See [`Record::segment`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<u64>,
    /// See [`Record::checkpoint`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<&'a str>,
    /// See [`Record::note`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
    /// See [`Record::x5c`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x5c: Option<&'a [String]>,
}

impl Extras<'_> {
    /// These members for [`line()`].
    pub fn members(&self) -> String {
        members(self)
    }
}

/// Writes the line of record `seq` onto `out` (no newline): the same bytes as
/// [`Record::to_line`] for a record of `replica` whose members are `members`.
pub fn line(
    out: &mut String,
    seq: u64,
    time: &str,
    replica: Option<&str>,
    members: &str,
    prev: &str,
) {
    use std::fmt::Write;
    let _ = write!(out, "{{\"seq\":{seq},\"time\":\"{time}\",");
    if let Some(replica) = replica {
        // A validated replica name is letters, digits, '.', '_' and '-': nothing JSON
        // would escape.
        let _ = write!(out, "\"replica\":\"{replica}\",");
    }
    let _ = write!(out, "{members}\"prev\":\"{prev}\"}}");
}

/// One line of the log, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, from 0 (the genesis record), never reused.
    pub seq: u64,
    /// When the writer wrote it, RFC 3339 UTC.
    pub time: String,
    /// The replica that wrote it (`[replica] name`), when it has a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// The content.
    #[serde(flatten)]
    pub entry: Entry,
    /// The log's random id (genesis and segment starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
    /// The segment number (genesis and segment starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<u64>,
    /// A checkpoint's compact JWS, in logs written before signetd 0.2 (ES256 audit
    /// keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    /// A checkpoint: a C2SP signed note of the tree of every record before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A checkpoint's audit key certificate chain (standard base64 DER), its own first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    /// SHA-256 of the previous line, or [`GENESIS_PREV`].
    pub prev: String,
}

impl Record {
    /// The line (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a record always serializes")
    }
}

/// The chain hash of a line: lowercase hex SHA-256 of its bytes, newline excluded.
pub fn line_hash(line: &[u8]) -> String {
    crate::util::hex(&Sha256::digest(line))
}

/// The checkpoint JWS payload of logs written before signetd 0.2: the head of the
/// chain, signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointClaims {
    /// The log it belongs to.
    pub log_id: String,
    /// The last record it covers: the one right before the checkpoint record.
    pub seq: u64,
    /// SHA-256 of that record's line, which is also the checkpoint record's `prev`.
    pub head: String,
    /// When it was signed, RFC 3339 UTC.
    pub time: String,
}

/// The `typ` of a checkpoint's protected header.
pub const CHECKPOINT_TYP: &str = "signetd-audit-checkpoint+json";

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer assembles lines from members; they must be exactly what serializing
    /// the whole record gives, which is what readers parse.
    #[test]
    fn assembled_lines_equal_serialized_records() {
        let mut entry = Entry::new(Event::Mint)
            .caller(CallerRecord::Unix {
                uid: 1,
                gid: 2,
                pid: Some(3),
            })
            .issuer("auth")
            .kid("auth-1")
            .refused("x_y", "quote \" and \\ and \n");
        entry.jti = Some("j".into());
        entry.count = Some(5);
        entry.codes = Some([("b".to_string(), 2), ("a".to_string(), 3)].into());
        entry.requests = Some([("POST /v1/tokens".to_string(), 5)].into());
        entry.since = Some("2026-11-22T00:00:00Z".into());
        entry.until = Some("2026-11-22T00:01:00Z".into());
        let record = Record {
            seq: 7,
            time: "2026-11-22T00:00:00Z".into(),
            replica: Some("replica-a.example".into()),
            entry: entry.clone(),
            log_id: Some("abc".into()),
            segment: Some(2),
            checkpoint: Some("a.b.c".into()),
            note: Some("o\n1\nh\n\n\u{2014} o k\n".into()),
            x5c: Some(vec!["MIIB".into()]),
            prev: GENESIS_PREV.into(),
        };
        let extras = Extras {
            log_id: Some("abc"),
            segment: Some(2),
            checkpoint: Some("a.b.c"),
            note: record.note.as_deref(),
            x5c: record.x5c.as_deref(),
        };
        let mut assembled = String::new();
        let members = entry.members() + &extras.members();
        line(
            &mut assembled,
            7,
            &record.time,
            record.replica.as_deref(),
            &members,
            GENESIS_PREV,
        );
        assert_eq!(assembled, record.to_line());
        let parsed: Record = serde_json::from_str(&assembled).unwrap();
        assert_eq!(parsed, record);
    }
}
