//! What operations add to the store: the audit log of state-changing API calls, and the
//! cluster-wide figures `/metrics` reads at scrape time; and the batch list the dashboard
//! reads (its statements are in [`crate::batches`]).
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
use sqlx::QueryBuilder;

use crate::batches::BatchFilter;
use crate::common::{fmt_time, page_limit};
use crate::dialect::Dialect;
use crate::service::BatchSummary;
use crate::{PgStore, Result, SqliteStore, StoreError};

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
    /// Queued jobs a worker may claim now (past their retry `not_before`), and scheduled ones whose next pass is due.
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

/// The operations half of the store (audit log, cluster figures, batch list); both backends
/// implement every method through [`impl_ops`].
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// Append one entry (stamped with the database's time); its id.
    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64>;
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;
    async fn cluster_figures(&self) -> Result<ClusterFigures>;
    /// A page of batches, newest first, each with its jobs per state and ledger sums, for
    /// the dashboard's batch list ([`crate::batches`]).
    async fn list_batches(&self, filter: &BatchFilter) -> Result<Vec<BatchSummary>>;
}

const ALL_LEDGER_STATES: [LedgerState; 7] = [
    LedgerState::Listed,
    LedgerState::Copying,
    LedgerState::Copied,
    LedgerState::Verified,
    LedgerState::SourceDeleted,
    LedgerState::Skipped,
    LedgerState::Failed,
];

/// Fill every known state from `(state, count)` rows; unknown states are an error.
fn per_state<S: Copy + PartialEq>(all: &[S], rows: Vec<(String, i64)>, parse: impl Fn(&str) -> Option<S>) -> Result<Vec<(S, u64)>> {
    let mut out: Vec<(S, u64)> = all.iter().map(|s| (*s, 0)).collect();
    for (name, n) in rows {
        let s = parse(&name).ok_or(StoreError::UnknownState(name))?;
        if let Some(slot) = out.iter_mut().find(|(k, _)| *k == s) {
            slot.1 += n.max(0) as u64;
        }
    }
    Ok(out)
}

fn hosts(rows: Vec<(String, i64)>) -> Vec<(String, u64)> {
    rows.into_iter().map(|(h, n)| (h, n.max(0) as u64)).collect()
}

#[derive(Debug, sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: String,
    token_id: Option<i64>,
    token_name: Option<String>,
    method: String,
    route: String,
    target: Option<String>,
    status: i32,
    client: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        let status = u16::try_from(r.status).unwrap_or(0);
        let entry = NewAuditEntry { token_id: r.token_id, token_name: r.token_name, method: r.method, route: r.route, target: r.target, status, client: r.client };
        AuditEntry { id: r.id, at: r.at, entry }
    }
}

/// The one implementation of [`OpsStore`], for a store type that is its own [`Dialect`]:
/// writes go to its `pool`, reads to its `reader()`.
macro_rules! impl_ops {
    ($store:ty) => {
        #[async_trait]
        impl OpsStore for $store {
            async fn record_audit(&self, e: &NewAuditEntry) -> Result<i64> {
                let sql = format!(
                    "INSERT INTO audit_log (at, token_id, token_name, method, route, target, status, client)
                     VALUES ({}, $1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    Self::NOW
                );
                Ok(sqlx::query_scalar(&sql)
                    .bind(e.token_id).bind(&e.token_name).bind(&e.method).bind(&e.route)
                    .bind(&e.target).bind(i32::from(e.status)).bind(&e.client)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
                let mut q = QueryBuilder::<<Self as Dialect>::Db>::new(format!(
                    "SELECT id, {}, token_id, token_name, method, route, target, status, client FROM audit_log WHERE TRUE",
                    Self::text("at")
                ));
                if let Some(before) = f.before {
                    q.push(" AND id < ").push_bind(before);
                }
                // Times are bound in their text form (which SQLite compares as stored).
                if let Some(since) = f.since {
                    q.push(" AND at >= ").push_bind(fmt_time(since)).push(Self::cast("timestamptz"));
                }
                if let Some(until) = f.until {
                    q.push(" AND at < ").push_bind(fmt_time(until)).push(Self::cast("timestamptz"));
                }
                if let Some(token) = f.token_id {
                    q.push(" AND token_id = ").push_bind(token);
                }
                if let Some(method) = &f.method {
                    q.push(" AND method = ").push_bind(method.clone());
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(f.limit));
                let rows: Vec<AuditRow> = q.build_query_as().fetch_all(self.reader()).await?;
                Ok(rows.into_iter().map(AuditEntry::from).collect())
            }

            async fn cluster_figures(&self) -> Result<ClusterFigures> {
                let now = Self::NOW;
                let jobs: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetch_all(self.reader()).await?;
                let (ready, oldest_age, expired): (i64, Option<f64>, i64) = sqlx::query_as(&format!(
                    "SELECT
                         (SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'scheduled') AND spec IS NOT NULL
                              AND (not_before IS NULL OR not_before <= {now})),
                         (SELECT {oldest} FROM jobs WHERE state = 'queued'),
                         (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at < {now})",
                    oldest = Self::secs_since("MIN(updated_at)")
                ))
                .fetch_one(self.reader())
                .await?;
                let ledger: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM ledger GROUP BY state").fetch_all(self.reader()).await?;
                let sources: Vec<(String, i64)> = sqlx::query_as(&format!(
                    "SELECT source_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= {now}
                     GROUP BY source_host ORDER BY source_host"
                ))
                .fetch_all(self.reader())
                .await?;
                let targets: Vec<(String, i64)> = sqlx::query_as(&format!(
                    "SELECT target_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= {now}
                         AND target_host <> ''
                     GROUP BY target_host ORDER BY target_host"
                ))
                .fetch_all(self.reader())
                .await?;
                Ok(ClusterFigures {
                    jobs_by_state: per_state(&JobState::ALL, jobs, JobState::parse)?,
                    queue_ready: ready.max(0) as u64,
                    oldest_queued_age_secs: oldest_age.unwrap_or(0.0).max(0.0),
                    expired_leases: expired.max(0) as u64,
                    ledger_by_state: per_state(&ALL_LEDGER_STATES, ledger, LedgerState::parse)?,
                    sessions_by_source_host: hosts(sources),
                    sessions_by_target_host: hosts(targets),
                })
            }

            async fn list_batches(&self, filter: &BatchFilter) -> Result<Vec<BatchSummary>> {
                self.batch_page(filter).await
            }
        }
    };
}

impl_ops!(PgStore);
impl_ops!(SqliteStore);
