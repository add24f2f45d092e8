//! Merkle trees over the digests a job run ingested, in the RFC 9162 (Certificate
//! Transparency v2) shape: leaf = SHA-256(0x00 ‖ digest), node = SHA-256(0x01 ‖ l ‖ r),
//! split at the largest power of two below n. The 0x00/0x01 prefixes stop a leaf from
//! being passed off as an inner node. Leaves are the run's distinct digests, sorted, so
//! the root does not depend on arrival order.

use mailferry_proof::merkle;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// Root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1).
pub fn empty_root() -> [u8; 32] {
    merkle::empty_root()
}

/// The tree (`mailferry_proof::merkle`, shared with the migration receipts) commits to the
/// digest's 32 bytes.
pub fn leaf_hash(d: &Digest) -> [u8; 32] {
    merkle::leaf_hash(d.as_bytes())
}

/// Root over `digests` (sorted and de-duplicated first).
pub fn merkle_root(digests: &[Digest]) -> [u8; 32] {
    merkle::root(&leaves(digests))
}

fn sorted(digests: &[Digest]) -> Vec<Digest> {
    let mut ds = digests.to_vec();
    ds.sort();
    ds.dedup();
    ds
}

fn leaves(digests: &[Digest]) -> Vec<[u8; 32]> {
    sorted(digests).iter().map(leaf_hash).collect()
}

/// An audit path proving one digest is in a run's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    pub digest: Digest,
    pub leaf_index: u64,
    pub tree_size: u64,
    /// Sibling hashes from the leaf upwards, hex.
    pub path: Vec<String>,
    /// The root this proof leads to, hex.
    pub root: String,
}

/// Builds the proof for `target` if it is among `digests`.
pub fn merkle_proof(digests: &[Digest], target: &Digest) -> Option<MerkleProof> {
    let ds = sorted(digests);
    let index = ds.binary_search(target).ok()?;
    let leaves: Vec<_> = ds.iter().map(leaf_hash).collect();
    let path = merkle::audit_path(index, &leaves)?;
    Some(MerkleProof {
        digest: *target,
        leaf_index: index as u64,
        tree_size: leaves.len() as u64,
        path: path.iter().map(hex::encode).collect(),
        root: hex::encode(merkle::root(&leaves)),
    })
}

/// Checks a proof against an expected root (hex). Pure: needs nothing from the archive.
/// RFC 9162 §2.1.3.2.
pub fn verify_proof(proof: &MerkleProof, expected_root_hex: &str) -> bool {
    if !proof.root.eq_ignore_ascii_case(expected_root_hex) {
        return false;
    }
    let Some(expected) = merkle::parse_hash(expected_root_hex) else { return false };
    let Some(path) = proof.path.iter().map(|p| merkle::parse_hash(p)).collect::<Option<Vec<_>>>() else { return false };
    merkle::verify_inclusion(&leaf_hash(&proof.digest), proof.leaf_index, proof.tree_size, &path, &expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ds(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest::of(format!("m{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_leaf_proves_for_sizes_1_to_40() {
        for n in 1..=40 {
            let all = ds(n);
            let root = hex::encode(merkle_root(&all));
            for d in &all {
                let p = merkle_proof(&all, d).unwrap();
                assert!(verify_proof(&p, &root), "n={n} idx={}", p.leaf_index);
                // A proof for another digest, or against another root, fails.
                let mut forged = p.clone();
                forged.digest = Digest::of(b"not in the run");
                assert!(!verify_proof(&forged, &root));
                assert!(!verify_proof(&p, &hex::encode(merkle_root(&ds(n + 1)))));
                if !p.path.is_empty() {
                    let mut bent = p.clone();
                    bent.path[0] = hex::encode([9u8; 32]);
                    assert!(!verify_proof(&bent, &root));
                }
            }
            assert!(merkle_proof(&all, &Digest::of(b"absent")).is_none());
        }
    }

    #[test]
    fn order_and_duplicates_do_not_change_the_root() {
        let mut a = ds(7);
        let root = merkle_root(&a);
        a.reverse();
        a.push(a[0]);
        assert_eq!(merkle_root(&a), root);
        assert_eq!(merkle_root(&[]), empty_root());
    }

    proptest! {
        #[test]
        fn proofs_verify(n in 1usize..200, pick in any::<prop::sample::Index>()) {
            let all = ds(n);
            let d = all[pick.index(n)];
            let p = merkle_proof(&all, &d).unwrap();
            prop_assert!(verify_proof(&p, &hex::encode(merkle_root(&all))));
        }
    }
}
