//! Checkpoints as C2SP tlog-checkpoint notes (`ORIGIN\nSIZE\nROOT\n`), signed as C2SP
//! signed notes with Ed25519 (signature type 0x01, which every note verifier supports).
//!
//! The note format and its verification are the `signed_note` crate's (a port of Go's
//! `golang.org/x/mod/sumdb/note`); the signature itself is made in the token, so the
//! writer assembles the note from it here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use signed_note::{Note, Signature, StandardVerifier, VerifierList};
use tlog_tiles::Hash;

/// The algorithm byte of an Ed25519 note key (C2SP signed-note).
const ED25519: u8 = 0x01;

/// The origin line of log `log_id`'s checkpoints, which is also the name of the note
/// key that signs them. One per log: replicas keep logs of their own.
pub fn origin(log_id: &str) -> String {
    format!("signetd-audit/{log_id}")
}

/// What a checkpoint states: the tree of log `origin` has `size` leaves and this root.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeHead {
    /// The log ([`origin`]).
    pub origin: String,
    /// Records covered: those with `seq` below it.
    pub size: u64,
    /// The RFC 6962 root hash.
    pub root: Hash,
}

impl TreeHead {
    /// The note text (C2SP tlog-checkpoint, no extension lines).
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.0)
        )
    }

    /// Reads a checkpoint body: origin, decimal size, base64 root, then any extension
    /// lines (ignored).
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(text).map_err(|_| "the checkpoint is not UTF-8")?;
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err("a checkpoint has an origin, a size and a root hash".into());
        };
        if origin.is_empty() || !text.ends_with('\n') {
            return Err("a checkpoint has an origin, a size and a root hash".into());
        }
        let well_formed = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size = size
            .parse()
            .ok()
            .filter(|_| well_formed)
            .ok_or_else(|| format!("the checkpoint's size {size:?} is not a decimal number"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or("the checkpoint's root hash is not 32 bytes of base64")?;
        Ok(TreeHead {
            origin: origin.to_string(),
            size,
            root: Hash(root),
        })
    }
}

/// The note verifier key of Ed25519 key `public_key` under `name`:
/// `name+KEYID+base64(0x01 || key)`.
pub fn verifier_key(name: &str, public_key: &[u8]) -> String {
    let key = typed(public_key);
    format!(
        "{name}+{:08x}+{}",
        signed_note::key_id(name, &key),
        STANDARD.encode(&key)
    )
}

/// An Ed25519 key as signed notes encode it: its algorithm byte, then the key. Its
/// key id is computed over these bytes.
fn typed(public_key: &[u8]) -> Vec<u8> {
    [&[ED25519], public_key].concat()
}

/// The signed note: `text`, then the signature line of key `public_key` under `name`.
pub fn signed(text: &str, name: &str, public_key: &[u8], signature: Vec<u8>) -> String {
    let key = typed(public_key);
    let assembled = Signature::new(name.to_string(), signed_note::key_id(name, &key), signature)
        .and_then(|signature| Note::new(text.as_bytes(), &[signature]));
    let note = assembled.expect("a checkpoint text and an Ed25519 signature form a note");
    String::from_utf8(note.to_bytes()).expect("a note is UTF-8")
}

/// The text of signed note `note`: up to and including the line before the blank line
/// that starts its signatures. Not verified: for reading a note already checked.
pub fn text_of(note: &str) -> &[u8] {
    let end = note.find("\n\n").map_or(note.len(), |i| i + 1);
    &note.as_bytes()[..end]
}

/// Opens signed note `note` with verifier key `vkey`: the checkpoint it states, if that
/// key signed it.
pub fn open(note: &[u8], vkey: &str) -> Result<TreeHead, String> {
    let verifier =
        StandardVerifier::new(vkey).map_err(|e| format!("the verifier key {vkey:?}: {e}"))?;
    let parsed = Note::from_bytes(note).map_err(|e| format!("not a signed note: {e}"))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| format!("the checkpoint's signature does not verify: {e}"))?;
    TreeHead::parse(parsed.text())
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn head() -> TreeHead {
        TreeHead {
            origin: origin("abc"),
            size: 12,
            root: Hash([7; 32]),
        }
    }

    #[test]
    fn a_note_signed_here_opens_with_its_verifier_key_and_no_other() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let public = key.verifying_key().to_bytes();
        let name = origin("abc");
        let text = head().text();
        let note = signed(&text, &name, &public, key.sign(text.as_bytes()).to_vec());
        assert!(note.starts_with("signetd-audit/abc\n12\nBwcH"), "{note}");
        // The crate's own encoding of the same key.
        let vkey = verifier_key(&name, &public);
        assert_eq!(
            vkey,
            signed_note::new_ed25519_verifier_key(&name, &key.verifying_key())
        );
        assert_eq!(open(note.as_bytes(), &vkey), Ok(head()));

        let other = SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes();
        assert!(open(note.as_bytes(), &verifier_key(&name, &other)).is_err());
        let changed = note.replacen("\n12\n", "\n13\n", 1);
        assert!(open(changed.as_bytes(), &vkey).is_err());
    }

    #[test]
    fn malformed_checkpoint_bodies_are_refused() {
        for bad in [
            "",
            "o\n",
            "o\n12\n",
            "o\n012\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "o\n12\nBwcH\n",
            "o\n12\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
        ] {
            assert!(TreeHead::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let extended = head().text() + "extension\n";
        assert_eq!(TreeHead::parse(extended.as_bytes()), Ok(head()));
    }
}
