//! The audit log as a transparency log (issue 15), checked by an implementation that is
//! not signetd's: tlogcheck (tests/interop/tlogcheck), Go's golang.org/x/mod/sumdb/note
//! and sumdb/tlog.
//!
//! The `interop_checker_` tests show tlogcheck itself accepts what it should and refuses
//! what it should, on RFC 6962 trees and C2SP signed notes built here by hand from the
//! specifications (no token, no signetd code).

use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{tlogcheck, tlogcheck_with_key};

type Hash = [u8; 32];

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

// ---------------------------------------------------------------- RFC 6962, by hand

/// RFC 6962 2.1: the leaf hash, SHA-256(0x00 || leaf).
fn leaf_hash(leaf: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0x00])
        .chain_update(leaf)
        .finalize()
        .into()
}

/// RFC 6962 2.1: an interior node's hash, SHA-256(0x01 || left || right).
fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0x01])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: usize) -> usize {
    assert!(n > 1);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 2.1: MTH(D[n]), the root of the tree of `leaves` (as leaf hashes).
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// RFC 6962 2.1.1: PATH(m, D[n]), the inclusion proof of leaf `m`.
fn inclusion_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    assert!(m < n);
    if n == 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut path = inclusion_path(m, &leaves[..k]);
        path.push(mth(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_path(m - k, &leaves[k..]);
        path.push(mth(&leaves[..k]));
        path
    }
}

/// RFC 6962 2.1.2: PROOF(m, D[n]), the consistency proof of the first `m` leaves.
fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = split(n);
        if m <= k {
            let mut proof = subproof(m, &leaves[..k], whole);
            proof.push(mth(&leaves[k..]));
            proof
        } else {
            let mut proof = subproof(m - k, &leaves[k..], false);
            proof.push(mth(&leaves[..k]));
            proof
        }
    }
    assert!(0 < m && m <= leaves.len());
    subproof(m, leaves, true)
}

// ---------------------------------------------------------------- C2SP signed notes

/// An Ed25519 note key: C2SP signed-note, signature type 0x01.
struct NoteKey {
    name: String,
    key: ed25519_dalek::SigningKey,
}

impl NoteKey {
    fn new(name: &str) -> NoteKey {
        NoteKey {
            name: name.to_string(),
            key: ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        }
    }

    /// 0x01 || the 32-byte public key.
    fn typed_public(&self) -> Vec<u8> {
        let mut typed = vec![0x01];
        typed.extend_from_slice(self.key.verifying_key().as_bytes());
        typed
    }

    /// The key ID: the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).
    fn key_id(&self) -> [u8; 4] {
        let digest = Sha256::new()
            .chain_update(self.name.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.typed_public())
            .finalize();
        digest[..4].try_into().unwrap()
    }

    /// The verifier key, `name+hex(key ID)+base64(0x01 || public key)`.
    fn verifier_key(&self) -> String {
        format!(
            "{}+{}+{}",
            self.name,
            hex(&self.key_id()),
            b64(&self.typed_public())
        )
    }

    /// The signed note of `text` (which ends with a newline): the text, a blank line, and
    /// `— NAME BASE64(key ID || signature)`.
    fn sign(&self, text: &str) -> String {
        use ed25519_dalek::Signer;
        assert!(text.ends_with('\n'));
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.key_id().to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        format!("{text}\n\u{2014} {} {}\n", self.name, b64(&blob))
    }
}

const ORIGIN: &str = "signetd.test/interop";

/// A C2SP tlog-checkpoint body: origin, tree size, base64 root hash.
fn checkpoint_text(origin: &str, size: usize, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", b64(root))
}

/// A log of `n` records, built by hand: the record lines (without newlines) and their
/// leaf hashes.
fn log_of(n: usize, tag: &str) -> (Vec<String>, Vec<Hash>) {
    let records: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"seq":{i},"event":"mint","jti":"{tag}-{i}","note":"é—🔑"}}"#))
        .collect();
    let leaves = records.iter().map(|r| leaf_hash(r.as_bytes())).collect();
    (records, leaves)
}

fn inclusion_bundle(key: &NoteKey, records: &[String], leaves: &[Hash], index: usize) -> Value {
    let checkpoint = key.sign(&checkpoint_text(ORIGIN, leaves.len(), &mth(leaves)));
    json!({
        "record": records[index],
        "index": index,
        "tree_size": leaves.len(),
        "proof": inclusion_path(index, leaves).iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "checkpoint": checkpoint,
        "verifier_key": key.verifier_key(),
    })
}

fn consistency_bundle(key: &NoteKey, leaves: &[Hash], old: usize) -> Value {
    json!({
        "old_checkpoint": key.sign(&checkpoint_text(ORIGIN, old, &mth(&leaves[..old]))),
        "new_checkpoint": key.sign(&checkpoint_text(ORIGIN, leaves.len(), &mth(leaves))),
        "proof": consistency_proof(old, leaves).iter().map(|h| b64(h)).collect::<Vec<_>>(),
        "verifier_key": key.verifier_key(),
    })
}

/// Flips one bit of the base64 hash `proof[i]` of `bundle`.
fn flip_proof_hash(bundle: &mut Value, i: usize) {
    let mut hash = b64_decode(bundle["proof"][i].as_str().unwrap());
    hash[7] ^= 0x10;
    bundle["proof"][i] = json!(b64(&hash));
}

/// `what` must be refused by tlogcheck `mode`, with a reason containing `reason`.
#[track_caller]
fn refused(mode: &str, what: &str, bundle: &Value, reason: &str) {
    match tlogcheck(mode, bundle) {
        Ok(out) => panic!("tlogcheck {mode} accepted {what}: {out}\n{bundle:#}"),
        Err(err) => assert!(
            err.contains(reason),
            "tlogcheck {mode} refused {what}, but not for {reason:?}: {err}"
        ),
    }
}

const SIZES: [usize; 5] = [1, 2, 7, 8, 13];

#[test]
fn interop_checker_accepts_every_inclusion_and_consistency_proof_of_trees_built_by_hand() {
    let key = NoteKey::new("signetd.test/audit");
    // Known answers, so the hand-built tree is RFC 6962's and not merely self-consistent:
    // the empty tree's root, and a leaf hash computed once elsewhere.
    assert_eq!(
        hex(&mth(&[])),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(&leaf_hash(b"")),
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    );
    for n in SIZES {
        let (records, leaves) = log_of(n, "a");
        for index in 0..n {
            let bundle = inclusion_bundle(&key, &records, &leaves, index);
            let out = tlogcheck("inclusion", &bundle)
                .unwrap_or_else(|e| panic!("record {index} of {n}: {e}\n{bundle:#}"));
            assert!(
                out.contains(&format!("record {index} is in the tree of size {n}")),
                "{out}"
            );
            // The same, with the verifier key pinned to the one published.
            let pinned = tlogcheck_with_key("inclusion", &bundle, Some(&key.verifier_key()));
            assert!(pinned.is_ok(), "{pinned:?}");
        }
        for old in SIZES.into_iter().filter(|&m| m <= n) {
            let bundle = consistency_bundle(&key, &leaves, old);
            let out = tlogcheck("consistency", &bundle)
                .unwrap_or_else(|e| panic!("{old} -> {n}: {e}\n{bundle:#}"));
            assert!(
                out.contains(&format!(
                    "the tree of size {old} is a prefix of the tree of size {n}"
                )),
                "{out}"
            );
        }
    }
    // Extension lines after the root hash are part of the C2SP checkpoint format.
    let (records, leaves) = log_of(7, "a");
    let mut bundle = inclusion_bundle(&key, &records, &leaves, 3);
    let text = checkpoint_text(ORIGIN, 7, &mth(&leaves)) + "extension one\nextension two\n";
    bundle["checkpoint"] = json!(key.sign(&text));
    tlogcheck("inclusion", &bundle).unwrap();
    // Cosigned: a signature by a key it does not know is set aside, not refused.
    let witness = NoteKey::new("witness.test");
    let cosigned = key.sign(&checkpoint_text(ORIGIN, 7, &mth(&leaves)));
    let extra = witness.sign(&checkpoint_text(ORIGIN, 7, &mth(&leaves)));
    let extra_line = extra.lines().last().unwrap();
    bundle["checkpoint"] = json!(format!("{cosigned}{extra_line}\n"));
    tlogcheck("inclusion", &bundle).unwrap();
}

#[test]
fn interop_checker_refuses_each_tampered_inclusion_bundle_with_its_reason() {
    let key = NoteKey::new("signetd.test/audit");
    let other = NoteKey::new("signetd.test/audit");
    let (records, leaves) = log_of(13, "a");
    let good = inclusion_bundle(&key, &records, &leaves, 5);
    tlogcheck("inclusion", &good).unwrap();
    let proof_len = good["proof"].as_array().unwrap().len();
    assert_eq!(proof_len, 4, "13 leaves: a path of 4 hashes");

    for i in 0..proof_len {
        let mut bundle = good.clone();
        flip_proof_hash(&mut bundle, i);
        refused(
            "inclusion",
            "a flipped proof hash",
            &bundle,
            "is not proved",
        );
    }
    let mut bundle = good.clone();
    bundle["proof"].as_array_mut().unwrap().pop();
    refused("inclusion", "a short proof", &bundle, "is not proved");

    // One byte of the record changed (a digit of its seq), and a trailing newline.
    let mut bundle = good.clone();
    bundle["record"] = json!(records[5].replacen("\"seq\":5", "\"seq\":6", 1));
    refused("inclusion", "a changed record", &bundle, "is not proved");
    let mut bundle = good.clone();
    bundle["record"] = json!(format!("{}\n", records[5]));
    refused("inclusion", "a record with its newline", &bundle, "newline");
    // Another record of the log, with this one's proof.
    let mut bundle = good.clone();
    bundle["record"] = json!(records[4]);
    refused("inclusion", "another record", &bundle, "is not proved");
    let mut bundle = good.clone();
    bundle["index"] = json!(4);
    refused("inclusion", "another index", &bundle, "is not proved");
    let mut bundle = good.clone();
    bundle["index"] = json!(13);
    refused("inclusion", "an index past the tree", &bundle, "outside");

    // A tree size that is not the checkpoint's; and a checkpoint, validly signed, of
    // another size with this root.
    let mut bundle = good.clone();
    bundle["tree_size"] = json!(12);
    refused(
        "inclusion",
        "a wrong tree size",
        &bundle,
        "is not the checkpoint's tree size 13",
    );
    // (Only a size that changes the proof's shape for leaf 5: any size from 9 to 16 puts
    // it in the same left subtree of 8 with one right sibling, so a proof for 13 also
    // proves it under that root for 14. The signature is what ties a size to a root.)
    for size in [8, 17] {
        let mut bundle = good.clone();
        bundle["tree_size"] = json!(size);
        bundle["checkpoint"] = json!(key.sign(&checkpoint_text(ORIGIN, size, &mth(&leaves))));
        refused(
            "inclusion",
            "a checkpoint of a wrong size",
            &bundle,
            "is not proved",
        );
    }

    // Signed by another key of the same name: not the verifier key's signature.
    let mut bundle = good.clone();
    bundle["checkpoint"] = json!(other.sign(&checkpoint_text(ORIGIN, 13, &mth(&leaves))));
    refused(
        "inclusion",
        "a note signed by another key",
        &bundle,
        "not signed by",
    );
    // Both the note and the key replaced: only pinning the published key catches that.
    let mut bundle = good.clone();
    bundle["checkpoint"] = json!(other.sign(&checkpoint_text(ORIGIN, 13, &mth(&leaves))));
    bundle["verifier_key"] = json!(other.verifier_key());
    tlogcheck("inclusion", &bundle).unwrap();
    let err = tlogcheck_with_key("inclusion", &bundle, Some(&key.verifier_key())).unwrap_err();
    assert!(err.contains("is not the expected"), "{err}");

    // The body changed after signing: the size, or the root hash.
    let note = good["checkpoint"].as_str().unwrap();
    let mut bundle = good.clone();
    bundle["checkpoint"] = json!(note.replacen("\n13\n", "\n12\n", 1));
    bundle["tree_size"] = json!(12);
    refused(
        "inclusion",
        "a note with a changed size",
        &bundle,
        "invalid signature",
    );
    let mut bundle = good.clone();
    let root = b64(&mth(&leaves));
    let other_root = b64(&mth(&leaves[..12]));
    bundle["checkpoint"] = json!(note.replacen(&root, &other_root, 1));
    refused(
        "inclusion",
        "a note with a changed root",
        &bundle,
        "invalid signature",
    );
    // The signature itself damaged.
    let mut bundle = good.clone();
    let (text, signature_line) = note.rsplit_once("\n\u{2014} ").unwrap();
    let (name, sig) = signature_line.trim_end().split_once(' ').unwrap();
    let mut sig = b64_decode(sig);
    sig[10] ^= 1;
    bundle["checkpoint"] = json!(format!("{text}\n\u{2014} {name} {}\n", b64(&sig)));
    refused(
        "inclusion",
        "a damaged signature",
        &bundle,
        "invalid signature",
    );

    // Checkpoint bodies that are not C2SP tlog-checkpoints, though validly signed.
    let root = b64(&mth(&leaves));
    for (what, text, reason) in [
        ("no root line", format!("{ORIGIN}\n13\n"), "not at least 3"),
        (
            "an empty origin",
            format!("\n13\n{root}\n"),
            "origin line is empty",
        ),
        (
            "a size with a leading zero",
            format!("{ORIGIN}\n013\n{root}\n"),
            "leading zeros",
        ),
        (
            "a signed size",
            format!("{ORIGIN}\n+13\n{root}\n"),
            "not a decimal",
        ),
        (
            "a root of 31 bytes",
            format!("{ORIGIN}\n13\n{}\n", b64(&mth(&leaves)[..31])),
            "base64 of 32 bytes",
        ),
        (
            "an unpadded root",
            format!("{ORIGIN}\n13\n{}\n", root.trim_end_matches('=')),
            "base64 of 32 bytes",
        ),
        (
            "an empty extension line",
            format!("{ORIGIN}\n13\n{root}\n\next\n"),
            "extension line 1 is empty",
        ),
    ] {
        let mut bundle = good.clone();
        bundle["checkpoint"] = json!(key.sign(&text));
        refused("inclusion", what, &bundle, reason);
    }

    // The bundle's own shape: an unknown field, a missing one, a verifier key that is not one.
    let mut bundle = good.clone();
    bundle["leaf_hash"] = json!("x");
    refused("inclusion", "an unknown field", &bundle, "unknown field");
    let mut bundle = good.clone();
    bundle.as_object_mut().unwrap().remove("proof");
    refused("inclusion", "no proof", &bundle, "no proof");
    let mut bundle = good.clone();
    bundle["verifier_key"] = json!("signetd.test/audit+00000000+AQ==");
    refused(
        "inclusion",
        "a malformed verifier key",
        &bundle,
        "verifier_key",
    );
}

#[test]
fn interop_checker_refuses_each_tampered_consistency_bundle_with_its_reason() {
    let key = NoteKey::new("signetd.test/audit");
    let other = NoteKey::new("signetd.test/audit");
    let (_, leaves) = log_of(13, "a");
    let good = consistency_bundle(&key, &leaves, 7);
    tlogcheck("consistency", &good).unwrap();

    for i in 0..good["proof"].as_array().unwrap().len() {
        let mut bundle = good.clone();
        flip_proof_hash(&mut bundle, i);
        refused(
            "consistency",
            "a flipped proof hash",
            &bundle,
            "is not proved",
        );
    }
    // The old tree of another history (the records after the first 4 differ).
    let (_, forked) = log_of(13, "b");
    let mut history: Vec<Hash> = leaves[..4].to_vec();
    history.extend_from_slice(&forked[4..7]);
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = json!(key.sign(&checkpoint_text(ORIGIN, 7, &mth(&history))));
    refused(
        "consistency",
        "an old checkpoint of another history",
        &bundle,
        "is not proved",
    );
    // The log cut back and regrown: a new checkpoint whose tree does not extend the old.
    let mut regrown = leaves[..5].to_vec();
    regrown.extend_from_slice(&forked[5..13]);
    let mut bundle = good.clone();
    bundle["new_checkpoint"] = json!(key.sign(&checkpoint_text(ORIGIN, 13, &mth(&regrown))));
    refused(
        "consistency",
        "a new checkpoint of a rewritten log",
        &bundle,
        "is not proved",
    );
    // Old and new swapped.
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = good["new_checkpoint"].clone();
    bundle["new_checkpoint"] = good["old_checkpoint"].clone();
    refused(
        "consistency",
        "swapped checkpoints",
        &bundle,
        "larger than new_checkpoint's",
    );
    // The same size twice but a proof given: not the empty proof of equal trees.
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = good["new_checkpoint"].clone();
    refused(
        "consistency",
        "equal sizes with a proof",
        &bundle,
        "is not proved",
    );
    bundle["proof"] = json!([]);
    tlogcheck("consistency", &bundle).unwrap();

    // Either note signed by another key; another origin; a changed body.
    let old_text = checkpoint_text(ORIGIN, 7, &mth(&leaves[..7]));
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = json!(other.sign(&old_text));
    refused(
        "consistency",
        "an old note of another key",
        &bundle,
        "old_checkpoint: not signed by",
    );
    let mut bundle = good.clone();
    bundle["new_checkpoint"] = json!(other.sign(&checkpoint_text(ORIGIN, 13, &mth(&leaves))));
    refused(
        "consistency",
        "a new note of another key",
        &bundle,
        "new_checkpoint: not signed by",
    );
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = json!(key.sign(&checkpoint_text(
        "signetd.test/another-log",
        7,
        &mth(&leaves[..7])
    )));
    refused("consistency", "another origin", &bundle, "different logs");
    let mut bundle = good.clone();
    let note = good["old_checkpoint"].as_str().unwrap();
    bundle["old_checkpoint"] = json!(note.replacen("\n7\n", "\n6\n", 1));
    refused(
        "consistency",
        "a changed old note",
        &bundle,
        "invalid signature",
    );
    let mut bundle = good.clone();
    bundle["old_checkpoint"] = json!(key.sign(&checkpoint_text(ORIGIN, 0, &mth(&[]))));
    bundle["proof"] = json!([]);
    refused("consistency", "an empty old tree", &bundle, "tree size 0");
}
