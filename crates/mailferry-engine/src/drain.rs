//! One job run: list, plan, resolve doubts, copy through a bounded channel, delete.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::Utc;
use mailferry_imap::{AppendMessage, AppendOutcome, DestinationIndex, ImapOptions, ImapSession};
use mailferry_model::{
    DeletePolicy, LedgerState, MessageFailure, Pop3Endpoint, RunSummary,
};
use mailferry_pop3::{Pop3Options, Pop3Session};
use mailferry_store::{CopyDone, CopyIntent, JobId, LedgerEntry, LedgerQuery, ReadBackResult, RunId, Store, LEDGER_CHUNK};

use crate::plan::{copied_before, Planned};
use crate::verify::Sent;
use crate::retrieve::{kib, retrieve, size_agrees, SourceError};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::error::{EngineError, Result};
use crate::message::header_facts;
use crate::retry::RetryPolicy;
use crate::sink::{Sink, SinkError, Target};
use crate::spool::{Received, SpoolConfig};

/// What to drain, where to, and how.
#[derive(Debug, Clone)]
pub struct DrainJob {
    /// The job row this run belongs to; `None` finds or creates it by mailbox key (CLI).
    pub job_id: Option<JobId>,
    /// For a refresh-token destination of a stored job: how to save a rotated refresh token
    /// into the job's spec before it is used. `None` (`mailferry migrate`): a rotated token
    /// lives in memory for the rest of the run only.
    pub save_rotated: Option<crate::oauth::SaveRotated>,
    pub source: Pop3Endpoint,
    pub target: Target,
    pub delete: DeletePolicy,
    pub dry_run: bool,
    /// Larger messages are skipped with a reason (and stay at the source).
    pub max_message_bytes: Option<u64>,
    /// How copies read back from the destination are compared (issue 14).
    pub verify: mailferry_model::VerifyLevel,
}

impl DrainJob {
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
    pub retry: RetryPolicy,
    /// The run's claim on its source mailbox (one run per mailbox at a time).
    pub claim: crate::claim::ClaimConfig,
    /// Signs each finished run's receipt; `None` issues no receipts.
    pub receipts: Option<crate::receipt::Signer>,
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
            retry: RetryPolicy::default(),
            claim: crate::claim::ClaimConfig::default(),
            receipts: None,
        }
    }
}

/// Live counters for progress displays (copied includes copies found at the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub listed: u64,
    pub to_copy: u64,
    pub copied: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every message is at the destination or deliberately skipped.
    Succeeded,
    /// Some messages failed; each is in the ledger with its error.
    Partial,
    /// Stopped on request between messages; nothing was deleted at the source.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: JobId,
    pub run: RunId,
    pub outcome: Outcome,
    pub summary: RunSummary,
}

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
)]
pub async fn run_job(
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
        Some(save) => p.saving_rotations(Arc::clone(&store), job_id, save.clone()),
        None => p,
    });
    let mut attempt = 1;
    let result = loop {
        let mut ctx = RunContext {
            store: Arc::clone(&store),
            job,
            config,
            job_id,
            run,
            progress: &progress,
            cancel: &cancel,
            tokens: tokens.as_ref(),
        };
        match ctx.attempt().await {
            Ok(tally) => break Ok(tally),
            Err(e) if e.class().is_retryable() && attempt < config.retry.attempts && !cancel.is_cancelled() => {
                crate::metrics::attempt_failed(&e);
                let delay = config.retry.delay(attempt);
                tracing::warn!(error = %e.redacted(), attempt, ?delay, "retryable failure; trying again");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => {}
                }
                attempt += 1;
            }
            Err(e) => {
                crate::metrics::attempt_failed(&e);
                break Err(e);
            }
        }
    };
    span.record("attempts", attempt);
    let claim_lost = claim.lost();
    claim.release(&*store).await;
    let result = match result {
        _ if claim_lost => Err(EngineError::ClaimLost { mailbox: source_key }),
        other => other,
    };
    match result {
        Ok(tally) => {
            let counts = store.run_counts(job_id, run).await?;
            let failures = |v: Vec<(String, String)>| {
                v.into_iter().map(|(uidl, error)| MessageFailure { uidl, error }).collect::<Vec<_>>()
            };
            let summary = RunSummary {
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
                merkle_root: None,
                merkle_leaves: None,
            };
            let mut summary = summary;
            if let (Target::Archive(target), false) = (&job.target, job.dry_run) {
                let root = target
                    .archive
                    .record_run_root(job_id, run, "mailferry-engine")
                    .await
                    .map_err(|source| EngineError::Archive { name: job.target.display(), source })?;
                summary.merkle_root = Some(root.root);
                summary.merkle_leaves = Some(root.leaves);
            }
            let outcome = if cancel.is_cancelled() {
                Outcome::Cancelled
            } else if summary.failed > 0 {
                Outcome::Partial
            } else {
                Outcome::Succeeded
            };
            let json = serde_json::to_string(&summary).unwrap_or_default();
            let outcome_name = match outcome {
                Outcome::Succeeded => "succeeded",
                Outcome::Partial => "partial",
                Outcome::Cancelled => "cancelled",
            };
            store.finish_run(run, outcome_name, None, &json).await?;
            let chain_head = match &job.target {
                Target::Archive(t) => t.archive.chain_head().await.ok().flatten(),
                Target::Imap(_) => None,
            };
            issue_receipt(&*store, config, job, job_id, run, outcome_name, started_at, chain_head).await;
            span.record("outcome", outcome_name)
                .record("messages.listed", summary.listed)
                .record("messages.copied", summary.copied)
                .record("messages.skipped", summary.skipped)
                .record("messages.failed", summary.failed)
                .record("bytes", summary.bytes);
            Ok(RunReport { job: job_id, run, outcome, summary })
        }
        Err(e) => {
            span.record("outcome", "failed").record("otel.status_code", "ERROR").record("otel.status_description", e.redacted());
            store.finish_run(run, "failed", Some(&e.to_string()), "{}").await?;
            issue_receipt(&*store, config, job, job_id, run, "failed", started_at, None).await;
            Err(e)
        }
    }
}

/// Signs and stores the run's receipt (not for dry runs). A failure is logged, not fatal:
/// the ledger is the truth and the run's outcome stands; the API then has no receipt for it.
#[allow(clippy::too_many_arguments)]
async fn issue_receipt(
    store: &dyn Store,
    config: &EngineConfig,
    job: &DrainJob,
    job_id: JobId,
    run: RunId,
    outcome: &str,
    started_at: String,
    chain_head: Option<(i64, String)>,
) {
    let Some(signer) = config.receipts.as_deref().filter(|_| !job.dry_run) else { return };
    let facts = crate::receipt::RunFacts { job, job_id, run, outcome, started_at, chain_head };
    if let Err(e) = crate::receipt::issue(store, signer, facts).await {
        tracing::error!(job.id = job_id, run.id = run, error = %e, "could not issue the run's receipt");
    }
}

/// Counts that do not come from rows this run wrote.
#[derive(Debug, Default)]
struct Tally {
    listed: u64,
    /// Copied by earlier runs and still at the source.
    already_copied: u64,
    would_copy: u64,
    would_delete: u64,
}

pub(crate) struct RunContext<'a> {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) job: &'a DrainJob,
    config: &'a EngineConfig,
    pub(crate) job_id: JobId,
    pub(crate) run: RunId,
    progress: &'a watch::Sender<Progress>,
    /// Checked between messages: a cancel stops the copy, skips deletion, and QUITs.
    cancel: &'a CancellationToken,
    /// Access tokens for an OAuth2 refresh-token destination.
    tokens: Option<&'a crate::oauth::TokenProvider>,
}


/// What the source side hands the sink, each with the message's span (closed, with its
/// outcome, once the ledger has recorded it).
#[derive(Debug)]
pub(crate) enum Item {
    /// The permit holds the message's share of the memory budget until it is appended.
    Retrieved(Planned, Received, OwnedSemaphorePermit, Span),
    Skip(Planned, String, Span),
    Failed(Planned, String, Span),
}

/// The span of one message, from its RETR (or skip) until the ledger records its outcome.
pub(crate) fn message_span(run: &Span, p: &Planned) -> Span {
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
pub(crate) fn close_message(span: Span, outcome: &'static str) {
    span.record("outcome", outcome);
    if matches!(outcome, "failed" | "refused" | "error") {
        span.record("otel.status_code", "ERROR");
    }
}

impl RunContext<'_> {
    fn source_err(&self, source: mailferry_pop3::Pop3Error) -> EngineError {
        EngineError::Source { endpoint: self.job.source.display(), source }
    }

    pub(crate) fn dest_err(&self, source: mailferry_imap::ImapError) -> EngineError {
        EngineError::Destination { endpoint: self.job.target.display(), source }
    }

    fn sink_err(&self, e: SinkError) -> EngineError {
        match e {
            SinkError::Imap(e) => self.dest_err(e),
            SinkError::Archive(source) => EngineError::Archive { name: self.job.target.display(), source },
        }
    }

    async fn attempt(&mut self) -> Result<Tally> {
        // Reliability tests make a run panic here (a stand-in for any bug or unexpected
        // bytes) to prove the worker fails the job and releases its lease: the failpoint's
        // argument names the source user whose runs panic, so other tests run undisturbed.
        #[cfg(feature = "failpoints")]
        if let Some(Some(user)) = fail::eval("engine::attempt", |arg| arg) {
            if user == self.job.source.username {
                panic!("injected by the test for {user}");
            }
        }
        let store = Arc::clone(&self.store);
        let mut pop = Pop3Session::connect(&self.job.source, &self.config.pop3).await.map_err(|e| self.source_err(e))?;
        let _pop_session = crate::metrics::Session::open("pop3", &self.job.source.host);
        let mut _imap_session = None;
        let listing = pop.uidl().await.map_err(|e| self.source_err(e))?;
        let sizes: HashMap<u32, u64> = pop.list().await.map_err(|e| self.source_err(e))?.into_iter().collect();

        let ledger_was_empty = store.ledger_where(self.job_id, LedgerQuery::AnyOne).await?.is_empty();

        // Messages whose UIDL the server reports twice cannot be tracked; report them.
        let duplicate: HashSet<&str> = listing.duplicates.iter().map(|(u, _)| u.as_str()).collect();
        let mut listed: Vec<Planned> = Vec::new();
        for (number, uidl) in &listing.entries {
            if !duplicate.contains(uidl.as_str()) {
                listed.push(Planned { number: *number, uidl: uidl.clone(), size: sizes.get(number).copied().unwrap_or(0) });
            }
        }
        drop(sizes);
        let mut tally = Tally { listed: (listing.entries.len() + listing.invalid.len()) as u64, ..Tally::default() };
        let after_days = match self.job.delete {
            DeletePolicy::AfterDays(days) => Some(days),
            _ => None,
        };
        let plan = crate::plan::plan(&*store, self.job_id, self.run, &listed, self.job.dry_run, after_days).await?;
        let mut to_copy = plan.to_copy;
        let unverified = plan.unverified;
        tally.already_copied = plan.already_copied;

        if self.job.dry_run {
            tally.would_copy = to_copy.len() as u64;
            tally.would_delete = match self.job.delete {
                DeletePolicy::Keep => 0,
                // What is copied already, and what this run would copy (within the size
                // limit): skipped or failed messages stay at the source.
                DeletePolicy::AfterVerified => {
                    let within = |p: &&Planned| self.job.max_message_bytes.is_none_or(|max| p.size <= max);
                    plan.copied + to_copy.iter().filter(within).count() as u64
                }
                DeletePolicy::AfterDays(_) => plan.copied_days_ago,
            };
            let _ = pop.quit().await;
            return Ok(tally);
        }

        store
            .record_listed(self.job_id, self.run, &listed.iter().map(|p| (p.uidl.clone(), p.size)).collect::<Vec<_>>())
            .await?;
        for (uidl, numbers) in &listing.duplicates {
            store.record_listed(self.job_id, self.run, &[(uidl.clone(), 0)]).await?;
            let why = format!("the server reports UIDL {uidl:?} for messages {numbers:?}; such messages cannot be tracked and are left in place");
            store.mark_failed(self.job_id, self.run, uidl, &why).await?;
        }
        for (number, reason) in &listing.invalid {
            tracing::warn!(number, reason, "invalid UIDL; message left in place");
        }
        let (sink, index) = match &self.job.target {
            Target::Imap(endpoint) => {
                let mut imap = crate::connect::connect_imap(endpoint, &self.config.imap, self.tokens).await?;
                _imap_session = Some(crate::metrics::Session::open("imap", &endpoint.host));
                // Exactly once: copies whose APPEND outcome was never recorded are looked up
                // at the destination before anything is appended again.
                let (in_doubt, copied) = crate::plan::in_doubt(&*store, self.job_id).await?;
                let mut index = None;
                let mut rewritten = Vec::new();
                if imap.exists() > 0 && ledger_was_empty {
                    tracing::warn!("no ledger for this job but the destination folder holds messages: indexing it to avoid duplicates");
                    index = Some(imap.build_index(None).await.map_err(|e| self.dest_err(e))?);
                } else if !in_doubt.is_empty() {
                    let in_doubt: Vec<&LedgerEntry> = in_doubt.iter().collect();
                    let copied: Vec<&LedgerEntry> = copied.iter().collect();
                    let (found, unmatched) = self.resolve_in_doubt(&mut imap, &in_doubt, &copied).await?;
                    to_copy.retain(|p| !found.contains(&p.uidl));
                    rewritten = unmatched;
                }
                let mut appender = imap.into_appender();
                if !rewritten.is_empty() {
                    let found = crate::indoubt::locate_rewritten(self, &mut appender, &rewritten, &copied).await?;
                    to_copy.retain(|p| !found.contains(&p.uidl));
                }
                (Sink::Imap(appender), index)
            }
            Target::Archive(target) => {
                // The archive records every arrival by (host, account, UIDL): whatever the
                // ledger lost or left in doubt, the archive itself says what already arrived.
                let mut found = Vec::new();
                let mut verified = Vec::new();
                for p in &to_copy {
                    let hit = target
                        .archive
                        .find_occurrence(&self.job.source.host, &self.job.source.username, &p.uidl)
                        .await
                        .map_err(|e| self.sink_err(SinkError::Archive(e)))?;
                    // Trusted only when it is this job's own arrival (the job names the port
                    // too) and its size agrees with today's LIST size: another source on the
                    // host, or a reused UIDL, goes through put(), which compares digests.
                    let hit = hit.filter(|occ| occ.job_id == Some(self.job_id) && size_agrees(occ.size, p.size));
                    if let Some(occ) = hit {
                        // The arrival is recorded, but its S3 Object Lock may not be (the lock
                        // call failed, or the process died, after the index commit): apply it
                        // before this message can count as copied and be deleted at the source.
                        target
                            .archive
                            .ensure_locked(&occ.digest)
                            .await
                            .map_err(|e| self.sink_err(SinkError::Archive(e)))?;
                        // Verified means read back: the stored blob, re-hashed.
                        match target.archive.read_back(&occ.digest).await {
                            Ok(_) => {}
                            Err(mailferry_archive::ArchiveError::Integrity(e)) => {
                                tracing::error!(uidl = %p.uidl, error = %e, "an archived copy does not read back intact; retrieving the message again");
                                continue;
                            }
                            Err(e) => return Err(self.sink_err(SinkError::Archive(e))),
                        }
                        verified.push(ReadBackResult::exact(p.uidl.clone(), Some(occ.digest.to_hex())));
                        found.push(CopyDone { uidl: p.uidl.clone(), dest_uid: None, dest_uidvalidity: None, found_at_destination: true });
                    }
                }
                if !found.is_empty() {
                    store.mark_copied(self.job_id, self.run, &found).await?;
                    store.record_readback(self.job_id, self.run, &verified).await?;
                    let found: HashSet<&str> = found.iter().map(|d| d.uidl.as_str()).collect();
                    to_copy.retain(|p| !found.contains(p.uidl.as_str()));
                }
                let sink = Sink::Archive {
                    archive: std::sync::Arc::clone(&target.archive),
                    source_host: self.job.source.host.clone(),
                    account: self.job.source.username.clone(),
                    job: self.job_id,
                    run: self.run,
                };
                (sink, None)
            }
        };
        self.progress.send_modify(|p| {
            p.listed = tally.listed;
            p.to_copy = to_copy.len() as u64;
        });

        let mut sink = sink;
        if self.job.delete != DeletePolicy::Keep && self.job.verify.reads_back() && !unverified.is_empty() {
            self.reverify(&mut sink, &unverified).await?;
        }
        drop(unverified);
        let (pop, appender) = self.copy(pop, sink, to_copy, index).await?;
        appender.close().await;
        if self.cancel.is_cancelled() {
            // No DELE was sent, so QUIT commits nothing; it just releases the maildrop.
            pop.quit().await.map_err(|e| self.source_err(e))?;
            return Ok(tally);
        }
        self.delete_and_quit(pop, &listed).await?;
        Ok(tally)
    }

    /// Returns the UIDLs found at the destination (now `copied`); the rest go back to
    /// `listed`, except, on a destination declared to rewrite messages (`--verify body` or
    /// `size`), those a Message-ID could still locate: returned for
    /// [`crate::indoubt::locate_rewritten`], still `copying`.
    /// Each destination copy vouches for one source message: copies already accounted for
    /// by `copied` rows are claimed first, so an in-doubt twin of a copied message is not
    /// mistaken for copied (and then deleted at the source) when its own APPEND never landed.
    async fn resolve_in_doubt(
        &self,
        imap: &mut ImapSession,
        in_doubt: &[&LedgerEntry],
        copied: &[&LedgerEntry],
    ) -> Result<(HashSet<String>, Vec<LedgerEntry>)> {
        let store = &self.store;
        let mut found = Vec::new();
        let mut again = Vec::new();
        let mut unmatched = Vec::new();
        if imap.exists() > 0 {
            let sizes: HashSet<u64> = in_doubt.iter().filter_map(|e| e.wire_size).collect();
            let mut index = imap.build_index(Some(&sizes)).await.map_err(|e| self.dest_err(e))?;
            for e in copied {
                if let Some(d) = e.wire_digest.as_deref() {
                    index.claim(d);
                }
            }
            for e in in_doubt {
                match e.wire_digest.as_deref().and_then(|d| index.claim(d)) {
                    Some(uid) => found.push(CopyDone {
                        uidl: e.uidl.clone(),
                        dest_uid: Some(uid),
                        dest_uidvalidity: imap.uid_validity(),
                        found_at_destination: true,
                    }),
                    None => again.push(e.uidl.clone()),
                }
            }
        } else {
            again.extend(in_doubt.iter().map(|e| e.uidl.clone()));
        }
        tracing::info!(found = found.len(), again = again.len(), "resolved copies left in doubt by an earlier run");
        store.mark_copied(self.job_id, self.run, &found).await?;
        // The destination index hashed the copies' own bytes: they are read back, exactly.
        let digests: HashMap<&str, &str> =
            in_doubt.iter().filter_map(|e| e.wire_digest.as_deref().map(|d| (e.uidl.as_str(), d))).collect();
        let verified: Vec<ReadBackResult> = found
            .iter()
            .map(|d| ReadBackResult::exact(d.uidl.clone(), digests.get(d.uidl.as_str()).map(|d| (*d).to_owned())))
            .collect();
        store.record_readback(self.job_id, self.run, &verified).await?;
        if crate::indoubt::may_rewrite(self.job.verify) {
            let by_uidl: HashMap<&str, &&LedgerEntry> = in_doubt.iter().map(|e| (e.uidl.as_str(), e)).collect();
            again.retain(|u| match by_uidl.get(u.as_str()) {
                Some(e) if crate::indoubt::locatable(e) => {
                    unmatched.push((**e).clone());
                    false
                }
                _ => true,
            });
        }
        store.revert_copying(self.job_id, &again).await?;
        Ok((found.into_iter().map(|d| d.uidl).collect(), unmatched))
    }

    /// Source task retrieves into the channel; this task appends in batches.
    async fn copy(
        &self,
        pop: Pop3Session,
        mut appender: Sink,
        to_copy: Vec<Planned>,
        mut index: Option<DestinationIndex>,
    ) -> Result<(Pop3Session, Sink)> {
        // The smallest limit wins; messages over it (by their LIST size) are skipped unread
        // with the reason. The POP3 client's own cap counts too: a message over it would
        // otherwise end the session (and the job) on every run.
        let limit = [
            self.job.max_message_bytes.map(|n| (n, "the job's max_message_bytes")),
            appender.append_limit().map(|n| (n, "the destination's APPENDLIMIT (RFC 7889)")),
            Some((self.config.pop3.max_message_bytes, "the configured pop3.max_message_bytes")),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(n, _)| *n);
        let window = if pop.capabilities().pipelining { self.config.retr_window.max(1) } else { 1 };
        let (tx, mut rx) = mpsc::channel::<Item>(self.config.channel_capacity.max(1));
        let spool = SpoolConfig { normalize: self.job.target.normalizes_line_endings(), ..self.config.spool.clone() };
        let budget = Arc::new(Semaphore::new(kib(self.config.memory_budget) as usize));
        let source = tokio::spawn(retrieve(pop, to_copy, window, limit, spool, budget, tx).in_current_span());

        let mut sink_result = Ok(());
        loop {
            let first = tokio::select! {
                item = rx.recv() => match item { Some(item) => item, None => break },
                () = self.cancel.cancelled() => break,
            };
            let mut batch = vec![first];
            let mut bytes = 0;
            while batch.len() < self.config.batch_messages && bytes < self.config.batch_bytes {
                match rx.try_recv() {
                    Ok(item) => {
                        if let Item::Retrieved(_, r, _, _) = &item {
                            bytes += r.wire_size;
                        }
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            if let Err(e) = self.sink_batch(&mut appender, batch, index.as_mut()).await {
                sink_result = Err(e);
                break;
            }
        }
        // Dropping the receiver stops the source task at its next send.
        drop(rx);
        let (pop, source_result) =
            source.await.map_err(|e| EngineError::Internal(format!("source task panicked: {e}")))?;
        sink_result?;
        source_result.map_err(|e| match e {
            SourceError::Pop3(e) => self.source_err(e),
            SourceError::Spool(e) => EngineError::Spool(e),
        })?;
        Ok((pop, appender))
    }

    async fn sink_batch(&self, appender: &mut Sink, batch: Vec<Item>, mut index: Option<&mut DestinationIndex>) -> Result<()> {
        let store = &self.store;
        let retrieved_at = Utc::now().fixed_offset();
        let mut intents = Vec::new();
        let mut msgs = Vec::new();
        let mut found = Vec::new();
        let mut permits = Vec::new();
        // Spans of the messages found at the destination, and of those to append (in the
        // order of `intents`).
        let mut found_spans = Vec::new();
        let mut spans = Vec::new();
        // Body digests of the messages to append (in the order of `intents`), for read-back.
        let mut body_digests = Vec::new();
        let mut found_sent = Vec::new();
        for item in batch {
            match item {
                Item::Skip(p, reason, span) => {
                    store.mark_skipped(self.job_id, self.run, &p.uidl, &reason).await?;
                    self.progress.send_modify(|p| p.skipped += 1);
                    close_message(span, "skipped");
                }
                Item::Failed(p, error, span) => {
                    store.mark_failed(self.job_id, self.run, &p.uidl, &error).await?;
                    self.progress.send_modify(|p| p.failed += 1);
                    close_message(span, "failed");
                }
                Item::Retrieved(p, r, permit, span) => {
                    permits.push(permit);
                    span.record("message.size", r.size).record("message.wire_size", r.wire_size);
                    let facts = header_facts(&r.head, retrieved_at);
                    let msg = AppendMessage {
                        body: r.body,
                        flags: appender.flags(match &self.job.target {
                            Target::Imap(t) => &t.flags,
                            Target::Archive(_) => &[],
                        }),
                        internal_date: Some(facts.internal_date),
                        has_nul: r.has_nul,
                    };
                    if let Some(reason) = appender.precheck(&msg) {
                        store.mark_skipped(self.job_id, self.run, &p.uidl, &reason).await?;
                        self.progress.send_modify(|p| p.skipped += 1);
                        close_message(span, "skipped");
                        continue;
                    }
                    if let Some(uid) = index.as_deref_mut().and_then(|i| i.claim(&r.wire_digest)) {
                        // The index hashed the destination's own bytes: this copy was read back.
                        found_sent.push(ReadBackResult::exact(p.uidl.clone(), Some(r.wire_digest.clone())));
                        found.push(CopyDone { uidl: p.uidl, dest_uid: Some(uid), dest_uidvalidity: None, found_at_destination: true });
                        found_spans.push(span);
                        continue;
                    }
                    spans.push(span);
                    body_digests.push((r.body_digest, r.has_nul));
                    intents.push(CopyIntent {
                        uidl: p.uidl,
                        size: r.size,
                        digest: r.digest,
                        wire_digest: r.wire_digest,
                        wire_size: r.wire_size,
                        normalized: r.normalized,
                        message_id: facts.message_id,
                        internal_date: Some(facts.internal_date.to_rfc3339()),
                        internal_date_source: facts.date_source.as_str(),
                    });
                    msgs.push(msg);
                }
            }
        }
        if !found.is_empty() {
            store.mark_copied(self.job_id, self.run, &found).await?;
            store.record_readback(self.job_id, self.run, &found_sent).await?;
            self.progress.send_modify(|p| p.copied += found.len() as u64);
            found_spans.into_iter().for_each(|s| close_message(s, "already-present"));
        }
        if msgs.is_empty() {
            return Ok(());
        }
        // Recorded before the APPEND leaves: a crash from here on leaves `copying` rows that
        // the next run resolves against the destination.
        store.mark_copying(self.job_id, self.run, &intents).await?;
        let uidls: Vec<String> = intents.iter().map(|i| i.uidl.clone()).collect();
        // A failure part-way still reports what the destination answered before it: the
        // messages it confirmed are stored there, so they are recorded `copied` (below, before
        // anything else can fail) and only then is the error returned. The unknown ones stay
        // `copying` for the next run to resolve against the destination.
        let (outcomes, failure) = match appender.deliver(&msgs, &uidls).await {
            Ok(outcomes) => (outcomes.into_iter().map(Some).collect::<Vec<_>>(), None),
            Err(e) => (e.outcomes, Some(e.error)),
        };
        let mut done = Vec::new();
        let mut done_spans = Vec::new();
        let mut refused = Vec::new();
        let mut sent = Vec::new();
        let mut bytes = 0;
        for (((intent, outcome), span), (body_digest, has_nul)) in intents.iter().zip(outcomes).zip(spans).zip(body_digests) {
            match outcome {
                Some(AppendOutcome::Appended { uid, uid_validity }) => {
                    bytes += intent.wire_size;
                    sent.push(Sent {
                        uidl: intent.uidl.clone(),
                        uid,
                        wire_digest: match &self.job.target {
                            // The archive's identity is the exact retrieved bytes.
                            Target::Archive(_) => intent.digest.clone(),
                            Target::Imap(_) => intent.wire_digest.clone(),
                        },
                        wire_size: intent.wire_size,
                        body_digest: Some(body_digest),
                        message_id: intent.message_id.clone(),
                        has_nul,
                    });
                    done.push(CopyDone {
                        uidl: intent.uidl.clone(),
                        dest_uid: uid,
                        dest_uidvalidity: uid_validity,
                        found_at_destination: false,
                    });
                    done_spans.push(span);
                }
                Some(AppendOutcome::Refused(reason)) => refused.push((&intent.uidl, reason, span)),
                None => close_message(span, "error"),
            }
        }
        store.mark_copied(self.job_id, self.run, &done).await?;
        done_spans.into_iter().for_each(|s| close_message(s, "copied"));
        self.progress.send_modify(|p| {
            p.copied += done.len() as u64;
            p.bytes += bytes;
        });
        for (uidl, reason, span) in refused {
            store.revert_copying(self.job_id, std::slice::from_ref(uidl)).await?;
            let error = format!("the destination refused the message: {reason}");
            store.mark_failed(self.job_id, self.run, uidl, &error).await?;
            self.progress.send_modify(|p| p.failed += 1);
            close_message(span, "refused");
        }
        if let Some(e) = failure {
            return Err(self.sink_err(e));
        }
        // Verified means read back (issue 14): only a copy that reads back matching may be
        // deleted at the source. A mismatch is this message's failure, never the run's.
        if !sent.is_empty() && self.job.verify.reads_back() {
            let results = crate::verify::read_back(appender, &sent, self.job.verify).await.map_err(|e| self.sink_err(e))?;
            let mismatched = results.iter().filter(|r| r.error.is_some()).count() as u64;
            for r in results.iter().filter(|r| r.error.is_some()) {
                tracing::warn!(uidl = %r.uidl, error = r.error.as_deref().unwrap_or_default(), "copy failed verification; kept at the source");
            }
            store.record_readback(self.job_id, self.run, &results).await?;
            self.progress.send_modify(|p| p.failed += mismatched);
        }
        Ok(())
    }

    /// Read back copies that earlier runs recorded `copied` without a verified read-back
    /// (an older version, or a read-back that failed), so that a deleting pass (the cutover
    /// after a pre-stage) can delete them, and only them once they match.
    async fn reverify(&self, sink: &mut Sink, rows: &[LedgerEntry]) -> Result<()> {
        let uid_validity = match &*sink {
            Sink::Imap(a) => a.uid_validity(),
            Sink::Archive { .. } => None,
        };
        for chunk in rows.chunks(256) {
            let sent: Vec<Sent> = chunk
                .iter()
                .filter_map(|e| {
                    Some(Sent {
                        uidl: e.uidl.clone(),
                        // A UID recorded under another UIDVALIDITY names nothing any more.
                        uid: e.dest_uid.filter(|_| e.dest_uidvalidity.is_some() && e.dest_uidvalidity == uid_validity),
                        wire_digest: e.wire_digest.clone()?,
                        wire_size: e.wire_size?,
                        body_digest: None,
                        message_id: e.message_id.clone(),
                        has_nul: false,
                    })
                })
                .collect();
            let results = crate::verify::read_back(sink, &sent, self.job.verify).await.map_err(|e| self.sink_err(e))?;
            tracing::info!(
                verified = results.iter().filter(|r| r.error.is_none()).count(),
                of = results.len(),
                "read back copies recorded by earlier runs"
            );
            self.store.record_readback(self.job_id, self.run, &results).await?;
        }
        Ok(())
    }

    /// DELE what the policy allows — only rows the ledger says are `copied` — then QUIT,
    /// which is what commits the deletions (RFC 1939 §6). Reached only when the copy phase
    /// finished without error (the first law).
    async fn delete_and_quit(&self, mut pop: Pop3Session, listed: &[Planned]) -> Result<()> {
        let mut deleted = Vec::new();
        if self.job.delete != DeletePolicy::Keep {
            for chunk in listed.chunks(LEDGER_CHUNK) {
                let uidls: Vec<String> = chunk.iter().map(|p| p.uidl.clone()).collect();
                let ledger: HashMap<String, LedgerEntry> = self
                    .store
                    .ledger_where(self.job_id, LedgerQuery::Uidls(&uidls))
                    .await?
                    .into_iter()
                    .map(|e| (e.uidl.clone(), e))
                    .collect();
                for p in chunk {
                    let Some(entry) = ledger.get(&p.uidl) else { continue };
                    // First law: only a copy read back and matched is deleted at the source.
                    let allowed = entry.state == LedgerState::Verified
                        && match self.job.delete {
                            DeletePolicy::Keep => false,
                            DeletePolicy::AfterVerified => true,
                            DeletePolicy::AfterDays(days) => copied_before(entry, days),
                        };
                    if allowed {
                        match pop.dele(p.number).await {
                            Ok(()) => deleted.push(p.uidl.clone()),
                            Err(e) if e.class().is_retryable() && !matches!(e, mailferry_pop3::Pop3Error::Server { .. }) => {
                                return Err(self.source_err(e));
                            }
                            Err(e) => tracing::warn!(uidl = %p.uidl, error = %e, "DELE refused; message left in place"),
                        }
                    }
                }
            }
        }
        pop.quit().await.map_err(|e| self.source_err(e))?;
        self.store.mark_source_deleted(self.job_id, self.run, &deleted).await?;
        Ok(())
    }
}
