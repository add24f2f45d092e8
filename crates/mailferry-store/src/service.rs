//! What the service adds to the store: jobs as a queue with leases, batches, API tokens,
//! idempotency keys, and ledger pages for the API.
//!
//! Leasing (DESIGN.md §5): a worker claims a job in one transaction (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED` under a transaction-scoped advisory lock that serialises claims
//! so per-host caps hold across workers; SQLite: the single writer), holds the lease with a
//! heartbeat, and a job whose lease expired is claimable again (the ledger makes the
//! takeover exactly once).

use std::time::Duration;

use async_trait::async_trait;
use mailferry_model::{ArchiveTask, DeletePolicy, JobCounts, JobSpec, JobState, LedgerState, Scope, Sealed};

use crate::Result;

/// A job row as the API and the workers see it. Times are RFC 3339 UTC text with
/// milliseconds (`2024-05-01T12:00:00.000Z`) on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: i64,
    pub state: JobState,
    /// The stored spec, secrets sealed. `None` for jobs made by `mailferry migrate`.
    pub spec: Option<JobSpec>,
    pub source: String,
    pub target: String,
    pub batch_id: Option<i64>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    /// Passes started (claims of a queued job; lease takeovers do not count).
    pub runs: i64,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<String>,
    /// W3C `traceparent` of the API request that created the job: the job's spans continue
    /// that trace on whichever worker runs it.
    pub trace_parent: Option<String>,
    /// An archive verify or export run (such jobs have no spec and are not listed with
    /// the migration jobs).
    pub task: Option<ArchiveTask>,
    /// When the job may be claimed next: a `scheduled` job's next pass (issue 17), a
    /// queued job's retry after a backoff.
    pub next_run_at: Option<String>,
    /// The final pass a cutover asked for.
    pub cutover: Option<Cutover>,
}

/// A cutover (issue 17): one final pass with its own delete policy, after which the job's
/// schedule is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutover {
    pub delete: DeletePolicy,
    /// When the final pass started (it was claimed); `None` while it is still to come.
    pub started_at: Option<String>,
}

/// What the final pass of a cutover did, from the ledger: rows copied, and deleted at the
/// source, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CutoverCounts {
    pub copied: u64,
    pub deleted: u64,
}

/// What [`ServiceStore::enqueue_task`] did.
#[derive(Debug, Clone)]
pub enum TaskQueued {
    Queued(Box<JobRecord>),
    /// The archive already has this many active runs (queued, running or paused): these.
    Busy(Vec<ArchiveTask>),
}

/// Filters for `GET /jobs`, all combined with AND; results ordered by id, `after` is the
/// cursor (last id seen).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub batch: Option<i64>,
    /// `key=value` label match: the job's labels hold `key` with exactly `value`.
    pub label: Option<(String, String)>,
    /// Case-insensitive substring of the source or target display (user/host search); no
    /// wildcards. Empty means no filter. (SQLite folds ASCII case only.)
    pub text: Option<String>,
    pub after: Option<i64>,
    /// Page size: 0 means 100, anything above 500 means 500.
    pub limit: u32,
}

/// Connection caps enforced across all workers sharing the database, counted over live
/// leases. Host names compare case-insensitively; archive targets have no target host and
/// no target cap. A cap of 0 means no cap.
#[derive(Debug, Clone, Copy)]
pub struct ClaimLimits {
    pub per_source_host: u32,
    pub per_target_host: u32,
}

/// A claimed job, and whether it was taken over from an expired lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: JobRecord,
    pub takeover: bool,
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    /// False when the lease was lost (expired and taken by another worker).
    pub held: bool,
    pub cancel_requested: bool,
    pub pause_requested: bool,
}

/// User actions on a job. Jobs made by `mailferry migrate` (no spec) are driven by their
/// own process: every action on them is a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// queued|paused → cancelled; running → cancel requested (the worker stops between messages).
    Cancel,
    /// queued → paused; running → pause requested.
    Pause,
    /// paused → queued; running with a pause requested → the request is withdrawn.
    Resume,
    /// succeeded|partial|failed|cancelled → queued (a delta pass on the same ledger);
    /// clears `last_error`, `finished_at` and both request flags.
    Rerun,
    /// One final pass with this delete policy, then the schedule ends (issue 17):
    /// scheduled|queued|paused → queued at once; running → the final pass follows the
    /// running one (refused while the final pass itself runs); a finished job → queued, as
    /// a rerun. A later cutover replaces an earlier one still to come.
    Cutover(DeletePolicy),
}

// A record is returned once per request; boxing it would only cost callers a deref.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlOutcome {
    Done(JobRecord),
    /// The action does not apply in the job's current state.
    Conflict(JobState),
    NotFound,
}

/// How a worker hands a job back. The lease and both request flags are cleared;
/// terminal states set `finished_at`.
#[derive(Debug, Clone)]
pub struct Release {
    /// succeeded | partial | failed | cancelled | paused, queued (shutdown, retry later), or
    /// scheduled (a delta pass ended; the next one at `not_before`). `running` is refused
    /// (`Unsupported`). While a cutover requested during this pass is still to come,
    /// scheduled, succeeded, partial and failed become queued instead (the final pass next).
    pub state: JobState,
    /// Becomes the job's `last_error` (`None` clears it).
    pub error: Option<String>,
    /// For `queued` and `scheduled`: not claimable before this delay (retry backoff, the
    /// next pass).
    pub not_before: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: i64,
    pub name: String,
    pub created_at: String,
}

/// A batch with its jobs' aggregate state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    pub batch: BatchRecord,
    pub jobs: u64,
    /// Jobs per state.
    pub states: Vec<(JobState, u64)>,
    /// Sum of the jobs' ledger counts.
    pub counts: JobCounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: String,
}

/// One ledger row for the API (never message content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub uidl: String,
    pub size: u64,
    pub state: LedgerState,
    pub reason: Option<String>,
    pub digest: Option<String>,
    pub dest_uid: Option<u32>,
    pub internal_date: Option<String>,
    pub internal_date_source: Option<String>,
    pub first_seen_at: String,
    pub copied_at: Option<String>,
    pub deleted_at: Option<String>,
}

/// One recorded change of a job (table `job_events`, written by database triggers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub id: i64,
    pub job_id: i64,
    pub at: String,
    pub state: JobState,
    /// The job's last error on a state change, or `cancel requested` / `pause requested`.
    pub detail: Option<String>,
}

/// The first response to a POST with an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// SHA-256 of method + path + body: the same key with another request is refused.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

// The service half of the store, in traits named by what they hold. Both backends
// implement every method, once, in `queue.rs`; test doubles implement the one they stand
// in for.

/// Jobs as a queue: creating, listing and controlling them, claims with leases, archive
/// runs, batches.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Database reachable and migrations applied (`/readyz`).
    async fn ping(&self) -> Result<()>;
    /// Create jobs (state `queued`), in a new batch when `batch_name` is given; one transaction.
    async fn create_jobs(&self, batch_name: Option<&str>, specs: &[JobSpec]) -> Result<(Option<BatchRecord>, Vec<JobRecord>)> {
        self.create_jobs_traced(batch_name, specs, None).await
    }
    /// [`create_jobs`](Self::create_jobs), each job remembering the W3C `traceparent` its
    /// spans continue (stored as given; the caller validates it).
    async fn create_jobs_traced(
        &self,
        batch_name: Option<&str>,
        specs: &[JobSpec],
        trace_parent: Option<&str>,
    ) -> Result<(Option<BatchRecord>, Vec<JobRecord>)>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>>;
    /// Ledger rows ordered by UIDL (byte order), after the cursor (the last UIDL seen).
    /// `limit`: 0 means 100, anything above 500 means 500.
    async fn ledger_page(&self, job: i64, after: Option<&str>, limit: u32) -> Result<Vec<LedgerRow>>;
    async fn control(&self, id: i64, action: ControlAction) -> Result<ControlOutcome>;
    /// Claim the oldest claimable job: `queued` or `scheduled` (and past its `not_before`), or `running`
    /// with an expired lease; never one whose source mailbox has a live session, never
    /// beyond the per-host caps counted over live leases; never a job with neither spec nor task.
    /// A claim of a queued job starts a pass (`runs + 1`, `started_at`); a takeover keeps
    /// both, and keeps any pending cancel/pause request.
    async fn claim_job(&self, worker: &str, lease: Duration, limits: ClaimLimits) -> Result<Option<Claimed>>;
    /// Extend the lease to now + `lease` if `worker` still holds it (owner and `running`;
    /// an expired lease nobody took yet is still held). Flags are false when not held.
    async fn heartbeat(&self, id: i64, worker: &str, lease: Duration) -> Result<LeaseStatus>;
    /// Hand the job back; false (and nothing changed) if `worker` no longer held it.
    async fn release_job(&self, id: i64, worker: &str, release: &Release) -> Result<bool>;
    /// Queue an archive run as a job, unless its archive already has `max_active` runs
    /// queued, running or paused (checked and inserted in one write transaction, so two
    /// requests at once cannot both take the last place).
    async fn enqueue_task(&self, task: &ArchiveTask, max_active: usize, trace_parent: Option<&str>) -> Result<TaskQueued>;
    /// The job running run `run` of `archive`.
    async fn task_job(&self, archive: &str, run: i64) -> Result<Option<JobRecord>>;
    async fn get_batch(&self, id: i64) -> Result<Option<BatchSummary>>;
    /// What the job's cutover pass copied and deleted so far; `None` when no cutover pass
    /// has started.
    async fn cutover_counts(&self, id: i64) -> Result<Option<CutoverCounts>>;
    /// Replace the schedule in the job's stored spec (`None` ends it), in one transaction
    /// on the locked row, and move the job's next run to match (see the `schedule` module:
    /// a waiting job's next run is `max(not_before, last pass start + every, now)`; ending
    /// a schedule ends a waiting job in its last pass's state). `Conflict` for jobs without
    /// a spec (CLI jobs, archive runs) and jobs with a cutover.
    async fn set_schedule(&self, id: i64, schedule: Option<mailferry_model::Schedule>) -> Result<ControlOutcome>;
}

/// What watching a job reads: the job, its ledger counts and its recorded state changes.
#[async_trait]
pub trait JobProgress: Send + Sync {
    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>>;
    /// Counts over the job's whole ledger: listed = rows, copied = copied + source-deleted,
    /// deleted = source-deleted, bytes = wire bytes of copied rows.
    async fn job_counts(&self, id: i64) -> Result<JobCounts>;
    /// The job's events with id above `after`, oldest first.
    async fn job_events(&self, job: i64, after: i64, limit: u32) -> Result<Vec<JobEvent>>;
}

/// Changes to a stored job's spec made while it runs.
#[async_trait]
pub trait JobSpecs: Send + Sync {
    /// Save a rotated refresh token (RFC 6749 §6: the client must drop the old one): replace
    /// the refresh token of the job's OAuth2 refresh-token grant with `new`, keeping the rest
    /// of the stored spec, in one transaction, and only while the stored one is still
    /// `current` (a compare-and-swap on the sealed text, so a credential changed meanwhile,
    /// or a rotation saved by another worker, is never overwritten). False, and nothing
    /// changed, when the job is gone, has no such grant, or holds another refresh token.
    /// Any state, lease holder or not: the authorization server already revoked `current`.
    async fn replace_refresh_token(&self, id: i64, current: &Sealed, new: &Sealed) -> Result<bool>;
}

/// API tokens (stored by hash) and the idempotency keys recorded per token.
#[async_trait]
pub trait ApiTokens: Send + Sync {
    /// Store a token by its hash (the token itself is never stored).
    async fn create_token(&self, name: &str, scope: Scope, token_hash: &str) -> Result<TokenRecord>;
    /// Also records the use (`last_used_at`).
    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn delete_token(&self, id: i64) -> Result<bool>;
    async fn idempotency_get(&self, token_id: i64, key: &str) -> Result<Option<StoredResponse>>;
    /// Record the first response; if another request stored one first, keep that one.
    async fn idempotency_put(&self, token_id: i64, key: &str, response: &StoredResponse) -> Result<()>;
}

/// The whole service half of the store.
pub trait ServiceStore: JobQueue + JobProgress + JobSpecs + ApiTokens {}

impl<T: JobQueue + JobProgress + JobSpecs + ApiTokens + ?Sized> ServiceStore for T {}
