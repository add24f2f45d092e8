//! Proofs an auditor can check without trusting mailferry (issue 14, DESIGN.md §3):
//!
//! - [`merkle`]: RFC 9162 (Certificate Transparency v2) Merkle trees over arbitrary leaves,
//!   with inclusion proofs. The archive's per-run roots and the receipts both use it.
//! - [`receipt`]: the migration receipt: one entry per source message, a Merkle root over
//!   the entries, an Ed25519 signature over the header.
//! - [`signer`]: the installation's receipt signing key (a file, generated on first use
//!   like `secret.key`).
//! - [`check`]: offline verification of a receipt, naming every entry that does not match.
//!
//! Pure apart from reading and writing the key file: the CLI, the engine and the API build
//! on it, and nothing here knows about POP3, IMAP or the database.

pub mod check;
pub mod merkle;
pub mod receipt;
pub mod signer;

pub use check::{check_receipt, Finding, KeyChoice, Verdict};
pub use receipt::{ArchiveRef, DestinationRef, EntryLine, Receipt, ReceiptCounts, ReceiptEntry, ReceiptHeader, SourceRef, RECEIPT_FORMAT};
pub use signer::{PublicKey, ReceiptSigner, SignerError};
