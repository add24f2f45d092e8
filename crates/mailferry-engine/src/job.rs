//! What one run is asked to do (the job: source, target, policies) and with what means
//! (the engine's configuration: protocol options, pipeline bounds, retries, claims and
//! receipts). Plain data: every other part of the engine reads it, none of it reads back.

use std::sync::Arc;

use mailferry_imap::ImapOptions;
use mailferry_model::{DeletePolicy, JobOptions, Pop3Endpoint, VerifyLevel};
use mailferry_pop3::Pop3Options;
use mailferry_store::JobId;

use crate::claim::ClaimConfig;
use crate::oauth::SaveRotated;
use crate::retry::RetryPolicy;
use crate::sink::Target;
use crate::spool::SpoolConfig;

/// What to drain, where to, and how.
#[derive(Debug, Clone)]
pub struct DrainJob {
    /// The job row this run belongs to; `None` finds or creates it by mailbox key (CLI).
    pub job_id: Option<JobId>,
    /// For a refresh-token destination of a stored job: how to save a rotated refresh token
    /// into the job's spec before it is used. `None` (`mailferry migrate`): a rotated token
    /// lives in memory for the rest of the run only.
    pub save_rotated: Option<SaveRotated>,
    pub source: Pop3Endpoint,
    pub target: Target,
    pub delete: DeletePolicy,
    pub dry_run: bool,
    /// Larger messages are skipped with a reason (and stay at the source).
    pub max_message_bytes: Option<u64>,
    /// How copies read back from the destination are compared (issue 14).
    pub verify: VerifyLevel,
}

impl DrainJob {
    /// A run of `source` into `target` with a job's options: how the worker (from a stored
    /// job's spec) and `mailferry migrate` (from its flags) both make one.
    pub fn new(source: Pop3Endpoint, target: Target, options: &JobOptions) -> Self {
        Self {
            job_id: None,
            save_rotated: None,
            source,
            target,
            delete: options.delete,
            dry_run: options.dry_run,
            max_message_bytes: options.max_message_bytes,
            verify: options.verify,
        }
    }

    /// The run of stored job `id`, saving a rotated refresh token into its spec.
    pub fn of_stored_job(self, id: JobId, save_rotated: Option<SaveRotated>) -> Self {
        Self { job_id: Some(id), save_rotated, ..self }
    }

    /// Identifies the source mailbox and target folder: reruns share one ledger.
    pub fn mailbox_key(&self) -> String {
        let s = &self.source;
        format!("pop3://{}@{}:{} -> {}", s.username, s.host, s.port, self.target.key())
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub pop3: Pop3Options,
    pub imap: ImapOptions,
    pub spool: SpoolConfig,
    /// RETRs kept in flight when the source advertises PIPELINING (RFC 2449).
    pub retr_window: usize,
    /// Retrieved messages waiting for the sink.
    pub channel_capacity: usize,
    /// Bytes of message bodies held in memory between source and sink (larger messages
    /// are spooled to disk and do not count): what bounds the pipeline's memory.
    pub memory_budget: usize,
    /// Most messages and bytes in one (MULTI)APPEND batch.
    pub batch_messages: usize,
    pub batch_bytes: u64,
    /// APPEND sessions into the destination folder at once (lanes, drain/lanes.rs); 1 for
    /// an archive. The default is where W1 stopped gaining on this machine kind
    /// (docs/PERFORMANCE.md).
    pub append_sessions: usize,
    pub retry: RetryPolicy,
    /// The run's claim on its source mailbox (one run per mailbox at a time).
    pub claim: ClaimConfig,
    /// Signs each finished run's receipt (a [`crate::receipt::Signer`]); `None` issues no
    /// receipts.
    pub receipts: Option<Arc<mailferry_proof::ReceiptSigner>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            pop3: Pop3Options::default(),
            imap: ImapOptions::default(),
            spool: SpoolConfig::default(),
            retr_window: 16,
            channel_capacity: 256,
            memory_budget: 16 * 1024 * 1024,
            batch_messages: 64,
            batch_bytes: 8 * 1024 * 1024,
            append_sessions: 2,
            retry: RetryPolicy::default(),
            claim: ClaimConfig::default(),
            receipts: None,
        }
    }
}
