//! SQLite implementation of [`OpsStore`]: the audit log and the cluster figures.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailferry_model::{JobState, LedgerState};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::common::{fmt_time, now_string, page_limit};
use crate::ops::*;
use crate::sqlite::SqliteStore;
use crate::Result;

#[async_trait]
impl OpsStore for SqliteStore {
    async fn record_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO audit_log (at, token_id, token_name, method, route, target, status, client)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(now_string())
        .bind(e.token_id)
        .bind(&e.token_name)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.target)
        .bind(i64::from(e.status))
        .bind(&e.client)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, token_id, token_name, method, route, target, status, client FROM audit_log WHERE 1 = 1",
        );
        if let Some(before) = f.before {
            q.push(" AND id < ").push_bind(before);
        }
        // Times are stored in one text form, so they compare as strings.
        if let Some(since) = f.since {
            q.push(" AND at >= ").push_bind(fmt_time(since));
        }
        if let Some(until) = f.until {
            q.push(" AND at < ").push_bind(fmt_time(until));
        }
        if let Some(token) = f.token_id {
            q.push(" AND token_id = ").push_bind(token);
        }
        if let Some(method) = &f.method {
            q.push(" AND method = ").push_bind(method.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(f.limit));
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    entry: NewAuditEntry {
                        token_id: r.try_get("token_id")?,
                        token_name: r.try_get("token_name")?,
                        method: r.try_get("method")?,
                        route: r.try_get("route")?,
                        target: r.try_get("target")?,
                        status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
                        client: r.try_get("client")?,
                    },
                })
            })
            .collect()
    }

    async fn cluster_figures(&self) -> Result<ClusterFigures> {
        let now = now_string();
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetch_all(&self.reader).await?;
        let (ready, oldest, expired): (i64, Option<String>, i64) = sqlx::query_as(
            "SELECT
                 (SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND spec IS NOT NULL
                      AND (not_before IS NULL OR not_before <= ?1)),
                 (SELECT MIN(updated_at) FROM jobs WHERE state = 'queued'),
                 (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at < ?1)",
        )
        .bind(&now)
        .fetch_one(&self.reader)
        .await?;
        let ledger: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM ledger GROUP BY state").fetch_all(&self.reader).await?;
        let sources: Vec<(String, i64)> = sqlx::query_as(
            "SELECT source_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= ?
             GROUP BY source_host ORDER BY source_host",
        )
        .bind(&now)
        .fetch_all(&self.reader)
        .await?;
        let targets: Vec<(String, i64)> = sqlx::query_as(
            "SELECT target_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= ? AND target_host <> ''
             GROUP BY target_host ORDER BY target_host",
        )
        .bind(&now)
        .fetch_all(&self.reader)
        .await?;
        let oldest = oldest.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        Ok(ClusterFigures {
            jobs_by_state: per_state(&JobState::ALL, jobs, JobState::parse)?,
            queue_ready: ready.max(0) as u64,
            oldest_queued_age_secs: age_secs(oldest),
            expired_leases: expired.max(0) as u64,
            ledger_by_state: per_state(&ALL_LEDGER_STATES, ledger, LedgerState::parse)?,
            sessions_by_source_host: hosts(sources),
            sessions_by_target_host: hosts(targets),
        })
    }
}
