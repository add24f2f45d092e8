//! The compliance archive (DESIGN.md §3 "Archive", issue 4): a deduplicated store of exact
//! message bytes over `object_store` (local disk by default, S3 for scale), with an
//! occurrence per arrival, zstd + optional XChaCha20-Poly1305 sealing, a hash-chained event
//! log, per-run Merkle roots, retention and legal hold, verify, tantivy search and export.
//!
//! Layout of one archive directory (`./mailferry-data/archive/NAME/`):
//! `index.sqlite` (occurrences, blobs, metadata, events, holds, policy, tombstones),
//! `search/` (tantivy, rebuildable), `tmp/` (staging), and with the local backend
//! `blobs/ab/cd/<sha256>`.
//!
//! On local disk the archive is tamper-*evident*, not WORM: anyone with write access to the
//! directory can destroy data, but not alter it without `verify` noticing (publish the
//! chain head to make history rewrites detectable too). WORM needs S3 Object Lock.
#![forbid(unsafe_code)]

mod archive;
mod backend;
pub mod blob;
pub mod chain;
mod config;
mod digest;
mod error;
mod export;
mod index;
mod ingest;
mod ingest_group;
mod keys;
pub mod merkle;
pub mod meta;
#[cfg(feature = "aws")]
mod object_lock;
mod registry;
mod retention;
mod roots;
mod runs;
mod search;
mod searching;
mod types;
mod verify;
mod worm;

pub use archive::Archive;
pub use chain::{ChainBreak, Event, EventKind};
#[cfg(feature = "aws")]
pub use config::S3Config;
#[cfg(feature = "aws")]
pub use object_lock::{LockMode, ObjectLockState};
pub use config::{ArchiveConfig, BlobStoreConfig, DatabaseUrl, IndexConfig};
pub use index::{shared_archive_names, SharedRegistry};
pub use ingest_group::GroupError;
pub use digest::{Digest, Hasher};
pub use error::{ArchiveError, IntegrityError, IntegrityKind, OccurrenceConflict, Result};
pub use export::{mboxrd_quote, mboxrd_split, ExportFormat, ExportReport, ManifestEntry};
pub use keys::KeyRing;
pub use merkle::{verify_proof, MerkleProof};
pub use meta::MessageMeta;
pub use registry::{Archives, OpenLimits};
pub use retention::{Hold, HoldScope, PurgeItem, PurgePlan, PurgeReport, RetentionPolicy};
pub use runs::RunRecord;
pub use search::{SearchHit, SearchPage, SearchQuery};
pub use types::{
    ArchiveStats, BlobState, MessageRecord, MessageSource, Occurrence, OccurrenceRecord,
    PutOutcome, RunRoot, Tombstone,
};
pub use verify::{Discrepancy, VerifyReport};
