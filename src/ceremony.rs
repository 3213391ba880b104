//! Ceremony transcripts: who did what to which token, and what was created, signed by
//! the attestation CA key so an auditor can check it long afterwards.
//!
//! A transcript file is a JWS in the flattened JSON serialization (RFC 7515 §7.2.2) plus
//! a readable copy: `{"protected", "payload", "signature", "transcript"}`. The protected
//! header carries the CA chain in `x5c`; verification anchors it at the operator's root,
//! checks the signature, and requires the readable copy to equal the signed payload.
//! Ceremonies before the CA exists (token initialization) write a *pending* transcript,
//! without `protected` and `signature`, which the root ceremony signs once the CA exists.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::attest::{self, AttestationCa, signed};
use crate::hsm::{Hsm, TokenIdentity};
use crate::util::{b64, unb64};

/// The `typ` of a transcript's protected header.
pub const TRANSCRIPT_TYP: &str = "signetd-transcript+json";

/// The operator who ran a ceremony, as the system reports them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Operator {
    /// `$SUDO_USER`, `$USER` or `$LOGNAME`, else the uid's name in `/etc/passwd`.
    pub user: String,
    /// The effective uid.
    pub uid: u32,
    /// The host name.
    pub host: String,
}

impl Operator {
    /// The operator of this process.
    pub fn current() -> Self {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
        let from_passwd = || {
            let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                (fields.nth(1)? == uid.to_string()).then(|| name.to_string())
            })
        };
        let user = ["SUDO_USER", "USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .or_else(from_passwd)
            .unwrap_or_else(|| "unknown".to_string());
        Operator {
            user,
            uid,
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_or_else(|_| "unknown".to_string(), |h| h.trim().to_string()),
        }
    }
}

/// Something a ceremony created or changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Created {
    /// What it is: `attestation-ca-certificate`, `issuer-key`, `key-state`, ...
    pub kind: String,
    /// Its identity: a kid, a subject, a token label.
    pub id: String,
    /// SHA-256 (hex) of its certificate or public key, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Anything else worth recording.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What a ceremony did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Transcript {
    /// Format version: 1.
    pub version: u32,
    /// Which ceremony: `init-token`, `root`, `issuer-key`, `rotate`, `retire`.
    pub ceremony: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// RFC 3339 end time.
    pub finished_at: String,
    /// Who ran it.
    pub operator: Operator,
    /// The token it acted on.
    pub token: TokenIdentity,
    /// What was created or changed.
    pub created: Vec<Created>,
    /// `completed`, or what failed.
    pub outcome: String,
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Transcript {
    /// Starts a transcript of `ceremony` on `token`.
    pub fn start(ceremony: &str, token: &TokenIdentity) -> Self {
        let started = now();
        Transcript {
            version: 1,
            ceremony: ceremony.to_string(),
            started_at: started.clone(),
            finished_at: started,
            operator: Operator::current(),
            token: token.clone(),
            created: Vec::new(),
            outcome: "completed".to_string(),
        }
    }

    /// Records the end and the outcome.
    pub fn finish(mut self, outcome: Result<(), String>) -> Self {
        self.finished_at = now();
        if let Err(why) = outcome {
            self.outcome = format!("failed: {why}");
        }
        self
    }
}

fn payload_of(transcript: &Transcript) -> Vec<u8> {
    serde_json::to_vec(transcript).expect("a transcript serializes")
}

fn write(path: &Path, value: &Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).expect("serializes") + "\n";
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes a transcript, signed by the CA if one is given, else pending.
pub async fn write_transcript(
    path: &Path,
    transcript: &Transcript,
    signer: Option<(&Hsm, &AttestationCa)>,
) -> Result<(), String> {
    let payload = payload_of(transcript);
    let mut file = json!({"payload": b64(&payload), "transcript": transcript});
    if let Some((hsm, ca)) = signer {
        let (protected, signature) = sign(hsm, ca, &payload).await?;
        file["protected"] = json!(protected);
        file["signature"] = json!(signature);
    }
    write(path, &file)
}

async fn sign(hsm: &Hsm, ca: &AttestationCa, payload: &[u8]) -> Result<(String, String), String> {
    let parts = signed::sign(
        hsm,
        attest::ca::signing_key(ca),
        TRANSCRIPT_TYP,
        &ca.chain,
        &[],
        payload,
    )
    .await
    .map_err(|e| format!("cannot sign the transcript: {e}"))?;
    Ok((parts.protected, parts.signature))
}

/// The `kind` of the [`Created`] entry naming the attestation CA key a root ceremony
/// made (its `sha256` is that of the public key).
pub const CA_KEY_KIND: &str = "attestation-ca-key";

/// The `kind` of a [`Created`] issuer key (its `id` the kid, its `sha256` that of the
/// key's attestation certificate).
pub const ISSUER_KEY_KIND: &str = "issuer-key";

/// The `kind` of the [`Created`] entry naming an uncertified attestation CA key that
/// `attest init-ca --undo` destroyed (its `sha256` is that of the public key).
pub const CA_KEY_DESTROYED_KIND: &str = "attestation-ca-key-destroyed";

/// SHA-256 (lowercase hex) of a CA public key, as transcripts name it.
pub fn ca_key_sha256(public_key: &[u8]) -> String {
    use sha2::Digest;
    crate::util::hex(&sha2::Sha256::digest(public_key))
}

/// The attestation CA key a transcript says its ceremony made, if that is not the key
/// of `ca`: such a transcript belongs to a CA key since destroyed (`init-ca --undo`),
/// and `ca` signing it would present that key as its own.
pub fn other_ca_key<'a>(transcript: &'a Transcript, ca: &AttestationCa) -> Option<&'a str> {
    let own = ca_key_sha256(&ca.public_key);
    transcript
        .created
        .iter()
        .filter(|c| c.kind == CA_KEY_KIND)
        .filter_map(|c| c.sha256.as_deref())
        .find(|named| *named != own)
}

/// A pending transcript file, read and checked.
pub struct PendingFile {
    /// The file's JSON.
    pub file: Value,
    /// The payload, as written.
    pub payload: Vec<u8>,
    /// The payload, parsed.
    pub transcript: Transcript,
}

/// Reads a pending transcript file; `None` if it is already signed.
pub fn read_pending(path: &Path) -> Result<Option<PendingFile>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    if file.get("signature").is_some() {
        return Ok(None);
    }
    let payload = file["payload"]
        .as_str()
        .and_then(unb64)
        .ok_or_else(|| format!("{} has no payload", path.display()))?;
    let transcript: Transcript = serde_json::from_slice(&payload)
        .map_err(|e| format!("{}: the payload is not a transcript: {e}", path.display()))?;
    if file["transcript"] != serde_json::to_value(&transcript).expect("serializes") {
        return Err(format!(
            "{}: the readable copy differs from the payload; not signing",
            path.display()
        ));
    }
    Ok(Some(PendingFile {
        file,
        payload,
        transcript,
    }))
}

/// Signs a pending transcript in place. Returns false if it was already signed.
pub async fn sign_pending(path: &Path, hsm: &Hsm, ca: &AttestationCa) -> Result<bool, String> {
    let Some(PendingFile {
        mut file,
        payload,
        transcript,
    }) = read_pending(path)?
    else {
        return Ok(false);
    };
    // Only ceremonies that necessarily ran before the CA was certified, on this token
    // (initializing it, the root ceremony's CSR step, and undoing an uncertified CA
    // key), are signed after the fact: anything else would let whoever can write the
    // transcript directory obtain a CA signature on content of their choosing.
    if !matches!(
        transcript.ceremony.as_str(),
        "init-token" | "root" | "root-undo"
    ) || &transcript.token != hsm.token()
    {
        return Err(format!(
            "{}: only pending init-token, root and root-undo transcripts of this token are signed after the fact (this is {} on {:?})",
            path.display(),
            transcript.ceremony,
            transcript.token.label
        ));
    }
    if let Some(named) = other_ca_key(&transcript, ca) {
        return Err(format!(
            "{}: not signing: it records attestation CA key sha256 {named}, not this CA's key \
             (sha256 {}); that key was destroyed (attest init-ca --undo), and this CA must not \
             sign its record as its own. It stays pending; keep it as the record it is",
            path.display(),
            ca_key_sha256(&ca.public_key)
        ));
    }
    let (protected, signature) = sign(hsm, ca, &payload)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file["protected"] = json!(protected);
    file["signature"] = json!(signature);
    write(path, &file)?;
    Ok(true)
}

/// Verifies a transcript file against the operator's root and returns the transcript.
pub fn verify(text: &str, root_der: &[u8]) -> Result<Transcript, String> {
    let file: Value =
        serde_json::from_str(text).map_err(|e| format!("the transcript is not JSON: {e}"))?;
    let field = |name: &str| file.get(name).and_then(Value::as_str);
    let payload_b64 = field("payload").ok_or("the transcript has no payload")?;
    let (Some(protected), Some(signature)) = (field("protected"), field("signature")) else {
        return Err("transcript is unsigned (pending): sign it with `signetd ceremony sign` once the CA exists".to_string());
    };
    let jws = signed::JwsParts {
        protected: protected.to_string(),
        payload: payload_b64.to_string(),
        signature: signature.to_string(),
    };
    let verified = signed::verify(&jws, TRANSCRIPT_TYP, root_der, SystemTime::now())?;
    // Any certificate under the root has a key; only the attestation CA's may sign
    // transcripts. Without this check, an issuer key (whose raw-signing callers can sign
    // arbitrary bytes) could vouch for a forged transcript.
    if !attest::verify::is_attestation_ca(&verified.certificates[0]) {
        return Err("the transcript is not signed by an attestation CA certificate".to_string());
    }
    let payload = verified.payload;
    let transcript: Transcript = serde_json::from_slice(&payload)
        .map_err(|e| format!("the signed payload is not a transcript: {e}"))?;
    if file.get("transcript") != Some(&serde_json::to_value(&transcript).expect("serializes")) {
        return Err("readable copy differs from the signed payload".to_string());
    }
    Ok(transcript)
}
