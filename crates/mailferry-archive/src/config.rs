//! How an archive is opened: where its index lives, where its blobs go, which keys seal them.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;

use crate::keys::KeyRing;

/// One named archive. `dir` always holds the SQLite index (`index.sqlite`), the search
/// index (`search/`) and a spool for staging (`tmp/`); with [`BlobStoreConfig::Local`]
/// it also holds the blobs (`blobs/ab/cd/<sha256>`).
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    /// The archive's name (DESIGN.md §3: a named, tenant-scoped store).
    pub name: String,
    /// e.g. `./mailferry-data/archive/NAME`.
    pub dir: PathBuf,
    pub blobs: BlobStoreConfig,
    /// Where the index (occurrences, blobs, events, holds…) lives.
    pub index: IndexConfig,
    pub keys: KeyRing,
    /// Only the first this-many bytes of a message are parsed for metadata and body text,
    /// so memory stays bounded for huge messages (the blob itself is always complete).
    pub metadata_scan_limit: usize,
    /// Search-index commits are batched: at most this many documents wait uncommitted.
    /// (The SQLite index is always committed before `put` returns.)
    pub search_commit_every: usize,
}

impl ArchiveConfig {
    /// The embedded default: blobs on local disk under `dir`, unsealed.
    pub fn local(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            dir: dir.into(),
            blobs: BlobStoreConfig::Local,
            index: IndexConfig::Local,
            keys: KeyRing::none(),
            metadata_scan_limit: 16 * 1024 * 1024,
            search_commit_every: 1000,
        }
    }

    pub fn with_keys(mut self, keys: KeyRing) -> Self {
        self.keys = keys;
        self
    }

    pub fn with_blobs(mut self, blobs: BlobStoreConfig) -> Self {
        self.blobs = blobs;
        self
    }

    pub fn with_index(mut self, index: IndexConfig) -> Self {
        self.index = index;
        self
    }
}

/// Where an archive's index lives.
#[derive(Debug, Clone, Default)]
pub enum IndexConfig {
    /// `<dir>/index.sqlite`: the archive is self-contained (one process at a time).
    #[default]
    Local,
    /// A schema of its own in this PostgreSQL database, so workers on many machines can
    /// ingest into one archive (blobs then belong on S3). The search index stays per
    /// process and catches up from the shared event log.
    Postgres(DatabaseUrl),
}

/// The index database's URL: the model's redacting type (never printed whole).
pub use mailferry_model::DatabaseUrl;

/// Where blobs live.
#[derive(Clone)]
pub enum BlobStoreConfig {
    /// `<dir>/blobs/…` on local disk, written with fsync (tamper-evident, not WORM).
    Local,
    /// S3-compatible object storage (objects under `<prefix>/blobs/ab/cd/<sha256>`).
    #[cfg(feature = "aws")]
    S3(S3Config),
    /// Any other `object_store` implementation (tests use `InMemory`). Its `put` must
    /// only return once the object is durable.
    Custom(Arc<dyn ObjectStore>),
}

impl fmt::Debug for BlobStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobStoreConfig::Local => f.write_str("Local"),
            #[cfg(feature = "aws")]
            BlobStoreConfig::S3(c) => f.debug_tuple("S3").field(c).finish(),
            BlobStoreConfig::Custom(s) => write!(f, "Custom({s})"),
        }
    }
}

/// S3 settings. Credentials are not here: they come from the standard environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, …) so they are never
/// in a config file or a Debug print.
#[cfg(feature = "aws")]
/// Also the binary's `[archive.s3]` section, deserialized straight into this type (one
/// declaration of each setting).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for MinIO/moto; `None` for AWS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Key prefix inside the bucket; defaults to the archive name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Needed for `http://` endpoints (test servers). Off by default.
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), which most S3-compatible servers want.
    pub path_style: bool,
    /// Set Object Lock retention (until ingest + the archive's retention period) and legal
    /// holds on every blob, so the storage itself enforces WORM. The bucket must have been
    /// created with Object Lock enabled. `None`: rely on the bucket's default retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<crate::object_lock::LockMode>,
}
