//! The log as an RFC 6962 Merkle tree: every record is a leaf, hashed over its exact
//! line bytes (without the newline), in `seq` order.
//!
//! The hashing, the proofs and the tile layout are `tlog_tiles`' (a port of Go's
//! `golang.org/x/mod/sumdb/tlog`, which the interop test checks against). What is
//! signetd's own:
//!
//! - [`Frontier`]: the roots of the perfect subtrees along the tree's right edge, all
//!   the writer needs to append a leaf and compute the root, O(log n) each;
//! - [`StoredHashes`]: every hash tlog stores (the leaves and each completed interior
//!   node, in tlog's stored-hash order), kept in memory by the verifier when proofs are
//!   asked of it and, by the daemon, in the file [`HASHES_FILE`] beside the segments,
//!   which tiles and proofs are read from. The file is not trusted: whatever is served
//!   from it is checked by its reader against a signed checkpoint, and at start it is
//!   cut back to what the segments hold and extended from them (see [`mod@file`]);
//! - [`VerifiedTree`]: the verifier's tree, which keeps every stored hash only when
//!   proofs are wanted ([`Keep`]), so that checking a log takes memory that does not
//!   grow with its records.

pub mod file;

use std::collections::{BTreeMap, BTreeSet};

use tlog_tiles::{HASH_SIZE, Hash, HashReader, node_hash, record_hash, stored_hash_index};

/// The file, in the log's directory, holding the tree's stored hashes.
pub const HASHES_FILE: &str = "tree.hashes";

/// The tree's right edge: enough to append and to compute the root.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frontier {
    /// Leaves so far.
    size: u64,
    /// The roots of the perfect subtrees that make up the tree, largest (leftmost)
    /// first: one per 1-bit of `size`.
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// The frontier of the tree of `size` leaves whose stored hashes `stored` reads.
    pub fn read(size: u64, stored: &impl HashReader) -> Result<Self, tlog_tiles::tlog::Error> {
        // One perfect subtree per 1-bit of size, from the highest: level `l` covers the
        // 2^l leaves after those of the larger subtrees before it.
        let mut indexes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                indexes.push(stored_hash_index(level, start >> level));
                start += 1 << level;
            }
        }
        let nodes = stored.read_hashes(&indexes)?;
        Ok(Frontier { size, nodes })
    }

    /// Leaves so far: the tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf of record `line`; adds to `stored` the hashes tlog stores for
    /// it: the leaf's, then each interior node it completes.
    pub fn append(&mut self, line: &[u8], stored: &mut Vec<u8>) {
        self.add(line, |hash| stored.extend_from_slice(&hash.0));
    }

    /// Appends the leaf of record `line`, keeping no stored hash.
    pub fn push(&mut self, line: &[u8]) {
        self.add(line, |_| {});
    }

    /// Appends a leaf; `stored` sees each hash tlog stores for it, in order.
    fn add(&mut self, line: &[u8], mut stored: impl FnMut(&Hash)) {
        let mut hash = record_hash(line);
        stored(&hash);
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("a 1-bit of size has its subtree");
            hash = node_hash(left, hash);
            stored(&hash);
            size >>= 1;
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The root hash (RFC 6962 MTH) of the tree so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return tlog_tiles::EMPTY_HASH;
        };
        nodes.fold(*last, |right, left| node_hash(*left, right))
    }
}

/// Stored hashes in memory, in tlog's order: what the verifier builds as it reads a log,
/// for proofs between any two sizes it has seen.
#[derive(Debug, Default)]
pub struct StoredHashes {
    bytes: Vec<u8>,
    frontier: Frontier,
}

impl StoredHashes {
    /// Appends the leaf of record `line`.
    pub fn append(&mut self, line: &[u8]) {
        self.frontier.append(line, &mut self.bytes);
    }

    /// The tree so far.
    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }
}

impl HashReader for StoredHashes {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::tlog::Error> {
        indexes
            .iter()
            .map(|&index| hash_at(&self.bytes, index))
            .collect()
    }
}

/// What a verifier keeps of the tree it builds from a log's records.
#[derive(Clone, Debug)]
pub enum Keep {
    /// The tree's right edge, and its roots at these sizes (a kept checkpoint's):
    /// memory that does not grow with the log's records.
    Roots(BTreeSet<u64>),
    /// Every stored hash, about 64 bytes per record: what inclusion and consistency
    /// proofs between any two sizes are made from.
    Everything,
}

/// The tree a verifier builds from a log's records, keeping what [`Keep`] asked for.
#[derive(Debug)]
pub struct VerifiedTree {
    frontier: Frontier,
    /// Every stored hash, with [`Keep::Everything`].
    stored: Option<StoredHashes>,
    /// The sizes whose roots are kept, and those roots once reached.
    wanted: BTreeSet<u64>,
    roots: BTreeMap<u64, Hash>,
}

impl VerifiedTree {
    /// The empty tree, keeping `keep`.
    pub fn new(keep: Keep) -> Self {
        let (stored, wanted) = match keep {
            Keep::Roots(sizes) => (None, sizes),
            Keep::Everything => (Some(StoredHashes::default()), BTreeSet::new()),
        };
        let mut tree = VerifiedTree {
            frontier: Frontier::new(),
            stored,
            wanted,
            roots: BTreeMap::new(),
        };
        tree.keep_root();
        tree
    }

    /// Appends the leaf of record `line`.
    pub fn append(&mut self, line: &[u8]) {
        match &mut self.stored {
            Some(stored) => stored.append(line),
            None => self.frontier.push(line),
        }
        self.keep_root();
    }

    fn keep_root(&mut self) {
        let size = self.size();
        if self.wanted.contains(&size) {
            self.roots.insert(size, self.root());
        }
    }

    fn edge(&self) -> &Frontier {
        self.stored
            .as_ref()
            .map_or(&self.frontier, StoredHashes::frontier)
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.edge().size()
    }

    /// The root of the tree so far.
    pub fn root(&self) -> Hash {
        self.edge().root()
    }

    /// The root of the tree of the first `size` leaves, if it was kept.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        match &self.stored {
            Some(stored) => tlog_tiles::tree_hash(size, stored).ok(),
            None => self.roots.get(&size).copied(),
        }
    }

    /// Every stored hash, for proofs: kept only with [`Keep::Everything`].
    pub fn stored(&self) -> Option<&StoredHashes> {
        self.stored.as_ref()
    }
}

/// The stored hash `index` from `bytes` (stored hashes back to back).
pub fn hash_at(bytes: &[u8], index: u64) -> Result<Hash, tlog_tiles::tlog::Error> {
    let start = usize::try_from(index)
        .ok()
        .and_then(|i| i.checked_mul(HASH_SIZE))
        .filter(|start| start + HASH_SIZE <= bytes.len())
        .ok_or_else(|| tlog_tiles::tlog::Error::InvalidInput(format!("no stored hash {index}")))?;
    let mut hash = [0; HASH_SIZE];
    hash.copy_from_slice(&bytes[start..start + HASH_SIZE]);
    Ok(Hash(hash))
}

#[cfg(test)]
mod tests {
    use tlog_tiles::{check_record, check_tree, prove_record, prove_tree, stored_hash_count};

    use super::*;

    fn line(i: u64) -> Vec<u8> {
        format!("{{\"seq\":{i}}}").into_bytes()
    }

    /// The RFC 6962 root, the slow way (section 2.1), to check the frontier against.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => tlog_tiles::EMPTY_HASH,
            1 => record_hash(&leaves[0]),
            n => {
                let k = (n as u64).next_power_of_two() as usize / 2;
                let k = if k == n { n / 2 } else { k };
                node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn the_frontier_root_is_rfc_6962s_and_matches_tlogs_stored_hashes() {
        let mut stored = StoredHashes::default();
        let mut leaves = Vec::new();
        assert_eq!(stored.frontier().root(), tlog_tiles::EMPTY_HASH);
        for i in 0..70u64 {
            leaves.push(line(i));
            stored.append(&leaves[i as usize]);
            let size = i + 1;
            assert_eq!(stored.frontier().size(), size);
            assert_eq!(
                stored.bytes.len() as u64,
                stored_hash_count(size) * HASH_SIZE as u64
            );
            let root = stored.frontier().root();
            assert_eq!(root, mth(&leaves), "size {size}");
            assert_eq!(tlog_tiles::tree_hash(size, &stored).unwrap(), root);
            assert_eq!(&Frontier::read(size, &stored).unwrap(), stored.frontier());
        }
    }

    #[test]
    fn a_verified_tree_keeps_the_roots_asked_for_or_every_hash() {
        let mut edge = VerifiedTree::new(Keep::Roots([0, 5, 13].into()));
        let mut all = VerifiedTree::new(Keep::Everything);
        let mut leaves = Vec::new();
        let mut roots = vec![tlog_tiles::EMPTY_HASH];
        for i in 0..20u64 {
            leaves.push(line(i));
            edge.append(&leaves[i as usize]);
            all.append(&leaves[i as usize]);
            assert_eq!(edge.size(), i + 1);
            assert_eq!(edge.root(), mth(&leaves), "size {}", i + 1);
            assert_eq!(all.root(), edge.root());
            roots.push(edge.root());
        }
        assert!(
            edge.stored().is_none(),
            "the edge alone keeps no stored hash"
        );
        for size in [0u64, 5, 13] {
            assert_eq!(
                edge.root_at(size),
                Some(roots[size as usize]),
                "size {size}"
            );
        }
        assert_eq!(edge.root_at(6), None, "a size not asked for");
        assert!(all.stored().is_some());
        for size in 0..=20u64 {
            assert_eq!(all.root_at(size), Some(roots[size as usize]), "size {size}");
        }
        assert_eq!(all.root_at(21), None, "beyond the log");
    }

    #[test]
    fn proofs_from_stored_hashes_check_and_a_changed_leaf_fails() {
        let mut stored = StoredHashes::default();
        let mut roots = vec![tlog_tiles::EMPTY_HASH];
        for i in 0..33u64 {
            stored.append(&line(i));
            roots.push(stored.frontier().root());
        }
        for t in [1u64, 2, 7, 8, 13, 32, 33] {
            for n in [0, t / 2, t - 1] {
                let proof = prove_record(t, n, &stored).unwrap();
                check_record(&proof, t, roots[t as usize], n, record_hash(&line(n))).unwrap();
                assert!(check_record(&proof, t, roots[t as usize], n, record_hash(b"x")).is_err());
            }
            for old in [1, t / 2 + 1, t] {
                let proof = prove_tree(t, old, &stored).unwrap();
                check_tree(&proof, t, roots[t as usize], old, roots[old as usize]).unwrap();
            }
        }
    }
}
