//! Offline verification of a receipt: the signature over the header, every entry against
//! its leaf, the root over the leaves, the counts. Every problem found is reported, each
//! naming the entry it concerns, so one changed byte points at one message.

use crate::merkle::{self, Hash};
use crate::receipt::{Receipt, ReceiptCounts, ReceiptEntry, RECEIPT_FORMAT};
use crate::signer::PublicKey;

/// Which key the signature was checked with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    /// The key the caller gave (the installation's, obtained separately): the strong check.
    Given,
    /// The key inside the receipt: proves integrity, not who signed it.
    Embedded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Format(String),
    Signature(String),
    Root(String),
    Counts(String),
    Entry { seq: u64, uidl: String, what: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format(s) => write!(f, "format: {s}"),
            Self::Signature(s) => write!(f, "signature: {s}"),
            Self::Root(s) => write!(f, "merkle root: {s}"),
            Self::Counts(s) => write!(f, "counts: {s}"),
            Self::Entry { seq, uidl, what } => write!(f, "entry {seq} (UIDL {uidl:?}): {what}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub key: KeyChoice,
    pub findings: Vec<Finding>,
}

impl Verdict {
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Checks everything that can be checked without the destination.
pub fn check_receipt(r: &Receipt, key: Option<&PublicKey>) -> Verdict {
    let mut findings = Vec::new();
    if r.header.format != RECEIPT_FORMAT {
        findings.push(Finding::Format(format!("expected {RECEIPT_FORMAT:?}, found {:?}", r.header.format)));
    }
    let choice = if key.is_some() { KeyChoice::Given } else { KeyChoice::Embedded };
    let embedded = PublicKey::parse(&r.public_key);
    match (key, &embedded) {
        (Some(k), _) if !k.verifies(&r.header, &r.signature) => findings.push(Finding::Signature(
            "does not verify with the given public key (the header was changed, or another key signed it)".into(),
        )),
        (None, Err(e)) => findings.push(Finding::Signature(e.clone())),
        (None, Ok(k)) if !k.verifies(&r.header, &r.signature) => {
            findings.push(Finding::Signature("does not verify: the header was changed after signing".into()))
        }
        _ => {}
    }

    let mut counts = ReceiptCounts::default();
    let mut carried: Vec<Hash> = Vec::with_capacity(r.entries.len());
    let mut changed = 0;
    for (i, line) in r.entries.iter().enumerate() {
        let e = &line.entry;
        counts.add(&e.status);
        let named = |what: String| Finding::Entry { seq: e.seq, uidl: e.source.uidl.clone(), what };
        if e.seq != i as u64 {
            findings.push(named(format!("is at position {i}: entries were removed, added or reordered")));
        }
        match merkle::parse_hash(&line.leaf) {
            Some(leaf) => {
                if leaf != e.leaf() {
                    changed += 1;
                    findings.push(named("its content does not match its leaf hash: changed after signing".into()));
                }
                carried.push(leaf);
            }
            None => {
                changed += 1;
                findings.push(named("its leaf hash is not 64 hex digits".into()));
                carried.push(e.leaf());
            }
        }
    }
    let root = hex::encode(merkle::root(&carried));
    if !root.eq_ignore_ascii_case(&r.header.merkle_root) {
        findings.push(Finding::Root(if changed == 0 {
            format!("the entries' leaves give {root}, the signed root is {}: a leaf hash was changed, or entries added or removed", r.header.merkle_root)
        } else {
            format!("the entries' leaves give {root}, the signed root is {}", r.header.merkle_root)
        }));
    }
    if counts != r.header.counts {
        findings.push(Finding::Counts(format!("the entries count {counts:?}, the signed header says {:?}", r.header.counts)));
    }
    Verdict { key: choice, findings }
}

/// The inclusion proof of one message, from the entries' recomputed leaves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InclusionProof {
    pub uidl: String,
    pub seq: u64,
    pub leaf: String,
    pub tree_size: u64,
    /// Sibling hashes from the leaf upwards, hex.
    pub path: Vec<String>,
    pub merkle_root: String,
    /// The entry, serialised in its canonical field order: its compact JSON is the leaf's
    /// data, SHA-256(0x00 ‖ those bytes) (a `serde_json::Value` would sort the keys).
    pub entry: ReceiptEntry,
}

/// `None` when no entry has this UIDL.
pub fn prove(r: &Receipt, uidl: &str) -> Option<InclusionProof> {
    let i = r.entries.iter().position(|l| l.entry.source.uidl == uidl)?;
    let leaves = r.computed_leaves();
    let path = merkle::audit_path(i, &leaves)?;
    Some(InclusionProof {
        uidl: uidl.to_string(),
        seq: i as u64,
        leaf: hex::encode(leaves[i]),
        tree_size: leaves.len() as u64,
        path: path.iter().map(hex::encode).collect(),
        merkle_root: hex::encode(merkle::root(&leaves)),
        entry: r.entries[i].entry.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::tests::entry;
    use crate::receipt::RootBuilder;
    use crate::signer::ReceiptSigner;
    use proptest::prelude::*;

    fn receipt(signer: &ReceiptSigner, n: u64) -> Receipt {
        let mut b = RootBuilder::default();
        let entries: Vec<_> = (0..n).map(|i| b.push(&entry(i, &format!("u{i}"), "verified"))).collect();
        let header = crate::receipt::tests::header(&b);
        let signature = signer.sign(&header);
        Receipt { header, signature, public_key: signer.public_key().to_base64(), entries }
    }

    #[test]
    fn a_signed_receipt_verifies_with_its_key_and_fails_with_another() {
        let s = ReceiptSigner::generate();
        let r = receipt(&s, 5);
        assert!(check_receipt(&r, Some(&s.public_key())).is_valid());
        assert!(check_receipt(&r, None).is_valid());
        let other = ReceiptSigner::generate().public_key();
        let v = check_receipt(&r, Some(&other));
        assert!(matches!(v.findings.as_slice(), [Finding::Signature(_)]), "{:?}", v.findings);
    }

    #[test]
    fn a_changed_entry_is_named() {
        let s = ReceiptSigner::generate();
        let mut r = receipt(&s, 5);
        r.entries[3].entry.readback_sha256 = Some(hex::encode([0xee; 32]));
        let v = check_receipt(&r, Some(&s.public_key()));
        assert!(v.findings.iter().any(|f| matches!(f, Finding::Entry { seq: 3, uidl, .. } if uidl == "u3")), "{:?}", v.findings);
    }

    #[test]
    fn a_changed_header_or_leaf_or_removed_entry_fails() {
        let s = ReceiptSigner::generate();
        let key = s.public_key();
        let mut r = receipt(&s, 5);
        r.header.outcome = "partial".into();
        assert!(!check_receipt(&r, Some(&key)).is_valid());

        let mut r = receipt(&s, 5);
        let e = r.entries[1].entry.clone();
        r.entries[1] = crate::receipt::EntryLine::new(ReceiptEntry { size: 1, ..e });
        let v = check_receipt(&r, Some(&key));
        assert!(v.findings.iter().any(|f| matches!(f, Finding::Root(_))), "{:?}", v.findings);

        let mut r = receipt(&s, 5);
        r.entries.remove(2);
        assert!(!check_receipt(&r, Some(&key)).is_valid());
    }

    #[test]
    fn every_message_has_a_proof_that_checks() {
        let s = ReceiptSigner::generate();
        let r = receipt(&s, 9);
        for i in 0..9 {
            let p = prove(&r, &format!("u{i}")).unwrap();
            let path: Vec<_> = p.path.iter().map(|h| merkle::parse_hash(h).unwrap()).collect();
            let leaf = merkle::parse_hash(&p.leaf).unwrap();
            let root = merkle::parse_hash(&r.header.merkle_root).unwrap();
            assert!(merkle::verify_inclusion(&leaf, p.seq, p.tree_size, &path, &root));
            // The entry as printed keeps its declared field order, so compacted it is the
            // leaf's data (a serde_json::Value would have sorted the keys).
            assert_eq!(merkle::leaf_hash(&serde_json::to_vec(&p.entry).unwrap()), leaf);
            let printed = serde_json::to_string_pretty(&p).unwrap();
            let at = |k: &str| printed.rfind(&format!("\"{k}\": ")).unwrap();
            assert!(at("seq") < at("source") && at("source") < at("size") && at("status") < at("reason"), "{printed}");
        }
        assert!(prove(&r, "absent").is_none());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser_or_checker(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(r) = Receipt::parse(&bytes) {
                let _ = check_receipt(&r, None);
            }
        }

        #[test]
        fn arbitrary_json_receipts_never_panic(sig in ".{0,100}", key in ".{0,60}", leaf in ".{0,70}", root in ".{0,70}") {
            let s = ReceiptSigner::generate();
            let mut r = receipt(&s, 3);
            r.signature = sig;
            r.public_key = key;
            r.entries[0].leaf = leaf;
            r.header.merkle_root = root;
            let text = serde_json::to_vec(&r).unwrap();
            let back = Receipt::parse(&text).unwrap();
            prop_assert!(!check_receipt(&back, None).is_valid());
        }
    }
}
