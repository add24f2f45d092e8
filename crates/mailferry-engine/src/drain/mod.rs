//! One job run: list, plan, resolve doubts, copy through a bounded channel, delete.
//!
//! The rooms, from the ground up: `context` (what every phase shares: the run's context,
//! the planned messages, the items handed from source to sink), `plan` (the listing diffed
//! against the ledger), `retrieve` (the source task), `indoubt` (what the destination holds
//! already), `deliver` (the sink side, batch by batch), `lanes` (several APPEND sessions
//! sharing the batches), `delete` (read back, DELE, QUIT).
//! This room runs the attempts, retrying, and finishes the run: its summary, its row in
//! the ledger, its receipt.

mod context;
mod delete;
mod deliver;
mod indoubt;
mod lanes;
mod plan;
mod retrieve;

use std::sync::Arc;

use chrono::Utc;
use mailferry_model::{DeletePolicy, MessageFailure, RunSummary};
use mailferry_pop3::Pop3Session;
use mailferry_store::{LedgerQuery, Store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::Span;

use context::{RunContext, Tally};
use crate::error::{EngineError, Result};
use crate::job::{DrainJob, EngineConfig};
use crate::progress::{Outcome, Progress, RunReport};
use crate::sink::Target;

/// Run the job once (a new run in its ledger), retrying retryable failures with backoff.
///
/// The `run` span is the parent of one `message` span per message retrieved or skipped.
/// Its fields are ids, counts and kinds: never a user name, a secret, or message content.
#[tracing::instrument(
    name = "run",
    skip_all,
    fields(
        job.id = Empty,
        run.id = Empty,
        source.host = %job.source.host,
        target.kind = job.target.kind(),
        dry_run = job.dry_run,
        attempts = Empty,
        outcome = Empty,
        messages.listed = Empty,
        messages.copied = Empty,
        messages.skipped = Empty,
        messages.failed = Empty,
        bytes = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    )
)]pub async fn run_job(
    store: Arc<dyn Store>,
    job: &DrainJob,
    config: &EngineConfig,
    progress: Option<watch::Sender<Progress>>,
    cancel: CancellationToken,
) -> Result<RunReport> {
    // One run per source mailbox: claimed before anything is recorded, so a refused run
    // leaves no trace in the ledger. `stop` ends this run when the claim is lost.
    let stop = cancel.child_token();
    let source_key = job.source.source_key();
    let claim = crate::claim::acquire(Arc::clone(&store), &source_key, &config.claim, &cancel, stop.clone()).await?;
    let cancel = stop;
    let job_id = match job.job_id {
        Some(id) => id,
        None => store.ensure_job(&job.mailbox_key(), &job.source.display(), &job.target.display()).await?,
    };
    let started_at = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let run = store.start_run(job_id, job.dry_run).await?;
    store.fence_run(run, &claim.claim).await?;
    let span = Span::current();
    span.record("job.id", job_id).record("run.id", run);
    let progress = progress.unwrap_or_else(|| watch::channel(Progress::default()).0);
    let _meter = crate::metrics::meter(&job.target, progress.subscribe());
    // One per run: a token minted for one attempt serves the reconnects after it.
    let tokens = crate::oauth::TokenProvider::for_target(&job.target).map(|p| match &job.save_rotated {
        Some(save) => p.saving_rotations(Arc::clone(&store) as _, job_id, save.clone()),
        None => p,
    });
    let ctx = RunContext {
        store: Arc::clone(&store),
        job,
        config,
        job_id,
        run,
        progress: &progress,
        cancel: &cancel,
        tokens: tokens.as_ref(),
    };
    let (result, attempts) = ctx.attempts().await;
    span.record("attempts", attempts);
    let claim_lost = claim.lost();
    claim.release(&*store).await;
    match result {
        _ if claim_lost => ctx.fail(EngineError::ClaimLost { mailbox: source_key }, started_at, &span).await,
        Ok(tally) => ctx.finish(tally, started_at, &span).await,
        Err(e) => ctx.fail(e, started_at, &span).await,
    }
}

impl RunContext<'_> {
    /// Attempt the run until an attempt succeeds, fails for good, or the retry budget is
    /// spent (backing off between attempts); returns the last result and the attempts made.
    async fn attempts(&self) -> (Result<Tally>, u32) {
        let mut attempt = 1;
        loop {
            match self.attempt().await {
                Ok(tally) => return (Ok(tally), attempt),
                Err(e) if e.class().is_retryable() && attempt < self.config.retry.attempts && !self.cancel.is_cancelled() => {
                    crate::metrics::attempt_failed(&e);
                    let delay = self.config.retry.delay(attempt);
                    tracing::warn!(error = %e.redacted(), attempt, ?delay, "retryable failure; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cancel.cancelled() => {}
                    }
                    attempt += 1;
                }
                Err(e) => {
                    crate::metrics::attempt_failed(&e);
                    return (Err(e), attempt);
                }
            }
        }
    }

    /// One attempt: list and plan, open the destination (settling what is there already),
    /// copy, then delete what the policy allows and QUIT.
    async fn attempt(&self) -> Result<Tally> {
        // Reliability tests make a run panic here (a stand-in for any bug or unexpected
        // bytes) to prove the worker fails the job and releases its lease: the failpoint's
        // argument names the source user whose runs panic, so other tests run undisturbed.
        #[cfg(feature = "failpoints")]
        if let Some(Some(user)) = fail::eval("engine::attempt", |arg| arg) {
            if user == self.job.source.username {
                panic!("injected by the test for {user}");
            }
        }
        let mut pop = Pop3Session::connect(&self.job.source, &self.config.pop3).await.map_err(|e| self.source_err(e))?;
        let _pop_session = crate::metrics::Session::open("pop3", &self.job.source.host);
        let listing = self.list(&mut pop).await?;
        let ledger_was_empty = self.store.ledger_where(self.job_id, LedgerQuery::AnyOne).await?.is_empty();
        let plan = self.plan(&listing).await?;
        if self.job.dry_run {
            let tally = self.dry_run_tally(&listing, &plan);
            let _ = pop.quit().await;
            return Ok(tally);
        }
        let tally = Tally { listed: listing.count, already_copied: plan.already_copied, ..Tally::default() };
        self.record_listing(&listing, &plan).await?;
        let mut to_copy = plan.to_copy;
        let reverify = self.job.delete != DeletePolicy::Keep && self.job.verify.reads_back() && !plan.unverified.is_empty();
        if to_copy.is_empty() && !reverify {
            // Nothing to copy, nothing in doubt (a `copying` row is planned for copying),
            // nothing to read back: the destination has no part in this run (a no-op rerun
            // connects to the source only).
            self.progress.send_modify(|p| p.listed = tally.listed);
            if self.cancel.is_cancelled() {
                pop.quit().await.map_err(|e| self.source_err(e))?;
            } else {
                self.delete_and_quit(pop, &listing.listed).await?;
            }
            return Ok(tally);
        }
        let destination = self.open_destination(&mut to_copy, ledger_was_empty).await?;
        let _imap_session = destination.session;
        self.progress.send_modify(|p| {
            p.listed = tally.listed;
            p.to_copy = to_copy.len() as u64;
        });

        let mut sink = destination.sink;
        if reverify {
            self.reverify(&mut sink, &plan.unverified).await?;
        }
        drop(plan.unverified);
        let (pop, appender) = self.copy(pop, sink, to_copy, destination.index).await?;
        appender.close().await;
        if self.cancel.is_cancelled() {
            // No DELE was sent, so QUIT commits nothing; it just releases the maildrop.
            pop.quit().await.map_err(|e| self.source_err(e))?;
            return Ok(tally);
        }
        self.delete_and_quit(pop, &listing.listed).await?;
        Ok(tally)
    }

    /// The run's summary and outcome, recorded in its ledger row, and its receipt.
    async fn finish(&self, tally: Tally, started_at: String, span: &Span) -> Result<RunReport> {
        let summary = self.summarise(&tally).await?;
        let outcome = if self.cancel.is_cancelled() {
            Outcome::Cancelled
        } else if summary.failed > 0 {
            Outcome::Partial
        } else {
            Outcome::Succeeded
        };
        let json = serde_json::to_string(&summary).unwrap_or_default();
        self.store.finish_run(self.run, outcome.name(), None, &json).await?;
        let chain_head = match &self.job.target {
            Target::Archive(t) => t.archive.chain_head().await.ok().flatten(),
            Target::Imap(_) => None,
        };
        self.issue_receipt(outcome.name(), started_at, chain_head).await;
        span.record("outcome", outcome.name())
            .record("messages.listed", summary.listed)
            .record("messages.copied", summary.copied)
            .record("messages.skipped", summary.skipped)
            .record("messages.failed", summary.failed)
            .record("bytes", summary.bytes);
        Ok(RunReport { job: self.job_id, run: self.run, outcome, summary })
    }

    /// What the run did: the ledger rows it wrote and its tally (a dry run's, what it
    /// would do); on an archive, with the Merkle root over the run's arrivals.
    async fn summarise(&self, tally: &Tally) -> Result<RunSummary> {
        let job = self.job;
        let counts = self.store.run_counts(self.job_id, self.run).await?;
        let failures =
            |v: Vec<(String, String)>| v.into_iter().map(|(uidl, error)| MessageFailure { uidl, error }).collect::<Vec<_>>();
        let mut summary = RunSummary {
            listed: tally.listed,
            copied: if job.dry_run { tally.would_copy } else { counts.copied },
            already_present: counts.found + tally.already_copied,
            skipped: counts.skipped.len() as u64,
            failed: counts.failed.len() as u64,
            deleted: if job.dry_run { tally.would_delete } else { counts.deleted },
            bytes: counts.bytes,
            dry_run: job.dry_run,
            failures: failures(counts.failed),
            skips: failures(counts.skipped),
            reused: failures(counts.reused),
            merkle_root: None,
            merkle_leaves: None,
        };
        if let (Target::Archive(target), false) = (&job.target, job.dry_run) {
            let root = target
                .archive
                .record_run_root(self.job_id, self.run, "mailferry-engine")
                .await
                .map_err(|source| EngineError::Archive { name: job.target.display(), source })?;
            summary.merkle_root = Some(root.root);
            summary.merkle_leaves = Some(root.leaves);
        }
        Ok(summary)
    }

    /// The run failed: recorded with its error, and its receipt issued.
    async fn fail(&self, e: EngineError, started_at: String, span: &Span) -> Result<RunReport> {
        span.record("outcome", "failed").record("otel.status_code", "ERROR").record("otel.status_description", e.redacted());
        self.store.finish_run(self.run, "failed", Some(&e.to_string()), "{}").await?;
        self.issue_receipt("failed", started_at, None).await;
        Err(e)
    }

    /// Signs and stores the run's receipt (not for dry runs). A failure is logged, not
    /// fatal: the ledger is the truth and the run's outcome stands; the API then has no
    /// receipt for it.
    async fn issue_receipt(&self, outcome: &str, started_at: String, chain_head: Option<(i64, String)>) {
        let Some(signer) = self.config.receipts.as_deref().filter(|_| !self.job.dry_run) else { return };
        let facts =
            crate::receipt::RunFacts { job: self.job, job_id: self.job_id, run: self.run, outcome, started_at, chain_head };
        if let Err(e) = crate::receipt::issue(&*self.store, signer, facts).await {
            tracing::error!(job.id = self.job_id, run.id = self.run, error = %e, "could not issue the run's receipt");
        }
    }
}
