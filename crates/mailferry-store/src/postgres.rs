//! PostgreSQL implementation of [`Store`] and [`ServiceStore`]: the service backend, shared
//! by many `mailferry worker` processes (DESIGN.md §5).
//!
//! Claims run in one transaction under a transaction-scoped advisory lock, so two workers
//! never count the same live leases against the per-host caps at once; the candidate row is
//! taken with `FOR UPDATE SKIP LOCKED`, so a row another transaction is updating (a
//! heartbeat, a release) is passed over instead of waited for. Lease times use the database
//! clock, never the workers' clocks.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mailferry_model::{JobCounts, JobSpec, JobState, LedgerState, Scope, Sealed};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::common::{
    INTERRUPTED,
    cap, cli_source_key, fmt_time, page_limit, parse_job_state, plan_control, rotate_refresh_token, summary, token_record,
    JobParts, LedgerParts, NewJob,
};
use crate::dialect::Dialect;
use crate::claims::{ClaimAttempt, ClaimHolder, SourceClaim};
use crate::service::*;
use crate::{CopyDone, CopyIntent, JobId, LedgerEntry, LedgerQuery, ReadBackResult, Result, RunCounts, RunId, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Key of the advisory lock that serialises claims across all workers ("mfclaim").
const CLAIM_LOCK: i64 = 0x006d_6663_6c61_696d;

const JOB_COLS: &str = "id, state, spec::text AS spec, source, target, batch_id, labels::text AS labels, \
     created_at, updated_at, started_at, finished_at, last_error, runs, cancel_requested, pause_requested, \
     lease_owner, lease_expires_at, trace_parent";

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connect to `url` (`postgres://user:pass@host:port/db`) with a pool of up to 10
    /// connections and apply the migrations (sqlx serialises concurrent migrators with an
    /// advisory lock, so many workers may start at once).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Close the pool's connections (tests drop their database afterwards).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads share the pool with writes.
    pub(crate) fn reader(&self) -> &PgPool {
        &self.pool
    }
}

const TEXT_TIME: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

impl Dialect for PgStore {
    type Db = sqlx::Postgres;
    const MANY_WRITERS: bool = true;
    const NOW: &'static str = "now()";
    const CLOCK: &'static str = "CAST(clock_timestamp() AS TEXT)";
    const RELEASED: &'static str = "'-infinity'";
    const STRPOS: &'static str = "strpos";
    // `@>` goes through the GIN index on labels.
    const LABEL: [&'static str; 3] = ["labels @> jsonb_build_object(", "::text, ", "::text)"];

    fn text(col: &str) -> String {
        format!("to_char({col} AT TIME ZONE 'UTC', {TEXT_TIME}) AS {col}")
    }

    fn cast(pg_type: &str) -> String {
        format!("::{pg_type}")
    }

    fn after(secs: &str) -> String {
        format!("clock_timestamp() + make_interval(secs => {secs})")
    }

    fn secs_since(expr: &str) -> String {
        format!("EXTRACT(EPOCH FROM now() - {expr})::float8")
    }
}

fn time(r: &PgRow, col: &str) -> Result<String> {
    Ok(fmt_time(r.try_get::<DateTime<Utc>, _>(col)?))
}

fn opt_time(r: &PgRow, col: &str) -> Result<Option<String>> {
    Ok(r.try_get::<Option<DateTime<Utc>>, _>(col)?.map(fmt_time))
}

fn job(r: &PgRow) -> Result<JobRecord> {
    JobParts {
        id: r.try_get("id")?,
        state: r.try_get("state")?,
        spec: r.try_get("spec")?,
        source: r.try_get("source")?,
        target: r.try_get("target")?,
        batch_id: r.try_get("batch_id")?,
        labels: r.try_get("labels")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
        started_at: opt_time(r, "started_at")?,
        finished_at: opt_time(r, "finished_at")?,
        last_error: r.try_get("last_error")?,
        runs: r.try_get("runs")?,
        cancel_requested: r.try_get("cancel_requested")?,
        pause_requested: r.try_get("pause_requested")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: opt_time(r, "lease_expires_at")?,
        trace_parent: r.try_get("trace_parent")?,
    }
    .into_record()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Ledger counts over the rows selected by `scope` (a condition on `job_id`).
fn counts_sql(scope: &str) -> String {
    format!(
        "SELECT COUNT(*) AS listed,
                COUNT(*) FILTER (WHERE state IN ('copied', 'verified', 'source-deleted')) AS copied,
                COUNT(*) FILTER (WHERE state = 'skipped') AS skipped,
                COUNT(*) FILTER (WHERE state = 'failed') AS failed,
                COUNT(*) FILTER (WHERE state = 'source-deleted') AS deleted,
                COALESCE(SUM(COALESCE(wire_size, size)) FILTER (WHERE state IN ('copied', 'verified', 'source-deleted')), 0)::BIGINT AS bytes
         FROM ledger WHERE {scope}"
    )
}

fn counts(r: &PgRow) -> Result<JobCounts> {
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
impl Store for PgStore {
    async fn ensure_job(&self, mailbox_key: &str, source: &str, target: &str) -> Result<JobId> {
        // A CLI job: found by its key, marked running, never claimable (no spec).
        let (source_key, source_host) = cli_source_key(source);
        let id = sqlx::query_scalar(
            "INSERT INTO jobs (cli_key, mailbox_key, source, target, source_key, source_host, target_host,
                               state, started_at)
             VALUES ($1, $1, $2, $3, $4, $5, '', 'running', now())
             ON CONFLICT (cli_key) DO UPDATE SET state = 'running', last_error = NULL, finished_at = NULL,
                 started_at = now(), updated_at = now()
             RETURNING id",
        )
        .bind(mailbox_key)
        .bind(source)
        .bind(target)
        .bind(source_key)
        .bind(source_host)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn start_run(&self, job: JobId, dry_run: bool) -> Result<RunId> {
        let mut tx = self.pool.begin().await?;
        // Earlier runs that never recorded their end (killed, or the database was gone when
        // they ended) are over: only the holder of the source claim starts a run.
        sqlx::query(&format!(
            "UPDATE runs SET finished_at = now(), outcome = 'failed', error = COALESCE(error, '{INTERRUPTED}')
             WHERE job_id = $1 AND finished_at IS NULL"
        ))
        .bind(job)
        .execute(&mut *tx)
        .await?;
        let id = sqlx::query_scalar("INSERT INTO runs (job_id, dry_run) VALUES ($1, $2) RETURNING id")
            .bind(job)
            .bind(dry_run)
            .fetch_one(&mut *tx)
            .await?;
        // Service jobs count passes when claimed; CLI jobs here.
        sqlx::query("UPDATE jobs SET runs = runs + 1, updated_at = now() WHERE id = $1 AND spec IS NULL")
            .bind(job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn finish_run(&self, run: RunId, outcome: &str, error: Option<&str>, summary_json: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE runs SET finished_at = now(), outcome = $1, error = $2, summary = $3 WHERE id = $4")
            .bind(outcome)
            .bind(error)
            .bind(summary_json)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        // A CLI job's state follows its last run (service jobs: the worker's release_job).
        if JobState::parse(outcome).is_some_and(JobState::is_terminal) {
            sqlx::query(
                "UPDATE jobs SET state = $1, last_error = $2, finished_at = now(), updated_at = now()
                 WHERE id = (SELECT job_id FROM runs WHERE id = $3) AND spec IS NULL",
            )
            .bind(outcome)
            .bind(error)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ledger(&self, job: JobId) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT uidl, size, state, wire_digest, wire_size, message_id, copied_at, list_size, dest_uid, dest_uidvalidity, internal_date
             FROM ledger WHERE job_id = $1",
        )
        .bind(job)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(ledger_entry).collect()
    }

    async fn ledger_where(&self, job: JobId, query: LedgerQuery<'_>) -> Result<Vec<LedgerEntry>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT uidl, size, state, wire_digest, wire_size, message_id, copied_at, list_size, dest_uid, dest_uidvalidity, internal_date FROM ledger WHERE job_id = ",
        );
        q.push_bind(job);
        let list = |q: &mut QueryBuilder<'_, Postgres>, column: &str, values: &[String]| {
            q.push(format!(" AND {column} IN ("));
            let mut items = q.separated(", ");
            for v in values {
                items.push_bind(v.clone());
            }
            q.push(")");
        };
        match query {
            LedgerQuery::Uidls([]) | LedgerQuery::CopiedWithDigests([]) => return Ok(Vec::new()),
            LedgerQuery::Uidls(uidls) => list(&mut q, "uidl", uidls),
            LedgerQuery::InDoubt => {
                q.push(" AND state = 'copying'");
            }
            LedgerQuery::CopiedWithDigests(digests) => {
                q.push(" AND state IN ('copied', 'verified', 'source-deleted')");
                list(&mut q, "wire_digest", digests);
            }
            LedgerQuery::AnyOne => {
                q.push(" LIMIT 1");
            }
        }
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(ledger_entry).collect()
    }

    async fn record_listed(&self, job: JobId, run: RunId, listed: &[(String, u64)]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (uidl, size) in listed {
            sqlx::query(
                "INSERT INTO ledger (job_id, uidl, size, list_size, state, first_seen_run_id, last_run_id, first_seen_at, updated_at)
                 VALUES ($1, $2, $3, $3, 'listed', $4, $4, now(), now())
                 ON CONFLICT (job_id, uidl) DO UPDATE SET list_size = COALESCE(ledger.list_size, excluded.list_size)",
            )
            .bind(job)
            .bind(uidl)
            .bind(*size as i64)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_copying(&self, job: JobId, run: RunId, intents: &[CopyIntent]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for i in intents {
            sqlx::query(
                "UPDATE ledger SET state = 'copying', size = $1, digest = $2, wire_digest = $3, wire_size = $4,
                     normalized = $5, message_id = $6, internal_date = $7, internal_date_source = $8,
                     reason = NULL, last_run_id = $9, updated_at = now()
                 WHERE job_id = $10 AND uidl = $11",
            )
            .bind(i.size as i64)
            .bind(&i.digest)
            .bind(&i.wire_digest)
            .bind(i.wire_size as i64)
            .bind(i.normalized)
            .bind(&i.message_id)
            .bind(&i.internal_date)
            .bind(i.internal_date_source)
            .bind(run)
            .bind(job)
            .bind(&i.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_copied(&self, job: JobId, run: RunId, done: &[CopyDone]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for d in done {
            sqlx::query(
                "UPDATE ledger SET state = 'copied', dest_uid = $1, dest_uidvalidity = $2, found_at_destination = $3,
                     verify_error = NULL, readback_digest = NULL, verify_level = NULL, verified_at = NULL,
                     reason = NULL, last_run_id = $4, copied_run_id = $4, copied_at = now(), updated_at = now()
                 WHERE job_id = $5 AND uidl = $6",
            )
            .bind(d.dest_uid.map(i64::from))
            .bind(d.dest_uidvalidity.map(i64::from))
            .bind(d.found_at_destination)
            .bind(run)
            .bind(job)
            .bind(&d.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revert_copying(&self, job: JobId, uidls: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for uidl in uidls {
            sqlx::query(
                "UPDATE ledger SET state = 'listed', updated_at = now()
                 WHERE job_id = $1 AND uidl = $2 AND state = 'copying'",
            )
            .bind(job)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn mark_skipped(&self, job: JobId, run: RunId, uidl: &str, reason: &str) -> Result<()> {
        set_terminal(&self.pool, job, run, uidl, "skipped", reason).await
    }

    async fn mark_failed(&self, job: JobId, run: RunId, uidl: &str, error: &str) -> Result<()> {
        set_terminal(&self.pool, job, run, uidl, "failed", error).await
    }

    async fn mark_source_deleted(&self, job: JobId, run: RunId, uidls: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for uidl in uidls {
            // Only a confirmed copy may ever be recorded as deleted (first law).
            sqlx::query(
                "UPDATE ledger SET state = 'source-deleted', deleted_run_id = $1, deleted_at = now(),
                     last_run_id = $1, updated_at = now()
                 WHERE job_id = $2 AND uidl = $3 AND state IN ('copied', 'verified')",
            )
            .bind(run)
            .bind(job)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_source(&self, key: &str, who: &ClaimHolder, lease: Duration, take_over: Option<i64>) -> Result<ClaimAttempt> {
        crate::claims::pg_claim(&mut *self.pool.acquire().await?, key, who, lease, take_over).await
    }

    async fn renew_source(&self, claim: &SourceClaim, lease: Duration) -> Result<bool> {
        crate::claims::pg_renew(&mut *self.pool.acquire().await?, claim, lease).await
    }

    async fn release_source(&self, claim: &SourceClaim) -> Result<()> {
        crate::claims::pg_release(&mut *self.pool.acquire().await?, claim).await
    }

    async fn fence_run(&self, run: RunId, claim: &SourceClaim) -> Result<()> {
        crate::claims::pg_fence_run(&mut *self.pool.acquire().await?, run, claim).await
    }

    async fn supersede_reused(&self, job: JobId, run: RunId, uidl: &str, why: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE ledger SET uidl = $1, reason = $2, updated_at = now() WHERE job_id = $3 AND uidl = $4")
            .bind(crate::superseded_name(uidl, run))
            .bind(why)
            .bind(job)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_readback(&self, job: JobId, run: RunId, results: &[ReadBackResult]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for r in results {
            sqlx::query(
                "UPDATE ledger SET state = CASE WHEN $1::TEXT IS NULL THEN 'verified' ELSE state END,
                     readback_digest = $2, verify_level = $3, verify_error = $1,
                     verified_at = CASE WHEN $1::TEXT IS NULL THEN now() ELSE verified_at END, last_run_id = $4, updated_at = now()
                 WHERE job_id = $5 AND uidl = $6 AND state IN ('copied', 'verified')",
            )
            .bind(&r.error)
            .bind(&r.readback_digest)
            .bind(r.level.as_str())
            .bind(run)
            .bind(job)
            .bind(&r.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::pg_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn receipt_rows(&self, job: JobId, after: &str, limit: u32) -> Result<Vec<crate::ReceiptRow>> {
        crate::receipts::pg::rows(&self.pool, job, after, limit).await
    }

    async fn save_receipt_lines(&self, run: RunId, first_seq: u64, lines: &[String]) -> Result<()> {
        crate::receipts::pg::save_lines(&self.pool, run, first_seq, lines).await
    }

    async fn save_receipt(&self, receipt: &crate::StoredReceipt) -> Result<()> {
        crate::receipts::pg::save(&self.pool, receipt).await
    }

    async fn receipt(&self, job: JobId, run: Option<RunId>) -> Result<Option<crate::StoredReceipt>> {
        crate::receipts::pg::get(&self.pool, job, run).await
    }

    async fn receipt_lines(&self, entries_run: RunId, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        crate::receipts::pg::lines(&self.pool, entries_run, after, limit).await
    }

    async fn run_counts(&self, job: JobId, run: RunId) -> Result<RunCounts> {
        let row = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE NOT found_at_destination) AS n,
                    COUNT(*) FILTER (WHERE found_at_destination) AS found,
                    COALESCE(SUM(COALESCE(wire_size, size)) FILTER (WHERE NOT found_at_destination), 0)::BIGINT AS bytes
             FROM ledger WHERE job_id = $1 AND copied_run_id = $2",
        )
        .bind(job)
        .bind(run)
        .fetch_one(&self.pool)
        .await?;
        let deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = $1 AND deleted_run_id = $2")
            .bind(job)
            .bind(run)
            .fetch_one(&self.pool)
            .await?;
        let problems = sqlx::query(
            "SELECT uidl, CASE WHEN verify_error IS NOT NULL THEN 'failed' ELSE state END AS state,
                    COALESCE(verify_error, reason, '') AS reason FROM ledger
             WHERE job_id = $1 AND last_run_id = $2 AND (state IN ('skipped', 'failed') OR verify_error IS NOT NULL) ORDER BY uidl",
        )
        .bind(job)
        .bind(run)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = RunCounts {
            copied: row.try_get::<i64, _>("n")? as u64,
            found: row.try_get::<i64, _>("found")? as u64,
            bytes: row.try_get::<i64, _>("bytes")? as u64,
            deleted: deleted as u64,
            ..RunCounts::default()
        };
        for p in problems {
            let entry = (p.try_get::<String, _>("uidl")?, p.try_get::<String, _>("reason")?);
            if p.try_get::<String, _>("state")? == "skipped" {
                counts.skipped.push(entry);
            } else {
                counts.failed.push(entry);
            }
        }
        Ok(counts)
    }
}

fn ledger_entry(r: &PgRow) -> Result<LedgerEntry> {
    let state: String = r.try_get("state")?;
    Ok(LedgerEntry {
        uidl: r.try_get("uidl")?,
        size: r.try_get::<i64, _>("size")? as u64,
        state: LedgerState::parse(&state).ok_or(StoreError::UnknownState(state))?,
        wire_digest: r.try_get("wire_digest")?,
        wire_size: r.try_get::<Option<i64>, _>("wire_size")?.map(|s| s as u64),
        message_id: r.try_get("message_id")?,
        list_size: r.try_get::<Option<i64>, _>("list_size")?.map(|s| s as u64),
        copied_at: opt_time(r, "copied_at")?,
        dest_uid: r.try_get::<Option<i64>, _>("dest_uid")?.and_then(|u| u32::try_from(u).ok()),
        dest_uidvalidity: r.try_get::<Option<i64>, _>("dest_uidvalidity")?.and_then(|u| u32::try_from(u).ok()),
        internal_date: r.try_get("internal_date")?,
    })
}

async fn set_terminal(pool: &PgPool, job: JobId, run: RunId, uidl: &str, state: &str, reason: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE ledger SET state = $1, reason = $2, last_run_id = $3, updated_at = now()
         WHERE job_id = $4 AND uidl = $5 AND state NOT IN ('copied', 'verified', 'source-deleted')",
    )
    .bind(state)
    .bind(reason)
    .bind(run)
    .bind(job)
    .bind(uidl)
    .execute(&mut *tx)
    .await?;
    crate::claims::pg_check_fence(&mut tx, run).await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl ServiceStore for PgStore {
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
        let mut tx = self.pool.begin().await?;
        let batch = match batch_name {
            Some(name) => {
                let (id, created_at): (i64, DateTime<Utc>) =
                    sqlx::query_as("INSERT INTO batches (name) VALUES ($1) RETURNING id, created_at")
                        .bind(name)
                        .fetch_one(&mut *tx)
                        .await?;
                Some(BatchRecord { id, name: name.to_string(), created_at: fmt_time(created_at) })
            }
            None => None,
        };
        let sql = format!(
            "INSERT INTO jobs (mailbox_key, source, target, source_key, source_host, target_host, spec, labels,
                               batch_id, state, trace_parent)
             VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, 'queued', $10) RETURNING {JOB_COLS}"
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
                .bind(trace_parent)
                .fetch_one(&mut *tx)
                .await?;
            jobs.push(job(&row)?);
        }
        tx.commit().await?;
        Ok((batch, jobs))
    }

    async fn get_job(&self, id: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut q = QueryBuilder::<Postgres>::new(format!("SELECT {JOB_COLS} FROM jobs WHERE id > "));
        q.push_bind(filter.after.unwrap_or(0));
        if let Some(state) = filter.state {
            q.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(batch) = filter.batch {
            q.push(" AND batch_id = ").push_bind(batch);
        }
        if let Some((k, v)) = &filter.label {
            q.push(" AND labels @> jsonb_build_object(")
                .push_bind(k.clone())
                .push("::text, ")
                .push_bind(v.clone())
                .push("::text)");
        }
        if let Some(text) = filter.text.as_deref().filter(|t| !t.is_empty()) {
            q.push(" AND (strpos(lower(source), lower(")
                .push_bind(text.to_string())
                .push(")) > 0 OR strpos(lower(target), lower(")
                .push_bind(text.to_string())
                .push(")) > 0)");
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(filter.limit));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(job).collect()
    }

    async fn job_counts(&self, id: i64) -> Result<JobCounts> {
        let row = sqlx::query(&counts_sql("job_id = $1")).bind(id).fetch_one(&self.pool).await?;
        counts(&row)
    }

    async fn ledger_page(&self, job: i64, after: Option<&str>, limit: u32) -> Result<Vec<LedgerRow>> {
        let cols = "uidl, size, state, reason, digest, dest_uid, internal_date, internal_date_source, \
                    first_seen_at, copied_at, deleted_at";
        let with_cursor = format!("SELECT {cols} FROM ledger WHERE job_id = $1 AND uidl > $2 ORDER BY uidl LIMIT $3");
        let from_start = format!("SELECT {cols} FROM ledger WHERE job_id = $1 ORDER BY uidl LIMIT $2");
        let rows = match after {
            Some(after) => sqlx::query(&with_cursor).bind(job).bind(after),
            None => sqlx::query(&from_start).bind(job),
        }
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
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
                    first_seen_at: time(r, "first_seen_at")?,
                    copied_at: opt_time(r, "copied_at")?,
                    deleted_at: opt_time(r, "deleted_at")?,
                }
                .into_row()
            })
            .collect()
    }

    async fn control(&self, id: i64, action: ControlAction) -> Result<ControlOutcome> {
        let mut tx = self.pool.begin().await?;
        let Some(row) = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1 FOR UPDATE"))
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
            "UPDATE jobs SET state = $1, cancel_requested = $2, pause_requested = $3,
                 last_error = CASE WHEN $4 THEN NULL ELSE last_error END,
                 finished_at = CASE $5::BIGINT WHEN 1 THEN now() WHEN 2 THEN NULL ELSE finished_at END,
                 not_before = CASE WHEN $6 THEN NULL ELSE not_before END,
                 updated_at = now()
             WHERE id = $7 AND state = $8
             RETURNING {JOB_COLS}"
        ))
        .bind(plan.state.as_str())
        .bind(plan.cancel_requested)
        .bind(plan.pause_requested)
        .bind(plan.clear_error)
        .bind(plan.finished as i64)
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
        let rows: Vec<(i64, i64, DateTime<Utc>, String, Option<String>)> = sqlx::query_as(
            "SELECT id, job_id, at, state, detail FROM job_events WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(job)
        .bind(after)
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, job_id, at, state, detail)| {
                Ok(JobEvent { id, job_id, at: fmt_time(at), state: parse_job_state(state)?, detail })
            })
            .collect()
    }

    async fn claim_job(&self, worker: &str, lease: Duration, limits: ClaimLimits) -> Result<Option<Claimed>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CLAIM_LOCK).execute(&mut *tx).await?;
        // The clock is read after the lock: the wait for it must not shorten the lease.
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&mut *tx).await?;
        let candidate: Option<(i64, String)> = sqlx::query_as(
            "WITH live AS (
                 SELECT source_key, source_host, target_host FROM jobs
                 WHERE state = 'running' AND lease_expires_at >= $1)
             SELECT j.id, j.state FROM jobs j
             WHERE j.spec IS NOT NULL AND j.state IN ('queued', 'running')
               AND ((j.state = 'queued' AND (j.not_before IS NULL OR j.not_before <= $1))
                    OR (j.state = 'running' AND j.lease_expires_at < $1))
               AND j.source_key NOT IN (SELECT source_key FROM live)
               AND j.source_host NOT IN (SELECT source_host FROM live GROUP BY source_host HAVING COUNT(*) >= $2)
               AND (j.target_host = '' OR j.target_host NOT IN
                    (SELECT target_host FROM live GROUP BY target_host HAVING COUNT(*) >= $3))
             ORDER BY j.id LIMIT 1
             FOR UPDATE OF j SKIP LOCKED",
        )
        .bind(now)
        .bind(cap(limits.per_source_host))
        .bind(cap(limits.per_target_host))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, state)) = candidate else {
            return Ok(None);
        };
        let takeover = parse_job_state(state)? == JobState::Running;
        let expires = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, updated_at = $3,
                 started_at = CASE WHEN state = 'queued' THEN $3 ELSE started_at END,
                 runs = CASE WHEN state = 'queued' THEN runs + 1 ELSE runs END,
                 not_before = NULL, finished_at = NULL
             WHERE id = $4
             RETURNING {JOB_COLS}"
        ))
        .bind(worker)
        .bind(expires)
        .bind(now)
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let job = job(&row)?;
        tx.commit().await?;
        Ok(Some(Claimed { job, takeover }))
    }

    async fn heartbeat(&self, id: i64, worker: &str, lease: Duration) -> Result<LeaseStatus> {
        let row: Option<(bool, bool)> = sqlx::query_as(
            "UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $1), updated_at = now()
             WHERE id = $2 AND lease_owner = $3 AND state = 'running'
             RETURNING cancel_requested, pause_requested",
        )
        .bind(secs(lease))
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
        let mut tx = self.pool.begin().await?;
        let spec: Option<Option<String>> =
            sqlx::query_scalar("SELECT spec::text FROM jobs WHERE id = $1 FOR UPDATE").bind(id).fetch_optional(&mut *tx).await?;
        let Some(rotated) = spec.flatten().map(|s| rotate_refresh_token(id, &s, current, new)).transpose()?.flatten() else {
            return Ok(false);
        };
        sqlx::query("UPDATE jobs SET spec = $1::jsonb, updated_at = now() WHERE id = $2")
            .bind(rotated)
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
        let not_before = match (release.state, release.not_before) {
            (JobState::Queued, Some(d)) => Some(secs(d)),
            _ => None,
        };
        let done = sqlx::query(
            "UPDATE jobs SET state = $1, last_error = $2,
                 not_before = clock_timestamp() + make_interval(secs => $3),
                 finished_at = CASE WHEN $4 THEN now() END, updated_at = now(),
                 lease_owner = NULL, lease_expires_at = NULL, cancel_requested = FALSE, pause_requested = FALSE
             WHERE id = $5 AND lease_owner = $6 AND state = 'running'",
        )
        .bind(release.state.as_str())
        .bind(&release.error)
        .bind(not_before)
        .bind(release.state.is_terminal())
        .bind(id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_batch(&self, id: i64) -> Result<Option<BatchSummary>> {
        let Some((id, name, created_at)) =
            sqlx::query_as::<_, (i64, String, DateTime<Utc>)>("SELECT id, name, created_at FROM batches WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
        else {
            return Ok(None);
        };
        let per_state: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs WHERE batch_id = $1 GROUP BY state")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        let row = sqlx::query(&counts_sql("job_id IN (SELECT id FROM jobs WHERE batch_id = $1)"))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        summary(BatchRecord { id, name, created_at: fmt_time(created_at) }, per_state, counts(&row)?).map(Some)
    }

    async fn create_token(&self, name: &str, scope: Scope, token_hash: &str) -> Result<TokenRecord> {
        let (id, created_at): (i64, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO api_tokens (name, scope, token_hash) VALUES ($1, $2, $3) RETURNING id, created_at",
        )
        .bind(name)
        .bind(scope.as_str())
        .bind(token_hash)
        .fetch_one(&self.pool)
        .await?;
        Ok(TokenRecord { id, name: name.to_string(), scope, created_at: fmt_time(created_at) })
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let row: Option<(i64, String, String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE api_tokens SET last_used_at = now() WHERE token_hash = $1 RETURNING id, name, scope, created_at",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(id, name, scope, created_at)| token_record(id, name, scope, fmt_time(created_at))).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows: Vec<(i64, String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT id, name, scope, created_at FROM api_tokens ORDER BY id").fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|(id, name, scope, created_at)| token_record(id, name, scope, fmt_time(created_at)))
            .collect()
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
                .bind(token_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(request_hash, status, body)| StoredResponse {
            request_hash,
            status: u16::try_from(status).unwrap_or(500),
            body,
        }))
    }

    async fn idempotency_put(&self, token_id: i64, key: &str, response: &StoredResponse) -> Result<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (token_id, key, request_hash, status, body)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id, key) DO NOTHING",
        )
        .bind(token_id)
        .bind(key)
        .bind(&response.request_hash)
        .bind(i32::from(response.status))
        .bind(&response.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
