//! The one implementation of [`ServiceStore`] (see [`crate::service`]): jobs as a queue with
//! leases, control, events, batches, API tokens and idempotency keys. One body serves both
//! backends ([`impl_service`], instantiated at the bottom); what differs is their
//! [`Dialect`].
//!
//! Claims: on PostgreSQL one transaction under a transaction-scoped advisory lock, so two
//! workers never count the same live leases against the per-host caps at once, and the
//! candidate row is taken with `FOR UPDATE SKIP LOCKED`, so a row another transaction is
//! updating (a heartbeat, a release) is passed over instead of waited for. On SQLite the
//! transaction starts with `BEGIN IMMEDIATE`: the single writer serialises claims.

use std::time::Duration;

use async_trait::async_trait;
use mailferry_model::{ArchiveTask, JobCounts, JobSpec, JobState, Schedule, Scope, Sealed};
use sqlx::QueryBuilder;

use crate::common::{cap, page_limit, parse_job_state, plan_control, rotate_refresh_token, summary, token_record};
use crate::common::{JobRow, LedgerColumns, NewJob};
use crate::dialect::{begin_write, lock, Dialect, Tx};
use crate::schedule::plan_schedule;
use crate::service::*;
use crate::{PgStore, Result, SqliteStore, StoreError};

/// Key of the PostgreSQL advisory lock that serialises claims across all workers ("mfclaim").
const CLAIM_LOCK: i64 = 0x006d_6663_6c61_696d;

/// The columns of a [`JobRow`].
fn job_cols<D: Dialect>() -> String {
    format!(
        "id, state, spec{text} AS spec, source, target, batch_id, labels{text} AS labels, {}, {}, {}, {}, last_error, \
         runs, cancel_requested, pause_requested, lease_owner, {}, trace_parent, task, {}, cutover, {}",
        D::text("created_at"),
        D::text("updated_at"),
        D::text("started_at"),
        D::text("finished_at"),
        D::text("lease_expires_at"),
        D::text("not_before"),
        D::text("cutover_at"),
        text = D::cast("text"),
    )
}

/// Ledger counts (listed, copied, skipped, failed, deleted, bytes) over the rows `scope`
/// selects (a condition on `job_id`).
fn counts_sql(scope: &str) -> String {
    format!(
        "SELECT COUNT(*),
                COUNT(*) FILTER (WHERE state IN ('copied', 'verified', 'source-deleted')),
                COUNT(*) FILTER (WHERE state = 'skipped'),
                COUNT(*) FILTER (WHERE state = 'failed'),
                COUNT(*) FILTER (WHERE state = 'source-deleted'),
                CAST(COALESCE(SUM(COALESCE(wire_size, size))
                    FILTER (WHERE state IN ('copied', 'verified', 'source-deleted')), 0) AS BIGINT)
         FROM ledger WHERE {scope}"
    )
}

type Counts = (i64, i64, i64, i64, i64, i64);

fn counts((listed, copied, skipped, failed, deleted, bytes): Counts) -> JobCounts {
    let n = |v: i64| v.max(0) as u64;
    JobCounts { listed: n(listed), copied: n(copied), skipped: n(skipped), failed: n(failed), deleted: n(deleted), bytes: n(bytes) }
}

/// The one implementation of the service traits ([`ServiceStore`]), for a store type that is its own
/// [`Dialect`]: writes go to its `pool`, reads to its `reader()`. Early returns from a
/// transaction roll it back at once: a dropped transaction keeps its row locks until the
/// pool gets round to its rollback, and a claim would skip those rows meanwhile.
macro_rules! impl_service {
    ($store:ty) => {
        #[async_trait]
        impl JobQueue for $store {
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
                let (now, json) = (Self::NOW, Self::cast("jsonb"));
                let mut tx = self.pool.begin().await?;
                let batch = match batch_name {
                    Some(name) => {
                        let sql = format!(
                            "INSERT INTO batches (name, created_at) VALUES ($1, {now}) RETURNING id, {}",
                            Self::text("created_at")
                        );
                        let (id, created_at) = sqlx::query_as(&sql).bind(name).fetch_one(&mut *tx).await?;
                        Some(BatchRecord { id, name: name.to_string(), created_at })
                    }
                    None => None,
                };
                let sql = format!(
                    "INSERT INTO jobs (mailbox_key, source, target, source_key, source_host, target_host, spec, labels,
                                       batch_id, state, created_at, updated_at, trace_parent, not_before)
                     VALUES ($1, $2, $3, $4, $5, $6, $7{json}, $8{json}, $9, $11, {now}, {now}, $10, $12{at})
                     RETURNING {}",
                    job_cols::<Self>(),
                    at = Self::cast("timestamptz"),
                );
                let mut jobs = Vec::with_capacity(news.len());
                for n in news {
                    let row: JobRow = sqlx::query_as(&sql)
                        .bind(n.mailbox_key).bind(n.source).bind(n.target)
                        .bind(n.source_key).bind(n.source_host).bind(n.target_host)
                        .bind(n.spec).bind(n.labels).bind(batch.as_ref().map(|b| b.id)).bind(trace_parent)
                        .bind(n.state).bind(n.not_before)
                        .fetch_one(&mut *tx)
                        .await?;
                    jobs.push(row.into_record()?);
                }
                tx.commit().await?;
                Ok((batch, jobs))
            }

            async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
                // Migration jobs only: archive runs are listed with their archive.
                let mut q = QueryBuilder::<<Self as Dialect>::Db>::new(format!(
                    "SELECT {} FROM jobs WHERE task IS NULL AND id > ",
                    job_cols::<Self>()
                ));
                q.push_bind(filter.after.unwrap_or(0));
                if let Some(state) = filter.state {
                    q.push(" AND state = ").push_bind(state.as_str());
                }
                if let Some(batch) = filter.batch {
                    q.push(" AND batch_id = ").push_bind(batch);
                }
                if let Some((k, v)) = &filter.label {
                    let [open, between, close] = Self::LABEL;
                    q.push(" AND ").push(open).push_bind(k.clone()).push(between).push_bind(v.clone()).push(close);
                }
                if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
                    let strpos = Self::STRPOS;
                    q.push(format!(" AND ({strpos}(lower(source), lower("))
                        .push_bind(text.to_string())
                        .push(format!(")) > 0 OR {strpos}(lower(target), lower("))
                        .push_bind(text.to_string())
                        .push(")) > 0)");
                }
                q.push(" ORDER BY id LIMIT ").push_bind(page_limit(filter.limit));
                let rows: Vec<JobRow> = q.build_query_as().fetch_all(self.reader()).await?;
                rows.into_iter().map(JobRow::into_record).collect()
            }

            async fn ledger_page(&self, job: i64, after: Option<&str>, limit: u32) -> Result<Vec<LedgerRow>> {
                let cols = format!(
                    "uidl, size, state, reason, digest, dest_uid, internal_date, internal_date_source, {}, {}, {}",
                    Self::text("first_seen_at"),
                    Self::text("copied_at"),
                    Self::text("deleted_at")
                );
                let with_cursor = format!("SELECT {cols} FROM ledger WHERE job_id = $1 AND uidl > $2 ORDER BY uidl LIMIT $3");
                let from_start = format!("SELECT {cols} FROM ledger WHERE job_id = $1 ORDER BY uidl LIMIT $2");
                let rows: Vec<LedgerColumns> = match after {
                    Some(after) => sqlx::query_as(&with_cursor).bind(job).bind(after),
                    None => sqlx::query_as(&from_start).bind(job),
                }
                .bind(page_limit(limit))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(LedgerColumns::into_row).collect()
            }

            async fn control(&self, id: i64, action: ControlAction) -> Result<ControlOutcome> {
                let cols = job_cols::<Self>();
                let mut tx = self.pool.begin_with(begin_write::<Self>()).await?;
                let Some(current) = Self::job_for_update(&mut tx, id).await? else {
                    tx.rollback().await?;
                    return Ok(ControlOutcome::NotFound);
                };
                let Some(plan) = plan_control(action, &current) else {
                    tx.rollback().await?;
                    return Ok(ControlOutcome::Conflict(current.state));
                };
                let now = Self::NOW;
                let row: JobRow = sqlx::query_as(&format!(
                    "UPDATE jobs SET state = $1, cancel_requested = $2, pause_requested = $3,
                         last_error = CASE WHEN $4 THEN NULL ELSE last_error END,
                         finished_at = CASE $5 WHEN 1 THEN {now} WHEN 2 THEN NULL ELSE finished_at END,
                         not_before = CASE WHEN $6 THEN NULL ELSE not_before END,
                         cutover = COALESCE(CAST($9 AS TEXT), cutover),
                         cutover_at = CASE WHEN CAST($9 AS TEXT) IS NULL THEN cutover_at END,
                         updated_at = {now}
                     WHERE id = $7 AND state = $8
                     RETURNING {cols}"
                ))
                .bind(plan.state.as_str()).bind(plan.cancel_requested).bind(plan.pause_requested)
                .bind(plan.clear_error).bind(plan.finished as i64).bind(plan.clear_not_before)
                .bind(id).bind(current.state.as_str()).bind(plan.cutover.map(|p| p.to_string()))
                .fetch_one(&mut *tx)
                .await?;
                let done = row.into_record()?;
                tx.commit().await?;
                Ok(ControlOutcome::Done(done))
            }

            async fn claim_job(&self, worker: &str, lease: Duration, limits: ClaimLimits) -> Result<Option<Claimed>> {
                let mut tx = self.pool.begin_with(begin_write::<Self>()).await?;
                if Self::MANY_WRITERS {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut *tx).await?;
                }
                // The clock is read after the lock: the wait for it must not shorten the lease.
                let now: String = sqlx::query_scalar(&format!("SELECT {}", Self::CLOCK)).fetch_one(&mut *tx).await?;
                let at = format!("$1{}", Self::cast("timestamptz"));
                // Live leases are few (at most the workers' concurrency); the candidates are
                // walked in id order through the claimable index.
                let candidate: Option<(i64, String)> = sqlx::query_as(&format!(
                    "WITH live AS (
                         SELECT source_key, source_host, target_host FROM jobs
                         WHERE state = 'running' AND lease_expires_at >= {at})
                     SELECT j.id, j.state FROM jobs j
                     WHERE (j.spec IS NOT NULL OR j.task IS NOT NULL) AND j.state IN ('queued', 'running', 'scheduled')
                       AND ((j.state IN ('queued', 'scheduled') AND (j.not_before IS NULL OR j.not_before <= {at}))
                            OR (j.state = 'running' AND j.lease_expires_at < {at}))
                       AND j.source_key NOT IN (SELECT source_key FROM live)
                       AND j.source_host NOT IN (SELECT source_host FROM live GROUP BY source_host HAVING COUNT(*) >= $2)
                       AND (j.target_host = '' OR j.target_host NOT IN
                            (SELECT target_host FROM live GROUP BY target_host HAVING COUNT(*) >= $3))
                     ORDER BY j.id LIMIT 1{}",
                    lock::<Self>(" FOR UPDATE OF j SKIP LOCKED")
                ))
                .bind(&now).bind(cap(limits.per_source_host)).bind(cap(limits.per_target_host))
                .fetch_optional(&mut *tx)
                .await?;
                let Some((id, state)) = candidate else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                let takeover = parse_job_state(state)? == JobState::Running;
                // A cutover still to come makes this pass (or the one taken over) the final one.
                let row: JobRow = sqlx::query_as(&format!(
                    "UPDATE jobs SET state = 'running', lease_owner = $2, lease_expires_at = {expiry}, updated_at = {at},
                         started_at = CASE WHEN state <> 'running' THEN {at} ELSE started_at END,
                         runs = CASE WHEN state <> 'running' THEN runs + 1 ELSE runs END,
                         cutover_at = CASE WHEN cutover IS NOT NULL AND cutover_at IS NULL THEN {at} ELSE cutover_at END,
                         not_before = NULL, finished_at = NULL
                     WHERE id = $4
                     RETURNING {}",
                    job_cols::<Self>(),
                    expiry = Self::after("$3")
                ))
                .bind(&now).bind(worker).bind(lease.as_secs_f64()).bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let job = row.into_record()?;
                tx.commit().await?;
                Ok(Some(Claimed { job, takeover }))
            }

            async fn heartbeat(&self, id: i64, worker: &str, lease: Duration) -> Result<LeaseStatus> {
                let row: Option<(bool, bool)> = sqlx::query_as(&format!(
                    "UPDATE jobs SET lease_expires_at = {}, updated_at = {}
                     WHERE id = $2 AND lease_owner = $3 AND state = 'running'
                     RETURNING cancel_requested, pause_requested",
                    Self::after("$1"),
                    Self::NOW
                ))
                .bind(lease.as_secs_f64()).bind(id).bind(worker)
                .fetch_optional(&self.pool)
                .await?;
                let (cancel_requested, pause_requested) = row.unwrap_or_default();
                Ok(LeaseStatus { held: row.is_some(), cancel_requested, pause_requested })
            }

            async fn release_job(&self, id: i64, worker: &str, release: &Release) -> Result<bool> {
                if release.state == JobState::Running {
                    return Err(StoreError::Unsupported("release_job to the running state"));
                }
                let not_before = match (release.state, release.not_before) {
                    (JobState::Queued | JobState::Scheduled, Some(d)) => Some(d.as_secs_f64()),
                    _ => None,
                };
                let now = Self::NOW;
                // A cutover requested while this (not final) pass ran: the final pass next.
                let final_next = "cutover IS NOT NULL AND cutover_at IS NULL
                    AND $1 IN ('scheduled', 'succeeded', 'partial', 'failed')";
                let done = sqlx::query(&format!(
                    "UPDATE jobs SET state = CASE WHEN {final_next} THEN 'queued' ELSE $1 END, last_error = $2,
                         not_before = CASE WHEN {final_next} THEN NULL ELSE {not_before} END,
                         finished_at = CASE WHEN {final_next} THEN NULL WHEN $4 THEN {now} END, updated_at = {now},
                         lease_owner = NULL, lease_expires_at = NULL, cancel_requested = FALSE, pause_requested = FALSE
                     WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
                    not_before = Self::after("$3")
                ))
                .bind(release.state.as_str()).bind(&release.error).bind(not_before).bind(release.state.is_terminal())
                .bind(id).bind(worker)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn enqueue_task(&self, task: &ArchiveTask, max_active: usize, trace_parent: Option<&str>) -> Result<TaskQueued> {
                let json = serde_json::to_string(task).map_err(|e| StoreError::BadSpec(format!("archive task: {e}")))?;
                let mut tx = self.pool.begin_with(begin_write::<Self>()).await?;
                if Self::MANY_WRITERS {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut *tx).await?;
                }
                let active: Vec<String> = sqlx::query_scalar(
                    "SELECT task FROM jobs WHERE source_host = $1 AND task IS NOT NULL
                       AND state IN ('queued', 'running', 'paused') ORDER BY id",
                )
                .bind(task.host())
                .fetch_all(&mut *tx)
                .await?;
                if active.len() >= max_active {
                    tx.rollback().await?;
                    let busy = active.iter().filter_map(|t| serde_json::from_str(t).ok()).collect();
                    return Ok(TaskQueued::Busy(busy));
                }
                let (now, key) = (Self::NOW, task.key());
                let row: JobRow = sqlx::query_as(&format!(
                    "INSERT INTO jobs (mailbox_key, source, target, source_key, source_host, target_host, task, labels,
                                       state, created_at, updated_at, trace_parent)
                     VALUES ($1, $2, $3, $1, $4, '', $5, $6{}, 'queued', {now}, {now}, $7)
                     RETURNING {}",
                    Self::cast("jsonb"),
                    job_cols::<Self>()
                ))
                .bind(&key).bind(format!("archive {}", task.archive())).bind(format!("{} run {}", task.kind(), task.run()))
                .bind(task.host()).bind(json).bind("{}").bind(trace_parent)
                .fetch_one(&mut *tx)
                .await?;
                let job = row.into_record()?;
                tx.commit().await?;
                Ok(TaskQueued::Queued(Box::new(job)))
            }

            async fn task_job(&self, archive: &str, run: i64) -> Result<Option<JobRecord>> {
                let sql = format!("SELECT {} FROM jobs WHERE mailbox_key = $1 AND task IS NOT NULL", job_cols::<Self>());
                let key = mailferry_model::task::task_key(archive, run);
                let row: Option<JobRow> = sqlx::query_as(&sql).bind(key).fetch_optional(self.reader()).await?;
                row.map(JobRow::into_record).transpose()
            }

            async fn get_batch(&self, id: i64) -> Result<Option<BatchSummary>> {
                let sql = format!("SELECT id, name, {} FROM batches WHERE id = $1", Self::text("created_at"));
                let Some((id, name, created_at)) = sqlx::query_as(&sql).bind(id).fetch_optional(self.reader()).await? else {
                    return Ok(None);
                };
                let per_state: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM jobs WHERE batch_id = $1 GROUP BY state")
                        .bind(id)
                        .fetch_all(self.reader())
                        .await?;
                let totals: Counts = sqlx::query_as(&counts_sql("job_id IN (SELECT id FROM jobs WHERE batch_id = $1)"))
                    .bind(id)
                    .fetch_one(self.reader())
                    .await?;
                summary(BatchRecord { id, name, created_at }, per_state, counts(totals)).map(Some)
            }

            async fn cutover_counts(&self, id: i64) -> Result<Option<CutoverCounts>> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT COUNT(l.uidl) FILTER (WHERE l.copied_at >= j.cutover_at),
                            COUNT(l.uidl) FILTER (WHERE l.deleted_at >= j.cutover_at)
                     FROM jobs j LEFT JOIN ledger l ON l.job_id = j.id
                     WHERE j.id = $1 AND j.cutover_at IS NOT NULL
                     GROUP BY j.id",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
                let n = |v: i64| v.max(0) as u64;
                Ok(row.map(|(copied, deleted)| CutoverCounts { copied: n(copied), deleted: n(deleted) }))
            }
            async fn set_schedule(&self, id: i64, schedule: Option<Schedule>) -> Result<ControlOutcome> {
                let cols = job_cols::<Self>();
                let mut tx = self.pool.begin_with(begin_write::<Self>()).await?;
                let Some(current) = Self::job_for_update(&mut tx, id).await? else {
                    tx.rollback().await?;
                    return Ok(ControlOutcome::NotFound);
                };
                let Some(plan) = plan_schedule(&current, schedule, chrono::Utc::now())? else {
                    tx.rollback().await?;
                    return Ok(ControlOutcome::Conflict(current.state));
                };
                let now = Self::NOW;
                let row: JobRow = sqlx::query_as(&format!(
                    "UPDATE jobs SET spec = $1{json}, state = $2,
                         not_before = CASE WHEN $3 THEN $4{at} ELSE not_before END,
                         finished_at = CASE $5 WHEN 1 THEN {now} WHEN 2 THEN NULL ELSE finished_at END,
                         updated_at = {now}
                     WHERE id = $6 AND state = $7
                     RETURNING {cols}",
                    json = Self::cast("jsonb"),
                    at = Self::cast("timestamptz"),
                ))
                .bind(plan.spec).bind(plan.state.as_str())
                .bind(plan.not_before.is_some()).bind(plan.not_before.flatten())
                .bind(plan.finished as i64).bind(id).bind(current.state.as_str())
                .fetch_one(&mut *tx)
                .await?;
                let done = row.into_record()?;
                tx.commit().await?;
                Ok(ControlOutcome::Done(done))
            }
        }

        #[async_trait]
        impl JobProgress for $store {
            async fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1", job_cols::<Self>());
                let row: Option<JobRow> = sqlx::query_as(&sql).bind(id).fetch_optional(self.reader()).await?;
                row.map(JobRow::into_record).transpose()
            }

            async fn job_counts(&self, id: i64) -> Result<JobCounts> {
                let row: Counts = sqlx::query_as(&counts_sql("job_id = $1")).bind(id).fetch_one(self.reader()).await?;
                Ok(counts(row))
            }

            async fn job_events(&self, job: i64, after: i64, limit: u32) -> Result<Vec<JobEvent>> {
                let rows: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(&format!(
                    "SELECT id, job_id, {}, state, detail FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    Self::text("at")
                ))
                .bind(job).bind(after).bind(page_limit(limit))
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(id, job_id, at, state, detail)| Ok(JobEvent { id, job_id, at, state: parse_job_state(state)?, detail }))
                    .collect()
            }
        }

        #[async_trait]
        impl JobSpecs for $store {
            async fn replace_refresh_token(&self, id: i64, current: &Sealed, new: &Sealed) -> Result<bool> {
                let mut tx = self.pool.begin_with(begin_write::<Self>()).await?;
                let sql = format!("SELECT spec{} FROM jobs WHERE id = $1{}", Self::cast("text"), lock::<Self>(" FOR UPDATE"));
                let spec: Option<Option<String>> = sqlx::query_scalar(&sql).bind(id).fetch_optional(&mut *tx).await?;
                let Some(rotated) = spec.flatten().map(|s| rotate_refresh_token(id, &s, current, new)).transpose()?.flatten()
                else {
                    tx.rollback().await?;
                    return Ok(false);
                };
                let sql = format!("UPDATE jobs SET spec = $1{}, updated_at = {} WHERE id = $2", Self::cast("jsonb"), Self::NOW);
                sqlx::query(&sql).bind(rotated).bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(true)
            }
        }

        #[async_trait]
        impl ApiTokens for $store {
            async fn create_token(&self, name: &str, scope: Scope, token_hash: &str) -> Result<TokenRecord> {
                let (id, created_at) = sqlx::query_as(&format!(
                    "INSERT INTO api_tokens (name, scope, token_hash, created_at) VALUES ($1, $2, $3, {})
                     RETURNING id, {}",
                    Self::NOW,
                    Self::text("created_at")
                ))
                .bind(name).bind(scope.as_str()).bind(token_hash)
                .fetch_one(&self.pool)
                .await?;
                Ok(TokenRecord { id, name: name.to_string(), scope, created_at })
            }

            async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
                let row = sqlx::query_as(&format!(
                    "UPDATE api_tokens SET last_used_at = {} WHERE token_hash = $1 RETURNING id, name, scope, {}",
                    Self::NOW,
                    Self::text("created_at")
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(token_record).transpose()
            }

            async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
                let sql = format!("SELECT id, name, scope, {} FROM api_tokens ORDER BY id", Self::text("created_at"));
                let rows = sqlx::query_as(&sql).fetch_all(self.reader()).await?;
                rows.into_iter().map(token_record).collect()
            }

            async fn delete_token(&self, id: i64) -> Result<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query("DELETE FROM idempotency_keys WHERE token_id = $1").bind(id).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM api_tokens WHERE id = $1").bind(id).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn idempotency_get(&self, token_id: i64, key: &str) -> Result<Option<StoredResponse>> {
                let row: Option<(String, i32, String)> =
                    sqlx::query_as("SELECT request_hash, status, body FROM idempotency_keys WHERE token_id = $1 AND key = $2")
                        .bind(token_id).bind(key)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row.map(|(request_hash, status, body)| StoredResponse {
                    request_hash,
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }))
            }

            async fn idempotency_put(&self, token_id: i64, key: &str, response: &StoredResponse) -> Result<()> {
                sqlx::query(&format!(
                    "INSERT INTO idempotency_keys (token_id, key, request_hash, status, body, created_at)
                     VALUES ($1, $2, $3, $4, $5, {}) ON CONFLICT (token_id, key) DO NOTHING",
                    Self::NOW
                ))
                .bind(token_id).bind(key).bind(&response.request_hash).bind(i32::from(response.status)).bind(&response.body)
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }

        impl $store {
            /// The job, its row locked for the rest of the write transaction (PostgreSQL
            /// `FOR UPDATE`; SQLite's write transaction holds the database already).
            async fn job_for_update(tx: &mut Tx<Self>, id: i64) -> Result<Option<JobRecord>> {
                let sql = format!("SELECT {} FROM jobs WHERE id = $1{}", job_cols::<Self>(), lock::<Self>(" FOR UPDATE"));
                let row: Option<JobRow> = sqlx::query_as(&sql).bind(id).fetch_optional(&mut **tx).await?;
                row.map(JobRow::into_record).transpose()
            }
        }
    };
}

impl_service!(PgStore);
impl_service!(SqliteStore);
