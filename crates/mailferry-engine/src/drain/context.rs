//! The run's shared room, below every phase of the drain: the [`RunContext`] each phase
//! works in, the messages it plans ([`Planned`]) and hands from source to sink ([`Item`]),
//! the counts kept outside the ledger ([`Tally`]), each message's span, and how each side's
//! errors become the engine's.

use std::sync::Arc;

use mailferry_store::{JobId, RunId, Store};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Span;

use crate::error::EngineError;
use crate::job::{DrainJob, EngineConfig};
use crate::oauth::TokenProvider;
use crate::progress::Progress;
use crate::sink::SinkError;
use crate::spool::Received;

/// One source message the run will retrieve (or skip without retrieving).
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub number: u32,
    pub uidl: String,
    /// The LIST size (RFC 1939 §5).
    pub size: u64,
}

/// Counts that do not come from rows this run wrote.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub listed: u64,
    /// Copied by earlier runs and still at the source.
    pub already_copied: u64,
    pub would_copy: u64,
    pub would_delete: u64,
}

/// What every phase of one run reads: the job, the engine's configuration, the ledger, and
/// where to report. Holds no state of its own: each attempt of the run starts afresh.
pub(super) struct RunContext<'a> {
    pub store: Arc<dyn Store>,
    pub job: &'a DrainJob,
    pub config: &'a EngineConfig,
    pub job_id: JobId,
    pub run: RunId,
    pub progress: &'a watch::Sender<Progress>,
    /// Checked between messages: a cancel stops the copy, skips deletion, and QUITs.
    pub cancel: &'a CancellationToken,
    /// Access tokens for an OAuth2 refresh-token destination.
    pub tokens: Option<&'a TokenProvider>,
}

/// What the source side hands the sink, each with the message's span (closed, with its
/// outcome, once the ledger has recorded it).
#[derive(Debug)]
pub(super) enum Item {
    /// The permit holds the message's share of the memory budget until it is appended.
    Retrieved(Planned, Received, OwnedSemaphorePermit, Span),
    Skip(Planned, String, Span),
    Failed(Planned, String, Span),
}

/// The span of one message, from its RETR (or skip) until the ledger records its outcome.
pub(super) fn message_span(run: &Span, p: &Planned) -> Span {
    tracing::info_span!(
        parent: run,
        "message",
        uidl = %p.uidl,
        message.list_size = p.size,
        message.size = Empty,
        message.wire_size = Empty,
        outcome = Empty,
        otel.status_code = Empty,
    )
}

/// Record a message's outcome on its span (`failed` and `refused` mark it an error).
pub(super) fn close_message(span: Span, outcome: &'static str) {
    span.record("outcome", outcome);
    if matches!(outcome, "failed" | "refused" | "error") {
        span.record("otel.status_code", "ERROR");
    }
}

impl RunContext<'_> {
    pub(super) fn source_err(&self, source: mailferry_pop3::Pop3Error) -> EngineError {
        EngineError::Source { endpoint: self.job.source.display(), source }
    }

    pub(super) fn dest_err(&self, source: mailferry_imap::ImapError) -> EngineError {
        EngineError::Destination { endpoint: self.job.target.display(), source }
    }

    pub(super) fn sink_err(&self, e: SinkError) -> EngineError {
        match e {
            SinkError::Imap(e) => self.dest_err(e),
            SinkError::Archive(source) => EngineError::Archive { name: self.job.target.display(), source },
        }
    }
}
