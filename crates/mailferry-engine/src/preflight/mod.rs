//! Preflight (issue 17): check a mailbox before its migration, changing nothing, and say
//! whether it is `ready`, `warning` (with reasons) or `blocked` (with reasons), with an
//! estimate of how long it will take. `POST /api/v1/jobs?preflight=true`,
//! `POST /api/v1/batches?preflight=true` and `mailferry preflight` all come here.
//!
//! `probe` talks to the servers (logins with the mechanism the run will use, TLS, CAPA,
//! STAT, LIST, UIDL; CAPABILITY, LIST, GETQUOTAROOT); `verdict` turns what they said into
//! reasons and a verdict, without I/O. The report types are the model's
//! (`mailferry_model::preflight`), so that the API can document them.

mod probe;
mod verdict;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use mailferry_model::preflight::{BatchPreflight, MailboxPreflight, PreflightRow, Reason, SourceFacts, TargetFacts};
use tokio::sync::Semaphore;

use crate::job::{DrainJob, EngineConfig};
use crate::sink::Target;

pub use crate::stored::{job_of_spec, SpecEnv};
pub use verdict::{estimate, judge, totals, verdict_of, Findings, Throughput, EXPIRY_WARNING_SECS};

/// Most mailboxes a batch preflight checks at once, whatever the per-host caps.
const MAX_CONCURRENT: usize = 16;

/// How preflights run here.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// The protocol options and timeouts of the runs.
    pub engine: EngineConfig,
    /// Sessions per source and per target host at once (the workers' `per_host_limit`).
    pub per_host: usize,
    /// Mailboxes the workers run at once (for the batch estimate).
    pub workers: usize,
    pub throughput: Throughput,
}

impl Preflight {
    /// Check one mailbox.
    #[tracing::instrument(skip_all, fields(source.host = %job.source.host, target.kind = job.target.kind()))]
    pub async fn mailbox(&self, job: &DrainJob) -> MailboxPreflight {
        self.checked(job, None).await
    }

    async fn checked(&self, job: &DrainJob, permits: Option<&HostPermits>) -> MailboxPreflight {
        let mut f = Findings { max_message_bytes: job.max_message_bytes, ..Findings::default() };
        {
            let _permit = match permits {
                Some(p) => p.acquire(&job.source.host).await,
                None => None,
            };
            probe::source(job, &self.engine, &mut f).await;
        }
        {
            let _permit = match (permits, &job.target) {
                (Some(p), Target::Imap(ep)) => p.acquire(&ep.host).await,
                _ => None,
            };
            probe::target(job, &self.engine, &mut f).await;
        }
        judge(f, chrono::Utc::now().timestamp(), &self.throughput)
    }

    /// Check a batch: each row's job, or the reason it could not be made (an invalid row,
    /// an archive that cannot be opened), blocked as it is. At most `per_host` sessions
    /// per host at once, and [`MAX_CONCURRENT`] mailboxes.
    pub async fn batch(&self, rows: Vec<(usize, Result<DrainJob, Reason>)>) -> BatchPreflight {
        let permits = HostPermits::new(self.per_host);
        let hosts: HashMap<usize, String> = rows
            .iter()
            .map(|(row, r)| (*row, r.as_ref().map(|j| j.source.host.to_ascii_lowercase()).unwrap_or_default()))
            .collect();
        let permits = &permits;
        let mut out: Vec<PreflightRow> = futures::stream::iter(rows)
            .map(|(row, job)| async move {
                let preflight = match job {
                    Ok(job) => self.checked(&job, Some(permits)).await,
                    Err(reason) => blocked(reason),
                };
                PreflightRow { row, preflight }
            })
            .buffer_unordered(MAX_CONCURRENT)
            .collect()
            .await;
        out.sort_by_key(|r| r.row);
        let ordered_hosts: Vec<String> = out.iter().map(|r| hosts.get(&r.row).cloned().unwrap_or_default()).collect();
        let totals = totals(&out, &ordered_hosts, self.per_host, self.workers);
        BatchPreflight { rows: out, totals }
    }
}

/// A mailbox that could not even be checked.
pub fn blocked(reason: Reason) -> MailboxPreflight {
    MailboxPreflight {
        verdict: verdict_of(std::slice::from_ref(&reason)),
        reasons: vec![reason],
        source: SourceFacts::default(),
        target: TargetFacts::default(),
        estimate_secs: 0,
    }
}

/// One semaphore per host (case-insensitive), `per_host` permits each.
struct HostPermits {
    per_host: usize,
    hosts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostPermits {
    fn new(per_host: usize) -> Self {
        Self { per_host: per_host.max(1), hosts: std::sync::Mutex::default() }
    }

    async fn acquire(&self, host: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = {
            let mut hosts = self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(hosts.entry(host.to_ascii_lowercase()).or_insert_with(|| Arc::new(Semaphore::new(self.per_host))))
        };
        // Never closed, so this never fails; without a permit the check still runs.
        sem.acquire_owned().await.ok()
    }
}
