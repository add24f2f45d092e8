//! Engine errors: which side failed, and whether retrying can help.

use mailferry_imap::ImapError;
use mailferry_model::ErrorClass;
use mailferry_pop3::Pop3Error;
use mailferry_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("source {endpoint}: {source}")]
    Source { endpoint: String, source: Pop3Error },
    #[error("destination {endpoint}: {source}")]
    Destination { endpoint: String, source: ImapError },
    #[error("destination {endpoint}: OAuth2: {source}")]
    OAuth2 { endpoint: String, source: crate::oauth::OAuth2Error },
    #[error("archive {name}: {source}")]
    Archive { name: String, source: mailferry_archive::ArchiveError },
    #[error("ledger: {0}")]
    Store(#[from] StoreError),
    #[error("spooling a message to disk failed: {0}")]
    Spool(std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// Another run holds the source mailbox (DESIGN.md §2.8).
    #[error("the source mailbox {mailbox} is being drained by another run: {holder}; wait for it to finish (or use --wait)")]
    SourceBusy { mailbox: String, holder: mailferry_store::HeldBy },
    /// The run's claim on its source was taken over, or could not be renewed in time: it
    /// stopped between messages, deleting nothing.
    #[error("the run lost its claim on the source mailbox {mailbox} (taken over, or not renewable in time); it stopped without deleting anything")]
    ClaimLost { mailbox: String },
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    /// The message without the endpoint (whose user name is often a mail address), for
    /// events inside exported spans; the span already names the job and the host.
    pub fn redacted(&self) -> String {
        match self {
            Self::Source { source, .. } => format!("source: {source}"),
            Self::Destination { source, .. } => format!("destination: {source}"),
            Self::OAuth2 { source, .. } => format!("destination: OAuth2: {source}"),
            other => other.to_string(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Source { source, .. } => source.class(),
            Self::Destination { source, .. } => source.class(),
            Self::OAuth2 { source, .. } => source.class(),
            // Storage hiccups may pass; damaged data or bad configuration will not.
            Self::Archive { source, .. } => match source {
                mailferry_archive::ArchiveError::Io(_)
                | mailferry_archive::ArchiveError::Sql(_)
                | mailferry_archive::ArchiveError::ObjectStore(_)
                // S3 throttling or an outage on a retention/legal-hold call; a bucket without
                // Object Lock keeps failing and the job ends after the retry budget.
                | mailferry_archive::ArchiveError::ObjectLock(_) => ErrorClass::Retryable,
                _ => ErrorClass::Fatal,
            },
            // The database went away for a moment (restart, failover, network): the ledger
            // is intact and the run can start over from it.
            Self::Store(e) if e.is_unavailable() => ErrorClass::Retryable,
            Self::Store(_) | Self::Spool(_) | Self::Internal(_) | Self::SourceBusy { .. } | Self::ClaimLost { .. } => {
                ErrorClass::Fatal
            }
        }
    }
}

