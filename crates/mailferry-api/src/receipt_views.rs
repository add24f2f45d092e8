//! The signed migration receipt (issue 14) as the OpenAPI document describes it.
//!
//! The API never builds a receipt from these types: the engine signs and stores it, and
//! `GET /jobs/{id}/receipt` streams the stored text as it is (what was signed is never
//! parsed and encoded again on the way out). These mirrors of
//! `mailferry_proof::Receipt` exist for the schema: every field is listed in wire order and
//! required (the optional ones are `null` when empty, never absent), and each struct
//! refuses unknown fields, so a test that reads a real receipt through them fails when the
//! document and the receipt drift apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A migration receipt (`format` `mailferry-receipt/1`): the header (every field before
/// `signature`), the Ed25519 `signature` over the header's canonical bytes (compact JSON,
/// fields in this order, `null` when empty), the key that made it, and one entry per source
/// message in UIDL order. `merkle_root` is the RFC 9162 Merkle tree root over the entries'
/// leaves, each leaf the SHA-256 of `0x00` followed by the entry's canonical bytes (its
/// fields without `leaf`). `mailferry receipt verify FILE --public-key KEY` checks all of
/// it offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptDoc {
    #[schema(example = "mailferry-receipt/1")]
    pub format: String,
    /// The job's id.
    pub job: i64,
    /// The run's id (what `?run=` takes).
    pub run: i64,
    #[schema(example = "pop3 alice@pop.example.com:995")]
    pub source: String,
    /// `imap user@host:port/folder` or `archive NAME`.
    #[schema(example = "imap alice@imap.example.com:993/INBOX")]
    pub target: String,
    /// `succeeded`, `partial`, `cancelled` or `failed`.
    #[schema(example = "succeeded")]
    pub outcome: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    pub signed_at: String,
    pub counts: ReceiptCountsDoc,
    /// Hex SHA-256 Merkle root over the entries' leaves, in order.
    pub merkle_root: String,
    /// The archive's hash-chain head when the receipt was made (archive targets only).
    #[schema(required = true)]
    pub archive_chain_head: Option<ChainHeadDoc>,
    /// base64 Ed25519 signature over the header's canonical bytes.
    pub signature: String,
    /// base64 Ed25519 public key (32 bytes) that made the signature; compare it with
    /// `GET /receipts/public-key` (or a copy kept elsewhere) before trusting it.
    pub public_key: String,
    pub entries: Vec<ReceiptEntryDoc>,
}

/// Entries by status (a verifier recomputes them from the entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptCountsDoc {
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

/// The archive hash chain's last link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChainHeadDoc {
    pub seq: i64,
    pub hash: String,
}

/// One source message and what became of it, after its Merkle leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptEntryDoc {
    /// Hex leaf hash of this entry (SHA-256 of `0x00` and the entry's canonical bytes):
    /// carried so that a verifier names the entry that changed.
    pub leaf: String,
    /// 0-based position.
    pub seq: u64,
    pub source: SourceRefDoc,
    /// Octets retrieved (the LIST size while not yet retrieved).
    pub size: u64,
    /// Hex SHA-256 of the exact bytes retrieved from the source.
    #[schema(required = true)]
    pub sha256: Option<String>,
    /// Hex SHA-256 of the bytes sent (bare LF → CRLF is the only change).
    #[schema(required = true)]
    pub sent_sha256: Option<String>,
    /// The ledger state: `listed`, `copying`, `copied`, `verified`, `source-deleted`,
    /// `skipped` or `failed`.
    pub status: String,
    /// Where the IMAP copy is (IMAP targets, once copied).
    #[schema(required = true)]
    pub destination: Option<DestinationRefDoc>,
    /// The archive occurrence (archive targets, once copied).
    #[schema(required = true)]
    pub archive: Option<ArchiveRefDoc>,
    /// Hex SHA-256 of the copy as read back from the destination.
    #[schema(required = true)]
    pub readback_sha256: Option<String>,
    /// `exact`, `body` or `size`: how the read-back copy was compared.
    #[schema(required = true)]
    pub verification: Option<String>,
    #[schema(required = true)]
    pub verified_at: Option<String>,
    #[schema(required = true)]
    pub copied_at: Option<String>,
    /// `kept` or `deleted`.
    pub source_action: String,
    #[schema(required = true)]
    pub deleted_at: Option<String>,
    /// Why the message was skipped or failed, or why its read-back did not match.
    #[schema(required = true)]
    pub reason: Option<String>,
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceRefDoc {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub uidl: String,
}

/// Where an IMAP copy is; `uid` is null when the destination gave no APPENDUID and the
/// copy was not located since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationRefDoc {
    pub host: String,
    pub port: u16,
    pub account: String,
    pub folder: String,
    #[schema(required = true)]
    pub uidvalidity: Option<u32>,
    #[schema(required = true)]
    pub uid: Option<u32>,
}

/// The archive occurrence a message was stored as; the blob is the entry's `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRefDoc {
    pub archive: String,
    pub source_host: String,
    pub account: String,
    pub uidl: String,
}

/// The key that verifies this installation's receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyView {
    #[schema(example = "ed25519")]
    pub algorithm: String,
    /// base64 of the 32-byte Ed25519 public key (the `public_key` of every receipt this
    /// installation signs).
    pub public_key: String,
}
