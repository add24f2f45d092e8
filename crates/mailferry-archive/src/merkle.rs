//! Merkle trees over the digests a job run ingested, in the RFC 9162 (Certificate
//! Transparency v2) shape: leaf = SHA-256(0x00 ‖ digest), node = SHA-256(0x01 ‖ l ‖ r),
//! split at the largest power of two below n. The 0x00/0x01 prefixes stop a leaf from
//! being passed off as an inner node. Leaves are the run's distinct digests, sorted, so
//! the root does not depend on arrival order.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1).
pub fn empty_root() -> [u8; 32] {
    Sha256::digest([]).into()
}

pub fn leaf_hash(d: &Digest) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(d.as_bytes());
    h.finalize().into()
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

fn split(n: usize) -> usize {
    // Largest power of two strictly less than n (n >= 2).
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn root_of(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// Root over `digests` (sorted and de-duplicated first).
pub fn merkle_root(digests: &[Digest]) -> [u8; 32] {
    root_of(&leaves(digests))
}

fn leaves(digests: &[Digest]) -> Vec<[u8; 32]> {
    let mut ds = digests.to_vec();
    ds.sort();
    ds.dedup();
    ds.iter().map(leaf_hash).collect()
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
    let mut ds = digests.to_vec();
    ds.sort();
    ds.dedup();
    let index = ds.binary_search(target).ok()?;
    let leaves: Vec<_> = ds.iter().map(leaf_hash).collect();
    let mut path = Vec::new();
    audit_path(index, &leaves, &mut path);
    Some(MerkleProof {
        digest: *target,
        leaf_index: index as u64,
        tree_size: leaves.len() as u64,
        path: path.iter().map(hex::encode).collect(),
        root: hex::encode(root_of(&leaves)),
    })
}

fn audit_path(m: usize, leaves: &[[u8; 32]], out: &mut Vec<[u8; 32]>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        audit_path(m, &leaves[..k], out);
        out.push(root_of(&leaves[k..]));
    } else {
        audit_path(m - k, &leaves[k..], out);
        out.push(root_of(&leaves[..k]));
    }
}

/// Checks a proof against an expected root (hex). Pure: needs nothing from the archive.
/// RFC 9162 §2.1.3.2.
pub fn verify_proof(proof: &MerkleProof, expected_root_hex: &str) -> bool {
    if proof.leaf_index >= proof.tree_size || !proof.root.eq_ignore_ascii_case(expected_root_hex) {
        return false;
    }
    let mut path = Vec::with_capacity(proof.path.len());
    for p in &proof.path {
        let mut b = [0u8; 32];
        if hex::decode_to_slice(p, &mut b).is_err() {
            return false;
        }
        path.push(b);
    }
    let (mut f_n, mut s_n) = (proof.leaf_index, proof.tree_size - 1);
    let mut r = leaf_hash(&proof.digest);
    for p in &path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && hex::encode(r).eq_ignore_ascii_case(expected_root_hex)
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
