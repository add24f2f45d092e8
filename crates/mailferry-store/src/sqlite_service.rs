//! SQLite implementation of [`ServiceStore`]. One process, one connection: every
//! transaction here is serialised by the pool (`max_connections(1)`), and the claim and
//! control transactions start with `BEGIN IMMEDIATE` so they would also hold SQLite's write
//! lock from their first read if another process opened the file.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use mailferry_model::{JobCounts, JobSpec, JobState, Scope, Sealed};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::common::{
    cap, fmt_time, now_string, page_limit, parse_job_state, plan_control, rotate_refresh_token, summary, token_record, JobParts,
    LedgerParts, NewJob,
};
use crate::service::*;
use crate::sqlite::SqliteStore;
use crate::{Result, StoreError};

const JOB_COLS: &str = "id, state, spec, source, target, batch_id, labels, created_at, updated_at, started_at, \
     finished_at, last_error, runs, cancel_requested, pause_requested, lease_owner, lease_expires_at, trace_parent";

fn job(r: &SqliteRow) -> Result<JobRecord> {
    JobParts {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        spec: r.try_get("spec")?,
        source: r.try_get("source")?,
        target: r.try_get("target")?,
        batch_id: r.try_get("batch_id")?,
        labels: r.try_get("labels")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        last_error: r.try_get("last_error")?,
        runs: r.try_get("runs")?,
        cancel_requested: r.try_get("cancel_requested")?,
        pause_requested: r.try_get("pause_requested")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        trace_parent: r.try_get("trace_parent")?,
    }
    .into_record()
}

fn later(d: Duration) -> String {
    fmt_time(Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
}

/// Ledger counts over the rows selected by `scope` (a condition on `job_id`).
fn counts_sql(scope: &str) -> String {
    format!(
        "SELECT COUNT(*) AS listed,
                COALESCE(SUM(state IN ('copied', 'verified', 'source-deleted')), 0) AS copied,
                COALESCE(SUM(state = 'skipped'), 0) AS skipped,
                COALESCE(SUM(state = 'failed'), 0) AS failed,
                COALESCE(SUM(state = 'source-deleted'), 0) AS deleted,
                COALESCE(SUM(CASE WHEN state IN ('copied', 'verified', 'source-deleted') THEN COALESCE(wire_size, size) ELSE 0 END), 0) AS bytes
         FROM ledger WHERE {scope}"
    )
}

fn counts(r: &SqliteRow) -> Result<JobCounts> {
    let n = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(JobCounts {
        listed: n("listed")?,
        copied: n("copied")?,
        skipped: n("skipped")?,
        failed: n("failed")?,
        deleted: n("deleted")?,
        bytes: n("bytes")?,
    })
}

#[async_trait]
impl ServiceStore for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1 FROM jobs LIMIT 1").fetch_optional(&self.pool).await?;
        Ok(())
    }

    async fn create_jobs_traced(
        &self,
        batch_name: Option<&str>,
        specs: &[JobSpec],
        trace_parent: Option<&str>,
    ) -> Result<(Option<BatchRecord>, Vec<JobRecord>)> {
        let news = specs.iter().map(NewJob::from_spec).collect::<Result<Vec<_>>>()?;
        let now = now_string();
        let mut tx = self.pool.begin().await?;
        let batch = match batch_name {
            Some(name) => {
                let id = sqlx::query_scalar("INSERT INTO batches (name, created_at) VALUES (?, ?) RETURNING id")
                    .bind(name)
                    .bind(&now)
                    .fetch_one(&mut *tx)
                    .await?;
                Some(BatchRecord { id, name: name.to_string(), created_at: now.clone() })
            }
            None => None,
        };
        let sql = format!(
            "INSERT INTO jobs (mailbox_key, source, target, source_key, source_host, target_host, spec, labels,
                               batch_id, state, created_at, updated_at, trace_parent)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) RETURNING {JOB_COLS}"
        );
        let mut jobs = Vec::with_capacity(news.len());
        for n in news {
            let row = sqlx::query(&sql)
                .bind(n.mailbox_key)
                .bind(n.source)
                .bind(n.target)
                .bind(n.source_key)
                .bind(n.source_host)
                .bind(n.target_host)
                .bind(n.spec)
                .bind(n.labels)
                .bind(batch.as_ref().map(|b| b.id))
                .bind(&now)
                .bind(&now)
                .bind(trace_parent)
                .fetch_one(&mut *tx)
                .await?;
            jobs.push(job(&row)?);
        }
        tx.commit().await?;
        Ok((batch, jobs))
    }

    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(job).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE id > "));
        q.push_bind(filter.after.unwrap_or(0));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(batch) = filter.batch {
            q.push(" AND batch_id = ").push_bind(batch);
        }
        if let Some((k, v)) = &filter.label {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(jobs.labels) AS l WHERE l.key = ")
                .push_bind(k.clone())
                .push(" AND l.value = ")
                .push_bind(v.clone())
                .push(")");
        }
        if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
            q.push(" AND (instr(lower(source), lower(")
                .push_bind(text.to_string())
                .push(")) > 0 OR instr(lower(target), lower(")
                .push_bind(text.to_string())
                .push(")) > 0)");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(filter.limit));
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(job).collect()
    }

    async fn job_counts(&self, id: i64) -> Result<JobCounts> {
        let row = sqlx::query(&counts_sql("job_id = ?")).bind(id).fetch_one(&self.reader).await?;
        counts(&row)
    }

    async fn ledger_page(&self, job: i64, after: Option<&str>, limit: u32) -> Result<Vec<LedgerRow>> {
        let cols = "uidl, size, state, reason, digest, dest_uid, internal_date, internal_date_source, \
                    first_seen_at, copied_at, deleted_at";
        let with_cursor = format!("SELECT {cols} FROM ledger WHERE job_id = ? AND uidl > ? ORDER BY uidl LIMIT ?");
        let from_start = format!("SELECT {cols} FROM ledger WHERE job_id = ? ORDER BY uidl LIMIT ?");
        let rows = match after {
            Some(after) => sqlx::query(&with_cursor).bind(job).bind(after),
            None => sqlx::query(&from_start).bind(job),
        }
        .bind(page_limit(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                LedgerParts {
                    uidl: r.try_get("uidl")?,
                    size: r.try_get("size")?,
                    state: r.try_get("state")?,
                    reason: r.try_get("reason")?,
                    digest: r.try_get("digest")?,
                    dest_uid: r.try_get("dest_uid")?,
                    internal_date: r.try_get("internal_date")?,
                    internal_date_source: r.try_get("internal_date_source")?,
                    first_seen_at: r.try_get("first_seen_at")?,
                    copied_at: r.try_get("copied_at")?,
                    deleted_at: r.try_get("deleted_at")?,
                }
                .into_row()
            })
            .collect()
    }

    async fn control(&self, id: i64, action: ControlAction) -> Result<ControlOutcome> {
        let now = now_string();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(ControlOutcome::NotFound);
        };
        let current = job(&row)?;
        let Some(plan) = plan_control(action, &current) else {
            return Ok(ControlOutcome::Conflict(current.state));
        };
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = ?1, cancel_requested = ?2, pause_requested = ?3,
                 last_error = CASE WHEN ?4 THEN NULL ELSE last_error END,
                 finished_at = CASE ?5 WHEN 1 THEN ?6 WHEN 2 THEN NULL ELSE finished_at END,
                 not_before = CASE WHEN ?7 THEN NULL ELSE not_before END,
                 updated_at = ?6
             WHERE id = ?8 AND state = ?9
             RETURNING {JOB_COLS}"
        ))
        .bind(plan.state.as_str())
        .bind(plan.cancel_requested)
        .bind(plan.pause_requested)
        .bind(plan.clear_error)
        .bind(plan.finished as i64)
        .bind(&now)
        .bind(plan.clear_not_before)
        .bind(id)
        .bind(current.state.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let done = job(&row)?;
        tx.commit().await?;
        Ok(ControlOutcome::Done(done))
    }

    async fn job_events(&self, job: i64, after: i64, limit: u32) -> Result<Vec<JobEvent>> {
        let rows: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, job_id, at, state, detail FROM job_events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(job)
        .bind(after)
        .bind(page_limit(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(id, job_id, at, state, detail)| Ok(JobEvent { id, job_id, at, state: parse_job_state(state)?, detail }))
            .collect()
    }

    async fn claim_job(&self, worker: &str, lease: Duration, limits: ClaimLimits) -> Result<Option<Claimed>> {
        let now = now_string();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Live leases are few (at most the workers' concurrency); the candidates are walked
        // in id order through the claimable index.
        let candidate: Option<(i64, String)> = sqlx::query_as(
            "WITH live AS (
                 SELECT source_key, source_host, target_host FROM jobs
                 WHERE state = 'running' AND lease_expires_at >= ?1)
             SELECT j.id, j.state FROM jobs j
             WHERE j.spec IS NOT NULL AND j.state IN ('queued', 'running')
               AND ((j.state = 'queued' AND (j.not_before IS NULL OR j.not_before <= ?1))
                    OR (j.state = 'running' AND j.lease_expires_at < ?1))
               AND j.source_key NOT IN (SELECT source_key FROM live)
               AND j.source_host NOT IN (SELECT source_host FROM live GROUP BY source_host HAVING COUNT(*) >= ?2)
               AND (j.target_host = '' OR j.target_host NOT IN
                    (SELECT target_host FROM live GROUP BY target_host HAVING COUNT(*) >= ?3))
             ORDER BY j.id LIMIT 1",
        )
        .bind(&now)
        .bind(cap(limits.per_source_host))
        .bind(cap(limits.per_target_host))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, state)) = candidate else {
            return Ok(None);
        };
        let takeover = parse_job_state(state)? == JobState::Running;
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3,
                 started_at = CASE WHEN state = 'queued' THEN ?3 ELSE started_at END,
                 runs = CASE WHEN state = 'queued' THEN runs + 1 ELSE runs END,
                 not_before = NULL, finished_at = NULL
             WHERE id = ?4
             RETURNING {JOB_COLS}"
        ))
        .bind(worker)
        .bind(later(lease))
        .bind(&now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let job = job(&row)?;
        tx.commit().await?;
        Ok(Some(Claimed { job, takeover }))
    }

    async fn heartbeat(&self, id: i64, worker: &str, lease: Duration) -> Result<LeaseStatus> {
        let row: Option<(bool, bool)> = sqlx::query_as(
            "UPDATE jobs SET lease_expires_at = ?, updated_at = ?
             WHERE id = ? AND lease_owner = ? AND state = 'running'
             RETURNING cancel_requested, pause_requested",
        )
        .bind(later(lease))
        .bind(now_string())
        .bind(id)
        .bind(worker)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((cancel_requested, pause_requested)) => LeaseStatus { held: true, cancel_requested, pause_requested },
            None => LeaseStatus { held: false, cancel_requested: false, pause_requested: false },
        })
    }

    async fn replace_refresh_token(&self, id: i64, current: &Sealed, new: &Sealed) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let spec: Option<Option<String>> =
            sqlx::query_scalar("SELECT spec FROM jobs WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?;
        let Some(rotated) = spec.flatten().map(|s| rotate_refresh_token(id, &s, current, new)).transpose()?.flatten() else {
            return Ok(false);
        };
        sqlx::query("UPDATE jobs SET spec = ?, updated_at = ? WHERE id = ?")
            .bind(rotated)
            .bind(now_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release_job(&self, id: i64, worker: &str, release: &Release) -> Result<bool> {
        if release.state == JobState::Running {
            return Err(StoreError::Unsupported("release_job to the running state"));
        }
        let now = now_string();
        let not_before = match (release.state, release.not_before) {
            (JobState::Queued, Some(d)) => Some(later(d)),
            _ => None,
        };
        let finished_at = release.state.is_terminal().then(|| now.clone());
        let done = sqlx::query(
            "UPDATE jobs SET state = ?, last_error = ?, not_before = ?, finished_at = ?, updated_at = ?,
                 lease_owner = NULL, lease_expires_at = NULL, cancel_requested = 0, pause_requested = 0
             WHERE id = ? AND lease_owner = ? AND state = 'running'",
        )
        .bind(release.state.as_str())
        .bind(&release.error)
        .bind(not_before)
        .bind(finished_at)
        .bind(&now)
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_batch(&self, id: i64) -> Result<Option<BatchSummary>> {
        let Some((id, name, created_at)) =
            sqlx::query_as::<_, (i64, String, String)>("SELECT id, name, created_at FROM batches WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.reader)
                .await?
        else {
            return Ok(None);
        };
        let per_state: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs WHERE batch_id = ? GROUP BY state")
                .bind(id)
                .fetch_all(&self.reader)
                .await?;
        let row = sqlx::query(&counts_sql("job_id IN (SELECT id FROM jobs WHERE batch_id = ?)"))
            .bind(id)
            .fetch_one(&self.reader)
            .await?;
        summary(BatchRecord { id, name, created_at }, per_state, counts(&row)?).map(Some)
    }

    async fn create_token(&self, name: &str, scope: Scope, token_hash: &str) -> Result<TokenRecord> {
        let now = now_string();
        let id = sqlx::query_scalar("INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES (?, ?, ?, ?) RETURNING id")
            .bind(name)
            .bind(scope.as_str())
            .bind(token_hash)
            .bind(&now)
            .fetch_one(&self.pool)
            .await?;
        Ok(TokenRecord { id, name: name.to_string(), scope, created_at: now })
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let row: Option<(i64, String, String, String)> = sqlx::query_as(
            "UPDATE api_tokens SET last_used_at = ? WHERE token_hash = ? RETURNING id, name, scope, created_at",
        )
        .bind(now_string())
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(id, name, scope, created_at)| token_record(id, name, scope, created_at)).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows: Vec<(i64, String, String, String)> =
            sqlx::query_as("SELECT id, name, scope, created_at FROM api_tokens ORDER BY id").fetch_all(&self.reader).await?;
        rows.into_iter().map(|(id, name, scope, created_at)| token_record(id, name, scope, created_at)).collect()
    }

    async fn delete_token(&self, id: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM idempotency_keys WHERE token_id = ?").bind(id).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM api_tokens WHERE id = ?").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn idempotency_get(&self, token_id: i64, key: &str) -> Result<Option<StoredResponse>> {
        let row: Option<(String, i64, String)> =
            sqlx::query_as("SELECT request_hash, status, body FROM idempotency_keys WHERE token_id = ? AND key = ?")
                .bind(token_id)
                .bind(key)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|(request_hash, status, body)| StoredResponse {
            request_hash,
            status: u16::try_from(status).unwrap_or(500),
            body,
        }))
    }

    async fn idempotency_put(&self, token_id: i64, key: &str, response: &StoredResponse) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (token_id, key, request_hash, status, body, created_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token_id, key) DO NOTHING",
        )
        .bind(token_id)
        .bind(key)
        .bind(&response.request_hash)
        .bind(i64::from(response.status))
        .bind(&response.body)
        .bind(now_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
