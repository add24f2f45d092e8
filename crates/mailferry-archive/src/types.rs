//! The archive's records: what a caller hands in (a message source and its occurrence) and
//! what it gets back (occurrence and message records, put outcomes, tombstones, figures, run
//! roots). Plain data: the handle and the index rows that fill them live above.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::meta::MessageMeta;

/// Where a message's bytes come from. Files are streamed (hashed, then compressed) and
/// never read whole into memory; `Bytes` is shared, not copied.
#[derive(Debug, Clone)]
pub enum MessageSource {
    Bytes(Bytes),
    Path(PathBuf),
}

impl From<Bytes> for MessageSource {
    fn from(b: Bytes) -> Self {
        MessageSource::Bytes(b)
    }
}
impl From<Vec<u8>> for MessageSource {
    fn from(b: Vec<u8>) -> Self {
        MessageSource::Bytes(b.into())
    }
}
impl From<&'static [u8]> for MessageSource {
    fn from(b: &'static [u8]) -> Self {
        MessageSource::Bytes(Bytes::from_static(b))
    }
}
impl From<PathBuf> for MessageSource {
    fn from(p: PathBuf) -> Self {
        MessageSource::Path(p)
    }
}
impl From<&Path> for MessageSource {
    fn from(p: &Path) -> Self {
        MessageSource::Path(p.to_path_buf())
    }
}

impl MessageSource {
    pub(crate) fn reader(&self) -> std::io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            MessageSource::Bytes(b) => Box::new(&b[..]),
            MessageSource::Path(p) => Box::new(std::io::BufReader::with_capacity(
                64 * 1024,
                std::fs::File::open(p)?,
            )),
        })
    }
}

/// Provenance of one arrival, given by the caller (the engine knows the job and mailbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occurrence {
    pub source_host: String,
    pub account: String,
    pub uidl: String,
    pub job_id: Option<i64>,
    pub run_id: Option<i64>,
    pub retrieved_at: DateTime<Utc>,
}

/// An occurrence as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OccurrenceRecord {
    pub id: i64,
    pub archive: String,
    pub source_host: String,
    pub account: String,
    pub uidl: String,
    pub job_id: Option<i64>,
    pub run_id: Option<i64>,
    pub retrieved_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
    pub digest: Digest,
    pub size: u64,
    pub event_seq: i64,
}

/// What `put` did. `stored_new` is false when the bytes were already in the archive;
/// `occurrence_new` is false when this (host, account, UIDL) was already recorded (rerun).
/// Either way, once `put` returns the message is durable: blob fsynced (or PUT acknowledged)
/// and the index committed — the engine may mark the ledger row `copied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutOutcome {
    pub digest: Digest,
    pub size: u64,
    pub stored_new: bool,
    pub occurrence_new: bool,
    pub occurrence_id: i64,
    /// Encoded size in object storage when this call stored the blob.
    pub stored_size: Option<u64>,
}

/// Lifecycle state of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobState {
    Stored,
    Purged,
}

/// A purge's trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub digest: Digest,
    pub size: u64,
    pub reason: String,
    pub purged_by: String,
    pub purged_at: DateTime<Utc>,
    pub event_seq: i64,
}

/// Everything known about one message: `GET …/messages/{digest}/meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub digest: Digest,
    pub state: BlobState,
    pub size: u64,
    pub stored_size: u64,
    pub key_id: Option<String>,
    pub stored_at: DateTime<Utc>,
    /// `None` once purged.
    pub meta: Option<MessageMeta>,
    pub occurrences: Vec<OccurrenceRecord>,
    pub tombstone: Option<Tombstone>,
}

/// `GET /api/v1/archives` figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveStats {
    pub name: String,
    /// Distinct stored messages (blobs not purged).
    pub messages: u64,
    pub occurrences: u64,
    pub purged: u64,
    /// Bytes in object storage (compressed, sealed).
    pub stored_bytes: u64,
    /// Sum of occurrence sizes: bytes before dedup and compression.
    pub logical_bytes: u64,
    /// Sum of distinct message sizes (after dedup, before compression).
    pub unique_bytes: u64,
    /// logical / unique (1.0 = no duplicates).
    pub dedup_ratio: f64,
    /// stored / logical.
    pub storage_ratio: f64,
}

/// Merkle root of one job run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRoot {
    pub job_id: i64,
    pub run_id: i64,
    pub leaves: u64,
    pub root: String,
}
