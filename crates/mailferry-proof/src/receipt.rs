//! The migration receipt (issue 14): what one run left where, per source message, in a
//! form anyone can check later without trusting mailferry.
//!
//! Shape on the wire (JSON, one document):
//!
//! ```text
//! { <header fields: format, job, run, source, target, outcome, ..., merkle_root>,
//!   "signature": base64(Ed25519 over the canonical header),
//!   "public_key": base64(32-byte Ed25519 key),
//!   "entries": [ {"leaf": hex, <entry fields>}, ... ] }
//! ```
//!
//! Canonical bytes are compact JSON with the fields in the order declared here (every
//! field present, `null` when empty): the header's are what is signed, an entry's are its
//! Merkle leaf data. `leaf` is carried beside each entry so that a changed entry is named,
//! not just detected; the root over the carried leaves must still equal the signed root.

use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};

/// Names this layout; a verifier refuses any other.
pub const RECEIPT_FORMAT: &str = "mailferry-receipt/1";

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub uidl: String,
}

/// Where an IMAP copy is. `uid` is absent when the destination gave no APPENDUID and the
/// copy was not located since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRef {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub folder: String,
    pub uidvalidity: Option<u32>,
    pub uid: Option<u32>,
}

/// The archive occurrence a message was stored as: (archive, source host, account, UIDL)
/// is the occurrence's key; the blob is the entry's `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRef {
    pub archive: String,
    pub source_host: String,
    pub account: String,
    pub uidl: String,
}

/// One source message and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptEntry {
    /// 0-based position; entries are in UIDL order.
    pub seq: u64,
    pub source: SourceRef,
    /// Octets retrieved (the LIST size while not yet retrieved).
    pub size: u64,
    /// SHA-256 of the exact bytes retrieved from the source.
    pub sha256: Option<String>,
    /// SHA-256 of the bytes sent (the retrieved bytes after bare LF → CRLF, the only change).
    pub sent_sha256: Option<String>,
    /// The ledger state: listed, copying, copied, verified, source-deleted, skipped, failed.
    pub status: String,
    pub destination: Option<DestinationRef>,
    pub archive: Option<ArchiveRef>,
    /// SHA-256 of the copy as read back from the destination.
    pub readback_sha256: Option<String>,
    /// exact | body | size: how the read-back copy was compared.
    pub verification: Option<String>,
    pub verified_at: Option<String>,
    pub copied_at: Option<String>,
    /// kept | deleted
    pub source_action: String,
    pub deleted_at: Option<String>,
    /// Why the message was skipped or failed, or why its read-back did not match.
    pub reason: Option<String>,
}

impl ReceiptEntry {
    /// The bytes this entry's Merkle leaf commits to.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn leaf(&self) -> Hash {
        merkle::leaf_hash(&self.canonical())
    }
}

/// An entry as it appears in a receipt: its leaf hash first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLine {
    pub leaf: String,
    #[serde(flatten)]
    pub entry: ReceiptEntry,
}

impl EntryLine {
    pub fn new(entry: ReceiptEntry) -> Self {
        Self { leaf: hex::encode(entry.leaf()), entry }
    }

    /// Compact JSON, as in a receipt's `entries` array.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Counts over the entries by status (recomputed by the verifier).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptCounts {
    pub entries: u64,
    /// Read back and matched, still at the source.
    pub verified: u64,
    /// Confirmed by the destination but not read back (or read back and not matched).
    pub copied: u64,
    /// Verified and then deleted at the source.
    pub source_deleted: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Listed but not yet copied (a cancelled or partial run), or in doubt.
    pub pending: u64,
}

impl ReceiptCounts {
    pub fn add(&mut self, status: &str) {
        self.entries += 1;
        match status {
            "verified" => self.verified += 1,
            "copied" => self.copied += 1,
            "source-deleted" => self.source_deleted += 1,
            "skipped" => self.skipped += 1,
            "failed" => self.failed += 1,
            _ => self.pending += 1,
        }
    }
}

/// The archive's hash-chain head when the receipt was made (archive targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// What the signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptHeader {
    pub format: String,
    pub job: i64,
    pub run: i64,
    /// Display forms (`pop3 user@host:port`, `imap user@host:port/folder`, `archive NAME`).
    pub source: String,
    pub target: String,
    /// succeeded | partial | cancelled | failed
    pub outcome: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub signed_at: String,
    pub counts: ReceiptCounts,
    /// Hex SHA-256 root over the entries' leaves, in order.
    pub merkle_root: String,
    pub archive_chain_head: Option<ChainHead>,
}

impl ReceiptHeader {
    /// The bytes the Ed25519 signature covers.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The receipt's JSON up to and including `"entries":[`; entries and `]}` follow.
    pub fn json_prefix(&self, signature: &str, public_key: &str) -> String {
        document_prefix(&String::from_utf8_lossy(&self.canonical()), signature, public_key)
    }
}

/// A receipt document up to and including `"entries":[`, from the header's canonical JSON
/// as stored (never re-encoded, so the signed bytes are served as signed); entries and
/// `]}` follow. Lets a server stream a receipt of any length.
pub fn document_prefix(header_json: &str, signature: &str, public_key: &str) -> String {
    let header = header_json.trim_end();
    let members = header.strip_suffix('}').unwrap_or(header);
    format!(
        "{members},\"signature\":{},\"public_key\":{},\"entries\":[",
        serde_json::Value::from(signature),
        serde_json::Value::from(public_key)
    )
}

/// A whole receipt, as read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    #[serde(flatten)]
    pub header: ReceiptHeader,
    pub signature: String,
    pub public_key: String,
    pub entries: Vec<EntryLine>,
}

impl Receipt {
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(text).map_err(|e| format!("not a mailferry receipt: {e}"))
    }

    /// Leaf hashes recomputed from the entries' contents.
    pub fn computed_leaves(&self) -> Vec<Hash> {
        self.entries.iter().map(|l| l.entry.leaf()).collect()
    }
}

/// Builds a receipt's root and counts as entries arrive, without holding the entries.
#[derive(Debug, Default)]
pub struct RootBuilder {
    leaves: Vec<Hash>,
    pub counts: ReceiptCounts,
}

impl RootBuilder {
    pub fn push(&mut self, entry: &ReceiptEntry) -> EntryLine {
        self.counts.add(&entry.status);
        let line = EntryLine::new(entry.clone());
        self.leaves.push(entry.leaf());
        line
    }

    pub fn root_hex(&self) -> String {
        hex::encode(merkle::root(&self.leaves))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn entry(seq: u64, uidl: &str, status: &str) -> ReceiptEntry {
        ReceiptEntry {
            seq,
            source: SourceRef { host: "pop.example".into(), port: 995, account: "alice".into(), uidl: uidl.into() },
            size: 120,
            sha256: Some(hex::encode([seq as u8; 32])),
            sent_sha256: Some(hex::encode([seq as u8; 32])),
            status: status.into(),
            destination: Some(DestinationRef {
                host: "imap.example".into(),
                port: 993,
                account: "alice".into(),
                folder: "INBOX".into(),
                uidvalidity: Some(7),
                uid: Some(seq as u32 + 1),
            }),
            archive: None,
            readback_sha256: Some(hex::encode([seq as u8; 32])),
            verification: Some("exact".into()),
            verified_at: Some("2026-12-07T10:00:00.000Z".into()),
            copied_at: Some("2026-12-07T10:00:00.000Z".into()),
            source_action: "kept".into(),
            deleted_at: None,
            reason: None,
        }
    }

    /// A header over what `b` has seen (shared by the check tests).
    pub(crate) fn header(b: &RootBuilder) -> ReceiptHeader {
        ReceiptHeader {
            format: RECEIPT_FORMAT.into(),
            job: 1,
            run: 2,
            source: "pop3 alice@pop.example:995".into(),
            target: "imap alice@imap.example:993/INBOX".into(),
            outcome: "succeeded".into(),
            started_at: "t0".into(),
            finished_at: Some("t1".into()),
            signed_at: "t2".into(),
            counts: b.counts.clone(),
            merkle_root: b.root_hex(),
            archive_chain_head: None,
        }
    }

    #[test]
    fn an_entry_line_round_trips_and_keeps_its_leaf() {
        let line = EntryLine::new(entry(3, "u3", "verified"));
        let back: EntryLine = serde_json::from_str(&line.to_json()).unwrap();
        assert_eq!(back, line);
        assert_eq!(hex::encode(back.entry.leaf()), line.leaf);
        assert!(line.to_json().starts_with("{\"leaf\":"));
    }

    #[test]
    fn the_streamed_prefix_parses_as_the_receipt() {
        let mut b = RootBuilder::default();
        let lines: Vec<String> = (0..3).map(|i| b.push(&entry(i, &format!("u{i}"), "verified")).to_json()).collect();
        let header = header(&b);
        let text = format!("{}{}]}}", header.json_prefix("c2ln", "a2V5"), lines.join(","));
        let r = Receipt::parse(text.as_bytes()).unwrap();
        assert_eq!(r.header, header);
        assert_eq!((r.signature.as_str(), r.public_key.as_str()), ("c2ln", "a2V5"));
        assert_eq!(r.entries.len(), 3);
    }
}
