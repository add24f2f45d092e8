//! Where a drain delivers: an IMAP folder or a compliance archive. The pipeline is the same;
//! what "durably confirmed" means differs (a tagged OK to APPEND; an fsynced blob plus a
//! committed archive index row), and so do the exactly-once lookups.

use std::sync::Arc;

use chrono::Utc;
use mailferry_archive::{Archive, ArchiveError, MessageSource, Occurrence, PutOutcome};
use mailferry_imap::{AppendBody, AppendMessage, AppendOutcome, Appender};
use mailferry_model::ImapEndpoint;

/// The destination of a drain.
#[derive(Debug, Clone)]
pub enum Target {
    Imap(ImapEndpoint),
    Archive(ArchiveTarget),
}

/// A named archive, opened once per process and shared.
#[derive(Debug, Clone)]
pub struct ArchiveTarget {
    pub name: String,
    pub archive: Arc<Archive>,
}

impl Target {
    /// `imap user@host:port/folder` or `archive NAME`; never a secret.
    pub fn display(&self) -> String {
        match self {
            Self::Imap(ep) => ep.display(),
            Self::Archive(a) => format!("archive {}", a.name),
        }
    }

    /// `imap` or `archive`, for spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Imap(_) => "imap",
            Self::Archive(_) => "archive",
        }
    }

    /// The ledger identity part of the target.
    pub fn key(&self) -> String {
        match self {
            Self::Imap(t) => format!("imap://{}@{}:{}/{}", t.username, t.host, t.port, t.folder),
            Self::Archive(a) => format!("archive:{}", a.name),
        }
    }

    /// IMAP needs CRLF; an archive keeps the retrieved bytes exactly (its identity is their
    /// SHA-256, DESIGN.md §3).
    pub fn normalizes_line_endings(&self) -> bool {
        matches!(self, Self::Imap(_))
    }
}

/// The open destination during a run (one per run, so the size difference between the
/// variants does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Sink {
    Imap(Appender),
    Archive { archive: Arc<Archive>, source_host: String, account: String, job: i64, run: i64 },
}

impl Sink {
    pub(crate) fn append_limit(&self) -> Option<u64> {
        match self {
            Self::Imap(a) => a.capabilities().append_limit,
            Self::Archive { .. } => None,
        }
    }

    pub(crate) fn precheck(&self, msg: &AppendMessage) -> Option<String> {
        match self {
            Self::Imap(a) => a.precheck(msg),
            Self::Archive { .. } => None,
        }
    }

    pub(crate) fn flags(&self, configured: &[String]) -> Vec<String> {
        match self {
            Self::Imap(_) => configured.to_vec(),
            Self::Archive { .. } => Vec::new(),
        }
    }

    /// Deliver a batch: one outcome per message. `Err` means the destination failed
    /// part-way: it carries the outcomes the destination gave before failing (the messages
    /// it confirmed are stored and must be recorded as copied); the unknown ones stay
    /// `copying` for the next run to resolve.
    pub(crate) async fn deliver(&mut self, msgs: &[AppendMessage], uidls: &[String]) -> Result<Vec<AppendOutcome>, DeliverError> {
        match self {
            Self::Imap(a) => a
                .append_batch(msgs)
                .await
                .map_err(|e| DeliverError { outcomes: e.outcomes, error: SinkError::Imap(e.error) }),
            Self::Archive { archive, source_host, account, job, run } => {
                let group = msgs
                    .iter()
                    .zip(uidls)
                    .map(|(msg, uidl)| {
                        let source = match &msg.body {
                            AppendBody::Memory(v) => MessageSource::from(v.clone()),
                            AppendBody::Spooled { path, .. } => MessageSource::from(path.to_path_buf()),
                        };
                        let occurrence = Occurrence {
                            source_host: source_host.clone(),
                            account: account.clone(),
                            uidl: uidl.clone(),
                            job_id: Some(*job),
                            run_id: Some(*run),
                            retrieved_at: Utc::now(),
                        };
                        (source, occurrence)
                    })
                    .collect();
                // put_group() returns once every blob is fsynced and the group's one index
                // transaction is committed: only then may a message count as copied.
                match archive.put_group(group).await {
                    Ok(results) => {
                        let mut failed = None;
                        let mut known = Vec::with_capacity(results.len());
                        for r in results {
                            match archive_outcome(r) {
                                Ok(o) => known.push(Some(o)),
                                Err(e) => {
                                    // This message alone failed (an unreadable spool file, an
                                    // Object Lock call): unknown; the others stand.
                                    known.push(None);
                                    failed.get_or_insert(e);
                                }
                            }
                        }
                        match failed {
                            None => Ok(known.into_iter().flatten().collect()),
                            Some(e) => Err(DeliverError { outcomes: known, error: SinkError::Archive(e) }),
                        }
                    }
                    Err(e) => {
                        // Nothing of the group was committed: only refusals decided before
                        // its transaction are known; the rest stay `copying`.
                        let mut known: Vec<Option<AppendOutcome>> =
                            e.outcomes.into_iter().map(|o| o.and_then(|r| archive_outcome(r).ok())).collect();
                        known.resize(msgs.len(), None);
                        Err(DeliverError { outcomes: known, error: SinkError::Archive(e.error) })
                    }
                }
            }
        }
    }

    pub(crate) async fn close(self) {
        if let Self::Imap(a) = self {
            a.logout().await;
        }
    }
}

/// One archive result as an APPEND outcome: stored (or already there) is `Appended`, a
/// UIDL already archived with different bytes is `Refused`; any other error is returned.
fn archive_outcome(r: Result<PutOutcome, ArchiveError>) -> Result<AppendOutcome, ArchiveError> {
    match r {
        Ok(_) => Ok(AppendOutcome::Appended { uid: None, uid_validity: None }),
        Err(ArchiveError::OccurrenceConflict(c)) => Ok(AppendOutcome::Refused(format!(
            "the archive already holds different bytes for this UIDL ({})",
            c.existing
        ))),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
pub(crate) enum SinkError {
    Imap(mailferry_imap::ImapError),
    Archive(ArchiveError),
}

/// A delivery that failed part-way.
#[derive(Debug)]
pub(crate) struct DeliverError {
    /// One per message, in order: `Some` where the destination answered (stored, or
    /// refused), `None` where the outcome is unknown.
    pub(crate) outcomes: Vec<Option<AppendOutcome>>,
    pub(crate) error: SinkError,
}

