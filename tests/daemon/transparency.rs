//! The audit log as a transparency log (issue 15), checked by an implementation that is
//! not signetd's: tlogcheck (tests/interop/tlogcheck), Go's golang.org/x/mod/sumdb/note
//! and sumdb/tlog.
//!
//! The `interop_checker_` tests show tlogcheck itself accepts what it should and refuses
//! what it should, on RFC 6962 trees and C2SP signed notes built here by hand from the
//! specifications (no token, no signetd code). The end-to-end test runs it on what
//! signetd's `audit` CLI prints.

use std::path::{Path, PathBuf};

use base64::Engine;
use hyper::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use signetd::Algorithm;

use crate::common::{
    TestToken, decode_parts, issuer_toml, request_unix, segment_text, tlogcheck, tlogcheck_with_key,
};

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

// ---------------------------------------------------------------- end to end

/// Runs `signetd args...` on `token`; returns success and the raw stdout (a note's exact
/// bytes), with stderr.
fn signetd_raw(token: &TestToken, args: &[&str]) -> (bool, String, String) {
    let out = token.signetd_output(args);
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("UTF-8 output"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    signetd::audit::verify::segment_paths(&[dir.to_path_buf()]).unwrap()
}

async fn mint_jtis(socket: &Path, issuer: &str, n: usize) -> Vec<String> {
    let mut jtis = Vec::new();
    for i in 0..n {
        let body = json!({"issuer": issuer, "aud": "api", "sub": format!("s{i}")});
        let reply = request_unix(socket, Method::POST, "/v1/tokens", Some(&body)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        let (_, claims) = decode_parts(reply.json["token"].as_str().unwrap());
        jtis.push(claims["jti"].as_str().unwrap().to_string());
    }
    jtis
}

/// Copies the log in `from` into `to`, cut right after the last checkpoint record whose
/// leaf index is below `size` - 1: a log that verifies on its own but holds fewer than
/// `size` records.
fn cut_copy(from: &Path, to: &Path, size: u64) -> u64 {
    std::fs::create_dir_all(to).unwrap();
    let mut lines: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for segment in segments(from) {
        let text = segment_text(&segment);
        lines.push((
            segment.file_name().unwrap().into(),
            text.lines().map(str::to_string).collect(),
        ));
    }
    // The global leaf index of each checkpoint record.
    let mut index = 0u64;
    let mut cut = None;
    for (s, (_, segment)) in lines.iter().enumerate() {
        for (l, line) in segment.iter().enumerate() {
            if index + 1 < size && line.contains("\"event\":\"checkpoint\"") {
                cut = Some((s, l, index + 1));
            }
            index += 1;
        }
    }
    let (s, l, kept) = cut.expect("a checkpoint record before the old checkpoint's size");
    for (i, (name, segment)) in lines.iter().enumerate().take(s + 1) {
        let keep = if i == s { &segment[..=l] } else { &segment[..] };
        std::fs::write(to.join(name), keep.join("\n") + "\n").unwrap();
    }
    kept
}

/// The end-to-end test issue 15 asks for: what signetd's audit CLI prints, checked by Go.
#[tokio::test]
async fn signetd_audit_proofs_verify_with_go_and_a_cut_log_is_caught_by_an_old_checkpoint() {
    let token = TestToken::create("transparency-e2e");
    let log = token.audit_dir();
    // Small segments and frequent checkpoints: the tree spans segments, and the cut below
    // has earlier checkpoints to fall back to.
    let audit = format!(
        "[audit]\ndir = {:?}\ncheckpoint_every = 4\nsegment_bytes = 4096\n",
        log.display().to_string()
    );
    let (config, socket) =
        token.write_config(&format!("{}{audit}", issuer_toml("tlog", Algorithm::Es256)));
    token.init_ca_and_key(&config, "tlog");
    let root = token.export_public(&config).join("root.pem");
    let (root_arg, log_arg) = (root.to_str().unwrap(), log.to_str().unwrap());

    // A first run: mints, then a clean stop (which checkpoints).
    let mut daemon = token.serve(&config, &socket);
    let first = mint_jtis(&socket, "tlog", 6).await;
    assert!(daemon.terminate().success());
    let (ok, old_note, err) = signetd_raw(
        &token,
        &["audit", "checkpoint", "--root", root_arg, log_arg],
    );
    assert!(ok, "audit checkpoint: {err}");
    let old = token.path("old.checkpoint");
    std::fs::write(&old, &old_note).unwrap();
    let old_size: u64 = old_note.lines().nth(1).unwrap().parse().unwrap();
    let (ok, verifier_key, err) = signetd_raw(
        &token,
        &["audit", "verifier-key", "--root", root_arg, log_arg],
    );
    assert!(ok, "audit verifier-key: {err}");
    let verifier_key = verifier_key.trim().to_string();

    // A second run: more mints.
    let mut daemon = token.serve(&config, &socket);
    let second = mint_jtis(&socket, "tlog", 6).await;
    assert!(daemon.terminate().success());
    let (ok, latest_note, err) = signetd_raw(
        &token,
        &["audit", "checkpoint", "--root", root_arg, log_arg],
    );
    assert!(ok, "audit checkpoint: {err}");
    let latest = token.path("latest.checkpoint");
    std::fs::write(&latest, &latest_note).unwrap();
    let all_lines: Vec<String> = segments(&log)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();

    // Inclusion, for a token of each run, checked by Go with the published key.
    for jti in [&first[2], &second[4]] {
        let (ok, out, err) = signetd_raw(
            &token,
            &[
                "audit", "find", "--root", root_arg, "--jti", jti, "--json", log_arg,
            ],
        );
        assert!(ok, "audit find --jti {jti} --json: {err}");
        let bundle: Value = serde_json::from_str(&out).expect("audit find --json prints JSON");
        let record = bundle["record"].as_str().unwrap();
        assert!(record.contains(jti.as_str()), "{record}");
        let index = bundle["index"].as_u64().unwrap() as usize;
        assert_eq!(
            all_lines[index], record,
            "the record is the log's line {index}"
        );
        let out = tlogcheck_with_key("inclusion", &bundle, Some(&verifier_key))
            .unwrap_or_else(|e| panic!("{e}\n{bundle:#}"));
        assert!(out.starts_with("ok: "), "{out}");

        let mut tampered = bundle.clone();
        tampered["record"] = json!(record.replacen(jti.as_str(), &format!("{jti}x"), 1));
        assert!(
            tlogcheck("inclusion", &tampered).is_err(),
            "tlogcheck accepted an edited record"
        );
        let mut tampered = bundle.clone();
        flip_proof_hash(&mut tampered, 0);
        assert!(
            tlogcheck("inclusion", &tampered).is_err(),
            "tlogcheck accepted a flipped proof hash"
        );
        let mut tampered = bundle.clone();
        tampered["tree_size"] = json!(bundle["tree_size"].as_u64().unwrap() - 1);
        assert!(
            tlogcheck("inclusion", &tampered).is_err(),
            "tlogcheck accepted a wrong tree size"
        );
        let mut tampered = bundle.clone();
        let note = bundle["checkpoint"].as_str().unwrap();
        let size = note.lines().nth(1).unwrap();
        let smaller = (size.parse::<u64>().unwrap() - 1).to_string();
        tampered["checkpoint"] =
            json!(note.replacen(&format!("\n{size}\n"), &format!("\n{smaller}\n"), 1));
        assert!(
            tlogcheck("inclusion", &tampered).is_err(),
            "tlogcheck accepted a changed checkpoint"
        );
    }

    // No proof for a record that is not in the log.
    let (ok, _, err) = signetd_raw(
        &token,
        &[
            "audit",
            "find",
            "--root",
            root_arg,
            "--jti",
            "no-such-jti",
            "--json",
            log_arg,
        ],
    );
    assert!(
        !ok,
        "audit find printed a proof for a jti never minted: {err}"
    );

    // Consistency of the old checkpoint with the latest, checked by Go.
    let (ok, out, err) = signetd_raw(
        &token,
        &[
            "audit",
            "prove",
            "--root",
            root_arg,
            "--from",
            old.to_str().unwrap(),
            log_arg,
        ],
    );
    assert!(ok, "audit prove --from: {err}");
    let bundle: Value = serde_json::from_str(&out).expect("audit prove prints JSON");
    assert_eq!(bundle["old_checkpoint"], old_note.as_str());
    assert_eq!(bundle["new_checkpoint"], latest_note.as_str());
    let out = tlogcheck_with_key("consistency", &bundle, Some(&verifier_key))
        .unwrap_or_else(|e| panic!("{e}\n{bundle:#}"));
    assert!(out.starts_with("ok: "), "{out}");
    let mut tampered = bundle.clone();
    flip_proof_hash(&mut tampered, 0);
    assert!(
        tlogcheck("consistency", &tampered).is_err(),
        "tlogcheck accepted a flipped proof hash"
    );
    let mut tampered = bundle.clone();
    tampered["old_checkpoint"] = json!(old_note.replacen(
        &format!("\n{old_size}\n"),
        &format!("\n{}\n", old_size - 1),
        1
    ));
    assert!(
        tlogcheck("consistency", &tampered).is_err(),
        "tlogcheck accepted a changed old checkpoint"
    );

    // The same proof as a C2SP tlog-witness add-checkpoint request body.
    let (ok, body, err) = signetd_raw(
        &token,
        &[
            "audit",
            "prove",
            "--witness",
            "--root",
            root_arg,
            "--from",
            old.to_str().unwrap(),
            log_arg,
        ],
    );
    assert!(ok, "audit prove --witness: {err}");
    let mut expected = format!("old {old_size}\n");
    for hash in bundle["proof"].as_array().unwrap() {
        expected += &format!("{}\n", hash.as_str().unwrap());
    }
    expected += &format!("\n{latest_note}");
    assert_eq!(body, expected);
    // The same from the size alone, as a witness's 409 names it.
    let (ok, body, err) = signetd_raw(
        &token,
        &[
            "audit",
            "prove",
            "--witness",
            "--old-size",
            &old_size.to_string(),
            "--root",
            root_arg,
            log_arg,
        ],
    );
    assert!(ok, "audit prove --witness --old-size: {err}");
    assert_eq!(body, expected);
    let (ok, body, err) = signetd_raw(
        &token,
        &["audit", "prove", "--witness", "--root", root_arg, log_arg],
    );
    assert!(ok, "audit prove --witness from size 0: {err}");
    assert_eq!(body, format!("old 0\n\n{latest_note}"));

    // The log against the old checkpoint kept elsewhere.
    let verify = |dir: &Path, checkpoint: Option<&Path>| {
        let mut args = vec!["audit", "verify", "--root", root_arg];
        if let Some(checkpoint) = checkpoint {
            args.extend(["--checkpoint", checkpoint.to_str().unwrap()]);
        }
        args.push(dir.to_str().unwrap());
        let (ok, out, err) = signetd_raw(&token, &args);
        (ok, out + &err)
    };
    let (ok, out) = verify(&log, Some(&old));
    assert!(ok, "audit verify --checkpoint old: {out}");
    let (ok, out) = verify(&log, Some(&latest));
    assert!(ok, "audit verify --checkpoint latest: {out}");
    // A forged copy of the old checkpoint is refused.
    let forged = token.path("forged.checkpoint");
    std::fs::write(
        &forged,
        old_note.replacen(
            &format!("\n{old_size}\n"),
            &format!("\n{}\n", old_size + 1),
            1,
        ),
    )
    .unwrap();
    let (ok, out) = verify(&log, Some(&forged));
    assert!(!ok, "a forged checkpoint was accepted: {out}");

    // A copy cut back to an earlier checkpoint, below the old one's size: it verifies on
    // its own, and only the checkpoint kept elsewhere shows it was cut.
    let cut = token.path("cut");
    let kept = cut_copy(&log, &cut, old_size);
    assert!(kept < old_size);
    let (ok, out) = verify(&cut, None);
    assert!(
        ok,
        "the cut log ({kept} records) should verify on its own: {out}"
    );
    let (ok, out) = verify(&cut, Some(&old));
    assert!(
        !ok,
        "the log cut to {kept} records verified against a checkpoint of {old_size}: {out}"
    );
    let (ok, out) = verify(&cut, Some(&latest));
    assert!(
        !ok,
        "the cut log verified against the latest checkpoint: {out}"
    );
}

/// The log over HTTP as C2SP tlog-tiles: the signed checkpoint to anyone, entry bundles
/// and hash tiles to auditors only, each checked here against the checkpoint with the
/// RFC 6962 hashing written by hand above (not signetd's).
#[tokio::test]
async fn the_checkpoint_is_public_and_tiles_are_served_to_auditors_within_it() {
    crate::common::generate_key("tlog-tiles", Algorithm::Es256).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit");
    let config = format!(
        "{}[audit]\ndir = {:?}\ncheckpoint_every = 4\nauditors = [\"uid:{}\"]\n",
        issuer_toml("tlog-tiles", Algorithm::Es256),
        log.display().to_string(),
        crate::common::my_uid()
    );
    let daemon = crate::common::TestDaemon::start(&config).await;
    mint_jtis(&daemon.socket, "tlog-tiles", 9).await;

    let reply = daemon.get("/v1/audit/log/checkpoint").await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
    let note = String::from_utf8(reply.raw.to_vec()).unwrap();
    let anonymous = daemon
        .tcp(Method::GET, "/v1/audit/log/checkpoint", &[], b"")
        .await;
    assert_eq!(anonymous.status, 200, "the checkpoint is public");
    let mut lines = note.lines();
    let origin = lines.next().unwrap().to_string();
    let size: usize = lines.next().unwrap().parse().unwrap();
    let root = b64_decode(lines.next().unwrap());
    assert!(origin.starts_with("signetd-audit/"), "{note}");
    assert!((10..256).contains(&size), "{note}");

    // Entry bundle: each record's line after its big-endian u16 length.
    let path = format!("/v1/audit/log/tile/entries/000.p/{size}");
    let reply = daemon.get(&path).await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.header("content-type"), "application/octet-stream");
    let mut rest = &reply.raw[..];
    let mut records = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        records.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    assert_eq!(records.len(), size);
    let on_disk: Vec<String> = segments(&log)
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    for (record, line) in records.iter().zip(&on_disk) {
        assert_eq!(record, line.as_bytes(), "entries are the log's exact lines");
    }
    let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(r)).collect();
    assert_eq!(
        mth(&leaves).to_vec(),
        root,
        "the entries hash to the signed root"
    );

    // The level-0 hash tile holds the same leaf hashes.
    let reply = daemon
        .get(&format!("/v1/audit/log/tile/0/000.p/{size}"))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.json);
    assert_eq!(reply.raw.to_vec(), leaves.concat());

    // The note is signed by the key `audit verifier-key` publishes.
    let (root_pem, vkey) = published_verifier_key(&log, dir.path()).await;
    assert!(root_pem.exists());
    let head = signetd::audit::note::open(note.as_bytes(), &vkey).unwrap();
    assert_eq!(head.size as usize, size);
    let served = daemon.get("/v1/audit/log/verifier-key").await;
    assert_eq!(served.status, 200);
    assert_eq!(String::from_utf8(served.raw.to_vec()).unwrap(), vkey + "\n");

    // Nothing past the checkpoint, no spelling but C2SP's, nothing to anonymous callers.
    for (path, code) in [
        (format!("tile/0/000.p/{}", size + 1), "no_such_tile"),
        ("tile/entries/000".to_string(), "no_such_tile"),
        ("tile/0/0".to_string(), "no_such_tile"),
        ("tile/0/000.p/0".to_string(), "no_such_tile"),
        ("tile/9/000".to_string(), "no_such_tile"),
    ] {
        let reply = daemon.get(&format!("/v1/audit/log/{path}")).await;
        assert_eq!((reply.status, reply.code()), (404, code), "{path}");
    }
    let anonymous = daemon
        .tcp(Method::GET, "/v1/audit/log/tile/entries/000.p/1", &[], b"")
        .await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, "unauthenticated")
    );
    daemon.shutdown().await;
}

/// The verifier key `signetd audit verifier-key` prints for the live log in `log`, with
/// the root it was checked against (written into `dir`).
async fn published_verifier_key(log: &Path, dir: &Path) -> (PathBuf, String) {
    let root = dir.join("root.pem");
    std::fs::write(&root, crate::common::ca().await.chain_pem()).unwrap();
    let out = std::process::Command::new(crate::common::signetd_bin())
        .args(["audit", "verifier-key", "--root"])
        .arg(&root)
        .arg(log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        root,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}
