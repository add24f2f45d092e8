//! PostgreSQL implementation of [`OpsStore`]: the audit log and the cluster figures. Times
//! come from the database clock, like the leases they are compared with.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailferry_model::{JobState, LedgerState};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::common::{fmt_time, page_limit};
use crate::ops::*;
use crate::postgres::PgStore;
use crate::Result;

#[async_trait]
impl OpsStore for PgStore {
    async fn record_audit(&self, e: &NewAuditEntry) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO audit_log (token_id, token_name, method, route, target, status, client)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(e.token_id)
        .bind(&e.token_name)
        .bind(&e.method)
        .bind(&e.route)
        .bind(&e.target)
        .bind(i32::from(e.status))
        .bind(&e.client)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT id, at, token_id, token_name, method, route, target, status, client FROM audit_log WHERE TRUE",
        );
        if let Some(before) = f.before {
            q.push(" AND id < ").push_bind(before);
        }
        if let Some(since) = f.since {
            q.push(" AND at >= ").push_bind(since);
        }
        if let Some(until) = f.until {
            q.push(" AND at < ").push_bind(until);
        }
        if let Some(token) = f.token_id {
            q.push(" AND token_id = ").push_bind(token);
        }
        if let Some(method) = &f.method {
            q.push(" AND method = ").push_bind(method.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(f.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: fmt_time(r.try_get::<DateTime<Utc>, _>("at")?),
                    entry: NewAuditEntry {
                        token_id: r.try_get("token_id")?,
                        token_name: r.try_get("token_name")?,
                        method: r.try_get("method")?,
                        route: r.try_get("route")?,
                        target: r.try_get("target")?,
                        status: u16::try_from(r.try_get::<i32, _>("status")?).unwrap_or(0),
                        client: r.try_get("client")?,
                    },
                })
            })
            .collect()
    }

    async fn cluster_figures(&self) -> Result<ClusterFigures> {
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetch_all(&self.pool).await?;
        let (ready, oldest_age, expired): (i64, Option<f64>, i64) = sqlx::query_as(
            "SELECT
                 (SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND spec IS NOT NULL
                      AND (not_before IS NULL OR not_before <= now())),
                 (SELECT EXTRACT(EPOCH FROM now() - MIN(updated_at))::float8 FROM jobs WHERE state = 'queued'),
                 (SELECT COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at < now())",
        )
        .fetch_one(&self.pool)
        .await?;
        let ledger: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM ledger GROUP BY state").fetch_all(&self.pool).await?;
        let sources: Vec<(String, i64)> = sqlx::query_as(
            "SELECT source_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= now()
             GROUP BY source_host ORDER BY source_host",
        )
        .fetch_all(&self.pool)
        .await?;
        let targets: Vec<(String, i64)> = sqlx::query_as(
            "SELECT target_host, COUNT(*) FROM jobs WHERE state = 'running' AND lease_expires_at >= now()
                 AND target_host <> ''
             GROUP BY target_host ORDER BY target_host",
        )
        .fetch_all(&self.pool)
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
}
