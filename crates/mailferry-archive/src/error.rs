//! The archive's one error type. Integrity failures get their own variant so no caller can
//! mistake "these bytes are not what we stored" for an ordinary I/O hiccup.

use std::str::FromStr;

use crate::digest::Digest;

pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// What exactly failed when a stored blob was read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("integrity error on blob {digest}: {kind}")]
pub struct IntegrityError {
    pub digest: Digest,
    pub kind: IntegrityKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "kebab-case")]
pub enum IntegrityKind {
    /// The blob decoded, but its SHA-256 is not the digest it is stored under.
    #[error("content hashes to {0}")]
    DigestMismatch(String),
    /// The AEAD tag did not verify (tampered ciphertext, or a wrong key under the same id).
    #[error("sealed blob failed authentication")]
    Authentication,
    /// Header or compressed stream is malformed.
    #[error("blob is corrupt: {0}")]
    Corrupt(String),
    /// The index says the blob is stored, the object store does not have it.
    #[error("blob is missing from object storage")]
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "occurrence {host}/{account}/{uidl} is already archived with digest {existing}, not {offered}"
)]
pub struct OccurrenceConflict {
    pub host: String,
    pub account: String,
    pub uidl: String,
    pub existing: Digest,
    pub offered: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Loud, never retried, never served.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    #[error("blob {0} is sealed with key id {1:?}, which is not configured")]
    UnknownKey(Digest, String),
    #[error("no message with digest {0} in this archive")]
    NotFound(Digest),
    #[error("message {0} was purged (see its tombstone)")]
    Purged(Digest),
    /// The same (host, account, UIDL) arrived again with different bytes: a source that
    /// reuses UIDLs. Refused, so the first arrival's record is never overwritten.
    #[error(transparent)]
    OccurrenceConflict(Box<OccurrenceConflict>),
    #[error("invalid digest: {0}")]
    InvalidDigest(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("search query: {0}")]
    Query(String),
    /// S3 refused or failed an Object Lock call (retention or legal hold).
    #[error("S3 object lock: {0}")]
    ObjectLock(String),
    #[error("hold {0} not found or already released")]
    HoldNotFound(i64),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),
    #[error("search index: {0}")]
    Search(#[from] tantivy::TantivyError),
    #[error("export: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl ArchiveError {
    /// True for failures that mean stored data is not trustworthy.
    pub fn is_integrity(&self) -> bool {
        matches!(self, ArchiveError::Integrity(_))
    }
}

/// Here rather than in `digest.rs`: the error type names `Digest`, so the digest module
/// must not name the error type back.
impl FromStr for Digest {
    type Err = ArchiveError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse_hex(s).map_err(ArchiveError::InvalidDigest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_parse_errors_read_the_same_from_str_and_serde() {
        let long = "a".repeat(100);
        for bad in ["zz", " 12 ", long.as_str(), &"g".repeat(64)] {
            let from_str = bad.parse::<Digest>().unwrap_err();
            assert!(matches!(from_str, ArchiveError::InvalidDigest(_)));
            let serde = serde_json::from_value::<Digest>(serde_json::Value::from(bad)).unwrap_err();
            assert_eq!(serde.to_string(), from_str.to_string());
        }
        assert_eq!(
            long.parse::<Digest>().unwrap_err().to_string(),
            format!("invalid digest: {}", "a".repeat(80))
        );
        let d = Digest::of(b"abc");
        assert_eq!(format!(" {d}\n").parse::<Digest>().unwrap(), d);
    }
}
