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
use mailferry_model::{JobState, LedgerState};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use crate::common::{cli_source_key, fmt_time, INTERRUPTED};
use crate::dialect::Dialect;
use crate::claims::{ClaimAttempt, ClaimHolder, SourceClaim};
use crate::{CopyDone, CopyIntent, JobId, LedgerEntry, LedgerQuery, ReadBackResult, Result, RunCounts, RunId, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

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

fn opt_time(r: &PgRow, col: &str) -> Result<Option<String>> {
    Ok(r.try_get::<Option<DateTime<Utc>>, _>(col)?.map(fmt_time))
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
