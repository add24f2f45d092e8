//! The worker pool: claim jobs from the shared store, run each under a heartbeat-renewed
//! lease, and hand it back with its outcome.
//!
//! Many workers on many machines can share one PostgreSQL (DESIGN.md §5): claims are
//! serialised by the store, per-host connection caps and one-session-per-maildrop are
//! enforced at claim time, and a worker that dies simply stops renewing its lease; another
//! worker takes the job over and the ledger makes the resumed run exactly once.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use mailferry_model::{JobSpec, JobState, OAuth2Spec, Sealer, TargetSpec};
use mailferry_store::{Claimed, ClaimLimits, Release, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::abort::AbortOnDrop;
use crate::drain::run_job;
use crate::job::{DrainJob, EngineConfig};
use crate::oauth::SaveRotated;
use crate::progress::Outcome;
use crate::schedule::{final_pass, next_pass};
use mailferry_archive::Archives;

#[derive(Clone)]
pub struct WorkerConfig {
    /// Unique per process (see [`unique_worker_id`]): names lease owners.
    pub id: String,
    /// Jobs this worker runs at once.
    pub concurrency: usize,
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll_interval: Duration,
    pub limits: ClaimLimits,
    pub engine: EngineConfig,
    /// Hosts that may be reached without TLS (the API checks this at creation too).
    pub plaintext_allowed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// Extra trusted roots for every endpoint (PEM).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Where endpoints may resolve to (SSRF guard, checked after DNS).
    pub network: Arc<mailferry_model::NetworkPolicy>,
    /// The archives jobs may target, opened once per process.
    pub archives: Arc<Archives>,
}

/// How long a job whose source mailbox another run holds (or whose run found the database
/// unreachable) waits before it is claimable again.
const REQUEUE_DELAY: Duration = Duration::from_secs(30);

/// How often a running job looks for cancel and pause requests.
const CONTROL_POLL: Duration = Duration::from_secs(1);

/// A worker id no other process shares: host name and pid can both repeat (two containers
/// whose process is PID 1 on hosts of one name), so a random suffix makes it unique.
pub fn unique_worker_id(host: &str) -> String {
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// What a panic carried, for the job's error (panics carry a `&str` or a `String`).
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

fn requested(cancel: bool, pause: bool) -> Option<StopReason> {
    if cancel {
        Some(StopReason::Cancel)
    } else if pause {
        Some(StopReason::Pause)
    } else {
        None
    }
}

/// Why a running job was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Pause,
    Shutdown,
    LeaseLost,
    /// The lease could not be renewed (database unreachable) and is about to run out: the
    /// run stops between messages, without DELE, before another worker may take over.
    LeaseExpiring,
}

pub struct Worker {
    store: Arc<dyn Store>,
    sealer: Sealer,
    config: WorkerConfig,
    /// Numbers this worker's claims: each claim's lease owner is `id#n`, a fencing token
    /// that no earlier claim of the same job by this same worker shares.
    claims: AtomicU64,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("id", &self.id)
            .field("concurrency", &self.concurrency)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Worker {
    pub fn new(store: Arc<dyn Store>, sealer: Sealer, config: WorkerConfig) -> Self {
        Self { store, sealer, config, claims: AtomicU64::new(0) }
    }

    /// Claim and run jobs until `shutdown`; then stop claiming, let running jobs finish
    /// their in-flight message, and give their leases back (state `queued`).
    pub async fn run(self, shutdown: CancellationToken) {
        let me = Arc::new(self);
        let mut running: JoinSet<()> = JoinSet::new();
        let mut stops: Vec<(CancellationToken, Arc<Mutex<Option<StopReason>>>)> = Vec::new();
        tracing::info!(worker = %me.config.id, concurrency = me.config.concurrency, "worker started");
        loop {
            while running.try_join_next().is_some() {}
            // Forget finished jobs: their reason cell is no longer shared with a task.
            stops.retain(|(_, reason)| Arc::strong_count(reason) > 1);
            let mut claimed_one = false;
            if running.len() < me.config.concurrency.max(1) && !shutdown.is_cancelled() {
                // A fresh owner per claim fences the lease: heartbeats and the release of an
                // earlier claim of the same job (by this worker too) find another owner.
                let owner = format!("{}#{}", me.config.id, me.claims.fetch_add(1, Ordering::Relaxed) + 1);
                match me.store.claim_job(&owner, me.config.lease, me.config.limits).await {
                    Ok(Some(claimed)) => {
                        crate::metrics::claimed(claimed.takeover);
                        let token = CancellationToken::new();
                        let reason = Arc::new(Mutex::new(None));
                        stops.push((token.clone(), Arc::clone(&reason)));
                        let span = job_span(&claimed);
                        running.spawn(Arc::clone(&me).run_guarded(claimed, owner, token, reason).instrument(span));
                        claimed_one = true;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "claiming a job failed"),
                }
            }
            if claimed_one {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(me.config.poll_interval) => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        tracing::info!(worker = %me.config.id, running = running.len(), "shutting down: releasing leases");
        for (token, reason) in &stops {
            set_reason(reason, StopReason::Shutdown);
            token.cancel();
        }
        while running.join_next().await.is_some() {}
    }

    /// Runs a claimed job; a panic anywhere in it (a bug, or bytes no parser expected) ends
    /// the job `failed` with the panic's text and hands the lease back, instead of leaving
    /// the job `running` under a lease nobody renews or, worse, one a detached task renews.
    async fn run_guarded(
        self: Arc<Self>,
        claimed: Claimed,
        owner: String,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) {
        let id = claimed.job.id;
        let run = AssertUnwindSafe(Arc::clone(&self).run_claimed(claimed, owner.clone(), cancel, reason));
        if let Err(panic) = run.catch_unwind().await {
            let text = panic_text(&*panic);
            tracing::error!(job.id = id, panic = %text, "the job's run panicked; the job is failed");
            crate::metrics::panicked();
            let why = format!("internal error (a bug in mailferry; please report it): the run panicked: {text}");
            self.release(id, &owner, Release { state: JobState::Failed, error: Some(why), not_before: None }).await;
        }
    }

    /// Runs inside the job's span ([`job_span`]).
    async fn run_claimed(
        self: Arc<Self>,
        claimed: Claimed,
        owner: String,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) {
        let job = claimed.job;
        let release = |state: JobState, error: Option<String>| Release { state, error, not_before: None };
        if let Some(task) = job.task.clone() {
            return self.run_task(job.id, task, owner, cancel, reason).await;
        }
        let drain = match &job.spec {
            Some(spec) => self.drain_job(job.id, spec).await,
            None => Err("the job has no stored spec".into()),
        };
        let drain = match drain {
            // A cutover's final pass deletes by the cutover's policy (issue 17).
            Ok(d) => match final_pass(&job) {
                Some(delete) => DrainJob { delete, ..d },
                None => d,
            },
            Err(why) => {
                self.release(job.id, &owner, release(JobState::Failed, Some(why))).await;
                return;
            }
        };
        let heartbeat = AbortOnDrop(tokio::spawn(
            Arc::clone(&self).heartbeat(job.id, owner.clone(), cancel.clone(), Arc::clone(&reason)).in_current_span(),
        ));
        let mut engine = self.config.engine.clone();
        engine.claim.holder = crate::claim::this_process(&format!("mailferry worker {owner}, job {}", job.id));
        let result = run_job(Arc::clone(&self.store), &drain, &engine, None, cancel.clone()).await;
        drop(heartbeat);
        let stop = *reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let outcome = match (result, stop) {
            (_, Some(StopReason::LeaseLost)) => {
                crate::metrics::lease_lost();
                tracing::Span::current().record("job.state", "lease-lost");
                tracing::warn!("lease lost: another worker owns the job now");
                return;
            }
            (_, Some(StopReason::LeaseExpiring)) => {
                // Stopped before the lease ran out; the release may still reach the database.
                crate::metrics::lease_lost();
                release(JobState::Queued, Some("the job's lease could not be renewed (database unreachable); stopped without deleting anything".into()))
            }
            // The mailbox is being drained by another run (a CLI run, say): try again later.
            (Err(e @ crate::error::EngineError::SourceBusy { .. }), None) => {
                Release { state: JobState::Queued, error: Some(e.to_string()), not_before: Some(REQUEUE_DELAY) }
            }
            // The database was unreachable past the run's retries: the ledger is intact, so
            // the job goes back to the queue and resumes from it later.
            (Err(crate::error::EngineError::Store(e)), None) if e.is_unavailable() => {
                Release { state: JobState::Queued, error: Some(format!("ledger: {e}")), not_before: Some(REQUEUE_DELAY) }
            }
            (Ok(r), _) if r.outcome == Outcome::Succeeded => release(JobState::Succeeded, None),
            (Ok(r), _) if r.outcome == Outcome::Partial => {
                release(JobState::Partial, Some(format!("{} message(s) failed; see the ledger", r.summary.failed)))
            }
            (_, Some(StopReason::Pause)) => release(JobState::Paused, None),
            (_, Some(StopReason::Shutdown)) => release(JobState::Queued, None),
            (Ok(_), _) | (Err(_), Some(StopReason::Cancel)) => release(JobState::Cancelled, None),
            (Err(e), None) => release(JobState::Failed, Some(e.to_string())),
        };
        // The schedule may have been edited during the pass (PUT /jobs/{id}/schedule): the
        // stored one decides what follows; the claimed one if the store cannot say.
        let job = match self.store.get_job(job.id).await {
            Ok(Some(stored)) if stored.spec.is_some() => mailferry_store::JobRecord { spec: stored.spec, ..job },
            _ => job,
        };
        let outcome = next_pass(&job, outcome, chrono::Utc::now());
        tracing::info!(state = %outcome.state, next_run_at = ?outcome.not_before, "job finished");
        self.release(job.id, &owner, outcome).await;
    }

    /// Runs an archive verify or export run under the job's lease; its outcome is recorded
    /// with the archive before the job is released.
    async fn run_task(
        self: Arc<Self>,
        id: i64,
        task: mailferry_model::ArchiveTask,
        owner: String,
        cancel: CancellationToken,
        reason: Arc<Mutex<Option<StopReason>>>,
    ) {
        use crate::archive_task::TaskEnd;
        let heartbeat = AbortOnDrop(tokio::spawn(
            Arc::clone(&self).heartbeat(id, owner.clone(), cancel.clone(), Arc::clone(&reason)).in_current_span(),
        ));
        let (archive, end) = crate::archive_task::run(&self.config.archives, &task, cancel).await;
        drop(heartbeat);
        let stop = *reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let release = |state: JobState, error: Option<String>| Release { state, error, not_before: None };
        let outcome = match (end, stop) {
            (TaskEnd::Finished { outcome, failed }, _) => {
                if let Some(a) = &archive {
                    crate::archive_task::record(a, &task, &outcome, failed).await;
                }
                let error = outcome.get("error").and_then(|e| e.as_str()).map(str::to_owned);
                if failed { release(JobState::Failed, error) } else { release(JobState::Succeeded, None) }
            }
            (TaskEnd::Stopped, Some(StopReason::LeaseLost)) => {
                crate::metrics::lease_lost();
                tracing::warn!("lease lost: another worker owns the archive run now");
                return;
            }
            (TaskEnd::Stopped, Some(StopReason::Cancel)) => {
                let why = serde_json::json!({ "error": "cancelled at the user's request" });
                if let Some(a) = &archive {
                    crate::archive_task::record(a, &task, &why, true).await;
                }
                release(JobState::Cancelled, None)
            }
            // Shutdown, or a lease that cannot be renewed: back to the queue; the run starts
            // over on whichever worker claims it next.
            (TaskEnd::Stopped, _) => release(JobState::Queued, None),
        };
        tracing::info!(state = %outcome.state, "archive run finished");
        self.release(id, &owner, outcome).await;
    }

    async fn release(&self, id: i64, owner: &str, release: Release) {
        let span = tracing::Span::current();
        span.record("job.state", release.state.as_str());
        if release.state == JobState::Failed {
            span.record("otel.status_code", "ERROR");
        }
        // A database that is briefly unreachable (a restart, a failover) should not leave
        // the job to its lease: try again each second for up to half the lease, while the
        // lease still makes this process the job's owner.
        let give_up = tokio::time::Instant::now() + self.config.lease / 2;
        loop {
            match self.store.release_job(id, owner, &release).await {
                Ok(true) => crate::metrics::finished(release.state.as_str()),
                Ok(false) => tracing::warn!(job.id = id, "the lease was gone when releasing"),
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < give_up => {
                    tracing::warn!(job.id = id, error = %e, "releasing the job failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => tracing::error!(job.id = id, error = %e, "releasing the job failed; its lease will expire"),
            }
            return;
        }
    }

    /// Renew the lease every third of its length, and look for cancel/pause requests every
    /// second (a cheap read by primary key), so a cancel takes effect promptly; relay a lost
    /// lease too. When renewals fail (the database is unreachable) the run is stopped once
    /// less than a third of the lease is left, so it is back between messages, with nothing
    /// deleted, before the lease can expire and another worker take the job over.
    async fn heartbeat(self: Arc<Self>, id: i64, owner: String, cancel: CancellationToken, reason: Arc<Mutex<Option<StopReason>>>) {
        let lease = self.config.lease;
        let renew_every = lease / 3;
        let mut last_renewal = tokio::time::Instant::now();
        let mut next_renewal = last_renewal + renew_every;
        loop {
            tokio::time::sleep(CONTROL_POLL.min(renew_every)).await;
            let now = tokio::time::Instant::now();
            let stop = if now >= next_renewal {
                match self.store.heartbeat(id, &owner, lease).await {
                    Ok(s) if !s.held => Some(StopReason::LeaseLost),
                    Ok(s) => {
                        last_renewal = now;
                        next_renewal = now + renew_every;
                        requested(s.cancel_requested, s.pause_requested)
                    }
                    Err(e) => {
                        // Try again soon: a database blip should not cost the lease.
                        tracing::warn!(error = %e, "renewing the job's lease failed");
                        crate::metrics::heartbeat_failed();
                        next_renewal = now + CONTROL_POLL.min(renew_every);
                        (last_renewal.elapsed() >= lease.saturating_sub(renew_every)).then_some(StopReason::LeaseExpiring)
                    }
                }
            } else {
                match self.store.get_job(id).await {
                    Ok(Some(job)) if job.lease_owner.as_deref() != Some(owner.as_str()) => Some(StopReason::LeaseLost),
                    Ok(Some(job)) => requested(job.cancel_requested, job.pause_requested),
                    Ok(None) => Some(StopReason::LeaseLost),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the job's control flags failed");
                        None
                    }
                }
            };
            if let Some(stop) = stop {
                set_reason(&reason, stop);
                cancel.cancel();
                return;
            }
        }
    }

    /// Open the sealed secrets and build the engine's view of the job (as the preflight
    /// does, [`crate::stored::job_of_spec`]), saving rotated refresh tokens into its spec.
    async fn drain_job(&self, id: i64, spec: &JobSpec) -> Result<DrainJob, String> {
        let env = crate::stored::SpecEnv {
            sealer: self.sealer.clone(),
            extra_roots_pem: self.config.extra_roots_pem.clone(),
            plaintext_allowed: Arc::clone(&self.config.plaintext_allowed),
            network: Arc::clone(&self.config.network),
            archives: Arc::clone(&self.config.archives),
        };
        let job = crate::stored::job_of_spec(spec, &env).await.map_err(|reason| reason.detail)?;
        // A rotated refresh token is sealed like the stored one and saved over it.
        let save_rotated = match &spec.target {
            TargetSpec::Imap { oauth2: Some(grant), .. } => match &**grant {
                OAuth2Spec::RefreshToken { refresh_token, .. } => {
                    Some(SaveRotated { sealer: self.sealer.clone(), stored: refresh_token.clone() })
                }
                OAuth2Spec::AccessToken { .. } => None,
            },
            _ => None,
        };
        Ok(job.of_stored_job(id, save_rotated))
    }
}

/// Record why a run was stopped (the first reason wins); a poisoned lock still holds a
/// usable value (the reason is a plain `Copy` enum).
fn set_reason(cell: &Mutex<Option<StopReason>>, why: StopReason) {
    cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(why);
}

/// The span of one claimed job: the parent of its runs, itself a child of the API request
/// that created the job when the job row carries its `traceparent` (possibly made by
/// another process). Ids, kinds and states only: never an endpoint's user or secret.
fn job_span(claimed: &Claimed) -> tracing::Span {
    let job = &claimed.job;
    let target_kind = match (job.spec.as_ref().map(|s| &s.target), &job.task) {
        (Some(TargetSpec::Imap { .. }), _) => "imap",
        (Some(TargetSpec::Archive { .. }), _) => "archive",
        (None, Some(task)) => task.kind(),
        (None, None) => "unknown",
    };
    let span = tracing::info_span!(
        "job",
        job.id = job.id,
        job.takeover = claimed.takeover,
        target.kind = target_kind,
        job.state = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if let Some(tp) = job.trace_parent.as_deref() {
        if !crate::trace::continue_trace(&span, tp) {
            tracing::debug!(job.id = job.id, "the job's stored trace context was not continued");
        }
    }
    span
}
