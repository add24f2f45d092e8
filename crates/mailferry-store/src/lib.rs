//! Persistence for mailferry: jobs, runs and the per-message ledger, the service queue,
//! API tokens, the audit log and receipts.
//!
//! The engine only sees the [`Store`] trait; the binary picks a backend: [`SqliteStore`]
//! (the embedded default, one process) or [`PgStore`] (the service: many workers share one
//! database). Both run one implementation: every statement is written once, with `$n`
//! parameters, in `ledger.rs` (runs, ledger, receipts), `claims.rs` (source claims and
//! fencing), `queue.rs` (the service queue, tokens, idempotency keys), `ops.rs` (audit
//! log, cluster figures) and `batches.rs` (the batch list), and a macro there instantiates
//! it for each store type. What truly
//! differs between the databases (times, JSON columns, the label filter, the substring
//! search, row locks and the claim lock) is each backend's `Dialect` (`dialect.rs`), kept
//! with how it connects in `sqlite.rs` and `postgres.rs`. The conformance suite in
//! `tests/conformance.rs` runs every story on both.
//!
//! Times: SQLite stores RFC 3339 UTC text with milliseconds; PostgreSQL stores TIMESTAMPTZ.
//! Every time handed out (`created_at`, `lease_expires_at`, ledger times…) is rendered in
//! that same text form (`2024-05-01T12:00:00.000Z`) by both backends.
#![forbid(unsafe_code)]

mod batches;
mod claims;
mod common;
mod dialect;
mod ledger;
mod ops;
mod postgres;
mod queue;
mod receipt_reader;
pub mod receipts;
mod schedule;
mod service;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use mailferry_model::LedgerState;

pub use batches::BatchFilter;
pub use claims::{ClaimAttempt, ClaimHolder, HeldBy, SourceClaim};
pub use ops::{AuditEntry, AuditFilter, ClusterFigures, NewAuditEntry, OpsStore};
pub use service::*;
pub use postgres::PgStore;
pub use receipt_reader::ReceiptReader;
pub use receipts::{ReceiptRow, StoredReceipt};
pub use sqlite::SqliteStore;

pub type JobId = i64;
pub type RunId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
    #[error("the ledger holds an unknown state {0:?}")]
    UnknownState(String),
    #[error("a stored job spec is unreadable: {0}")]
    BadSpec(String),
    /// A write of a run whose claim on its source mailbox was taken over (fencing).
    #[error("{0}")]
    Fenced(String),
    #[error("not implemented by this backend yet: {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// The database could not be reached (restart, failover, network), as opposed to a
    /// refused or failed statement: trying again later can help, and the data is intact.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed => true,
                // PostgreSQL shutting down or not accepting connections yet (SQLSTATE class
                // 57P: admin_shutdown, crash_shutdown, cannot_connect_now), connection
                // exceptions (class 08).
                sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
                _ => false,
            },
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What the engine knows about one UIDL from earlier runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub uidl: String,
    pub size: u64,
    pub state: LedgerState,
    pub wire_digest: Option<String>,
    pub wire_size: Option<u64>,
    pub message_id: Option<String>,
    pub copied_at: Option<String>,
    /// The LIST size when the UIDL was listed (`None` for rows older than that column).
    pub list_size: Option<u64>,
    /// Where the copy is (APPENDUID, RFC 4315), when known.
    pub dest_uid: Option<u32>,
    pub dest_uidvalidity: Option<u32>,
    /// The INTERNALDATE sent with the APPEND (RFC 3339), when known.
    pub internal_date: Option<String>,
}

/// Which ledger rows [`Store::ledger_where`] returns.
#[derive(Debug, Clone, Copy)]
pub enum LedgerQuery<'a> {
    /// The rows of these UIDLs.
    Uidls(&'a [String]),
    /// Rows left `copying`: APPENDs whose outcome was never recorded.
    InDoubt,
    /// Copied (or copied and deleted) rows whose wire digest is one of these.
    CopiedWithDigests(&'a [String]),
    /// Any one row: whether the job has a ledger at all.
    AnyOne,
}

/// How many UIDLs or digests one [`LedgerQuery`] should carry.
pub const LEDGER_CHUNK: usize = 500;

/// Recorded just before an APPEND is sent: if we crash before the outcome is recorded, the
/// next run knows exactly what to look for at the destination.
#[derive(Debug, Clone)]
pub struct CopyIntent {
    pub uidl: String,
    pub size: u64,
    pub digest: String,
    pub wire_digest: String,
    pub wire_size: u64,
    pub normalized: bool,
    pub message_id: Option<String>,
    pub internal_date: Option<String>,
    pub internal_date_source: &'static str,
}

/// A confirmed copy: the destination answered OK (and maybe APPENDUID).
#[derive(Debug, Clone)]
pub struct CopyDone {
    pub uidl: String,
    pub dest_uid: Option<u32>,
    pub dest_uidvalidity: Option<u32>,
    /// Found already at the destination instead of appended now.
    pub found_at_destination: bool,
}

/// Counts read back from the ledger for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    /// Appended by this run.
    pub copied: u64,
    /// Recognised at the destination by this run (an earlier copy whose outcome was lost).
    pub found: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub skipped: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
    /// UIDLs this run found reused for other bytes (their old rows superseded), with why.
    pub reused: Vec<(String, String)>,
}

/// The persistence the engine and the API need. Every method is one transaction.
/// The service methods live in [`ServiceStore`] (traits named by what they hold), the audit
/// log, cluster figures and batch list in [`OpsStore`]; both backends implement every method.
#[async_trait]
pub trait Store: Send + Sync + 'static + ServiceStore + OpsStore {
    /// Find or create the job for this source → target pair.
    async fn ensure_job(&self, mailbox_key: &str, source: &str, target: &str) -> Result<JobId>;
    async fn start_run(&self, job: JobId, dry_run: bool) -> Result<RunId>;
    async fn finish_run(&self, run: RunId, outcome: &str, error: Option<&str>, summary_json: &str) -> Result<()>;
    /// Every ledger row of the job.
    async fn ledger(&self, job: JobId) -> Result<Vec<LedgerEntry>>;
    /// The ledger rows a [`LedgerQuery`] selects: what a run needs without loading the
    /// whole ledger (whose history of deleted messages can dwarf the mailbox). Callers
    /// pass UIDLs and digests in chunks ([`LEDGER_CHUNK`]).
    async fn ledger_where(&self, job: JobId, query: LedgerQuery<'_>) -> Result<Vec<LedgerEntry>>;
    /// Insert rows for UIDLs seen for the first time (state `listed`); known UIDLs are untouched.
    async fn record_listed(&self, job: JobId, run: RunId, listed: &[(String, u64)]) -> Result<()>;
    /// Mark messages `copying` just before their APPEND goes out.
    async fn mark_copying(&self, job: JobId, run: RunId, intents: &[CopyIntent]) -> Result<()>;
    /// Mark messages `copied` once the destination confirmed them.
    async fn mark_copied(&self, job: JobId, run: RunId, done: &[CopyDone]) -> Result<()>;
    /// An APPEND was refused as a whole: its messages go back to `listed`.
    async fn revert_copying(&self, job: JobId, uidls: &[String]) -> Result<()>;
    async fn mark_skipped(&self, job: JobId, run: RunId, uidl: &str, reason: &str) -> Result<()>;
    async fn mark_failed(&self, job: JobId, run: RunId, uidl: &str, error: &str) -> Result<()>;
    /// Deletion at the source was committed (QUIT answered +OK).
    async fn mark_source_deleted(&self, job: JobId, run: RunId, uidls: &[String]) -> Result<()>;
    /// What this run did, from the ledger.
    async fn run_counts(&self, job: JobId, run: RunId) -> Result<RunCounts>;

    /// Claim the source mailbox `source_key` for `lease` ([`claims`]): granted when nobody
    /// holds it, the holder's lease expired, or `take_over` names the holder's generation
    /// (a holder known to be dead); otherwise who holds it.
    async fn claim_source(&self, source_key: &str, who: &ClaimHolder, lease: Duration, take_over: Option<i64>)
        -> Result<ClaimAttempt>;
    /// Extend a held claim; false when it is no longer ours (taken over or released).
    async fn renew_source(&self, claim: &SourceClaim, lease: Duration) -> Result<bool>;
    async fn release_source(&self, claim: &SourceClaim) -> Result<()>;
    /// Bind a run to its claim: from now on each ledger write of the run fails with
    /// [`StoreError::Fenced`] once the claim's generation is no longer current.
    async fn fence_run(&self, run: RunId, claim: &SourceClaim) -> Result<()>;
    /// The UIDL now names other bytes than the row recorded (a server reused it): keep the
    /// old row under a name no UIDL can have (`<uidl> (superseded in run N)`: UIDLs have no
    /// spaces, RFC 1939 §7), so the new message gets a row of its own and both are reported.
    async fn supersede_reused(&self, job: JobId, run: RunId, uidl: &str, why: &str) -> Result<()>;
    /// Copies read back from the destination (issue 14): a match makes a `copied` row
    /// `verified`; a mismatch leaves it `copied` (never deleted under `after-verified`) with
    /// the error and the digest read back, and counts as a failure of this run.
    async fn record_readback(&self, job: JobId, run: RunId, results: &[ReadBackResult]) -> Result<()>;

    /// Ledger rows of `job` with a UIDL after `after` (byte order), at most `limit`: what a
    /// receipt is built from ([`receipts`]).
    async fn receipt_rows(&self, job: JobId, after: &str, limit: u32) -> Result<Vec<ReceiptRow>>;
    /// Stores receipt entry lines of `run`, numbered from `first_seq`.
    async fn save_receipt_lines(&self, run: RunId, first_seq: u64, lines: &[String]) -> Result<()>;
    /// Stores a signed receipt header (once per run).
    async fn save_receipt(&self, receipt: &StoredReceipt) -> Result<()>;
    /// The receipt of `run` of `job`, or the job's latest receipt when `run` is `None`.
    async fn receipt(&self, job: JobId, run: Option<RunId>) -> Result<Option<StoredReceipt>>;
    /// Receipt entry lines stored under `entries_run` with seq > `after`, in order.
    async fn receipt_lines(&self, entries_run: RunId, after: i64, limit: u32) -> Result<Vec<(i64, String)>>;
}

/// The outcome of reading one copy back ([`Store::record_readback`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBackResult {
    pub uidl: String,
    /// SHA-256 (hex) of what the destination returned, when it returned the message.
    pub readback_digest: Option<String>,
    pub level: mailferry_model::VerifyLevel,
    /// `None`: matched at `level`. `Some`: why not (mismatch, copy missing).
    pub error: Option<String>,
}

impl ReadBackResult {
    /// A copy whose bytes were hashed at the destination itself and found identical (the
    /// destination index, an archive blob re-read): verified exactly.
    pub fn exact(uidl: String, readback_digest: Option<String>) -> Self {
        Self { uidl, readback_digest, level: mailferry_model::VerifyLevel::Exact, error: None }
    }
}

/// The ledger name a superseded row keeps ([`Store::supersede_reused`]).
pub fn superseded_name(uidl: &str, run: RunId) -> String {
    format!("{uidl} (superseded in run {run})")
}
