//! RFC 9162 §2.1 Merkle trees: leaf = SHA-256(0x00 ‖ data), node = SHA-256(0x01 ‖ l ‖ r),
//! split at the largest power of two below n. The 0x00/0x01 prefixes stop a leaf from
//! being passed off as an inner node. Leaves are kept in the order given.

use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// Root of the empty tree: SHA-256 of nothing (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of `data` (already the bytes the tree commits to).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(l: &Hash, r: &Hash) -> Hash {
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

/// The root over leaf hashes, in order.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path (sibling hashes from the leaf upwards) for leaf `index`, or `None` when
/// the index is outside the tree.
pub fn audit_path(index: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path_into(index, leaves, &mut out);
    Some(out)
}

fn path_into(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path_into(m, &leaves[..k], out);
        out.push(root(&leaves[k..]));
    } else {
        path_into(m - k, &leaves[k..], out);
        out.push(root(&leaves[..k]));
    }
}

/// Whether `path` leads from `leaf` at `index` in a tree of `size` leaves to `expected`
/// (RFC 9162 §2.1.3.2). Pure; never panics on any input.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], expected: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *expected
}

/// Parses 64 hex digits; `None` for anything else.
pub fn parse_hash(hex_text: &str) -> Option<Hash> {
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut b).ok()?;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("m{i}").as_bytes())).collect()
    }

    #[test]
    fn every_leaf_proves_for_sizes_1_to_40_and_nothing_else_does() {
        for n in 1..=40 {
            let all = leaves(n);
            let r = root(&all);
            for (i, l) in all.iter().enumerate() {
                let p = audit_path(i, &all).unwrap();
                assert!(verify_inclusion(l, i as u64, n as u64, &p, &r), "n={n} i={i}");
                assert!(!verify_inclusion(&leaf_hash(b"other"), i as u64, n as u64, &p, &r));
                assert!(!verify_inclusion(l, i as u64, n as u64, &p, &root(&leaves(n + 1))));
                if let Some(first) = p.first() {
                    let mut bent = p.clone();
                    bent[0] = [first[0] ^ 1; 32];
                    assert!(!verify_inclusion(l, i as u64, n as u64, &bent, &r));
                }
            }
            assert!(audit_path(n, &all).is_none());
        }
    }

    #[test]
    fn known_answers() {
        assert_eq!(hex::encode(empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        // One leaf: the root is the leaf hash.
        assert_eq!(root(&[leaf_hash(b"")]), leaf_hash(b""));
    }

    proptest! {
        #[test]
        fn proofs_verify(n in 1usize..200, pick in any::<prop::sample::Index>()) {
            let all = leaves(n);
            let i = pick.index(n);
            let p = audit_path(i, &all).unwrap();
            prop_assert!(verify_inclusion(&all[i], i as u64, n as u64, &p, &root(&all)));
        }

        #[test]
        fn arbitrary_proofs_never_panic(index in any::<u64>(), size in any::<u64>(), path in prop::collection::vec(any::<[u8; 32]>(), 0..70)) {
            let _ = verify_inclusion(&[0; 32], index, size, &path, &[0; 32]);
        }
    }
}
