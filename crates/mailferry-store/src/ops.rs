//! What operations add to the store: the audit log of state-changing API calls, and the
//! cluster-wide figures `/metrics` reads at scrape time.
//!
//! Cluster figures come from the database, not from a process's memory, so they are right
//! however many worker processes share it. Every query is cheap: the job counts go through
//! the `jobs_state` index and touch only live rows (queued, running); the ledger count is a
//! scan of the `ledger_job_state` index (no table rows read on SQLite, index-only on
//! PostgreSQL once vacuumed). The API caches the result for a second, so scrapes cannot
//! load the database.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailferry_model::{JobState, LedgerState};

use crate::{Result, StoreError};

/// One state-changing API call, as the API records it. Never a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// Who: the token (id and name at the time of the call).
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub method: String,
    /// The route template, e.g. `/api/v1/jobs/{id}/cancel`.
    pub route: String,
    /// What the call was about: its path parameters, or the id of what it created.
    pub target: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// The client's address.
    pub client: Option<String>,
}

/// A recorded call. `at` is RFC 3339 UTC with milliseconds on both backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub entry: NewAuditEntry,
}

/// Filters for `GET /api/v1/audit`, combined with AND; results newest first (by id),
/// `before` is the cursor (the last id seen).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    pub token_id: Option<i64>,
    /// Upper-case HTTP method.
    pub method: Option<String>,
    pub before: Option<i64>,
    /// Page size: 0 means 100, anything above 500 means 500.
    pub limit: u32,
}

/// Cluster-wide figures for `/metrics`, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterFigures {
    /// Every job state, zeros included (so a series never disappears).
    pub jobs_by_state: Vec<(JobState, u64)>,
    /// Queued jobs a worker may claim now (past their retry `not_before`).
    pub queue_ready: u64,
    /// Seconds since the longest-waiting queued job was queued (its last state change);
    /// 0 when the queue is empty.
    pub oldest_queued_age_secs: f64,
    /// Running jobs whose lease expired and nobody took over yet.
    pub expired_leases: u64,
    /// Ledger rows per state over every job, zeros included.
    pub ledger_by_state: Vec<(LedgerState, u64)>,
    /// Live leases per source host: POP3 sessions held across all workers.
    pub sessions_by_source_host: Vec<(String, u64)>,
    /// Live leases per destination host (IMAP targets only).
    pub sessions_by_target_host: Vec<(String, u64)>,
}

/// The operations half of the store (audit log, cluster figures). Defaults answer
/// `Unsupported`; both shipped backends implement every method.
#[async_trait]
#[allow(unused_variables)]
pub trait OpsStore: Send + Sync {
    /// Append one entry (stamped with the database's time); its id.
    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64> {
        Err(StoreError::Unsupported("record_audit"))
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        Err(StoreError::Unsupported("list_audit"))
    }
    async fn cluster_figures(&self) -> Result<ClusterFigures> {
        Err(StoreError::Unsupported("cluster_figures"))
    }
}

pub(crate) const ALL_LEDGER_STATES: [LedgerState; 7] = [
    LedgerState::Listed,
    LedgerState::Copying,
    LedgerState::Copied,
    LedgerState::Verified,
    LedgerState::SourceDeleted,
    LedgerState::Skipped,
    LedgerState::Failed,
];

/// Fill every known state from `(state, count)` rows; unknown states are an error.
pub(crate) fn per_state<S: Copy + PartialEq>(
    all: &[S],
    rows: Vec<(String, i64)>,
    parse: impl Fn(&str) -> Option<S>,
) -> Result<Vec<(S, u64)>> {
    let mut out: Vec<(S, u64)> = all.iter().map(|s| (*s, 0)).collect();
    for (name, n) in rows {
        let s = parse(&name).ok_or(StoreError::UnknownState(name))?;
        if let Some(slot) = out.iter_mut().find(|(k, _)| *k == s) {
            slot.1 += n.max(0) as u64;
        }
    }
    Ok(out)
}

pub(crate) fn hosts(rows: Vec<(String, i64)>) -> Vec<(String, u64)> {
    rows.into_iter().map(|(h, n)| (h, n.max(0) as u64)).collect()
}

/// Seconds from `since` to now (never negative); 0 without a time.
pub(crate) fn age_secs(since: Option<DateTime<Utc>>) -> f64 {
    since.map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0)
}
