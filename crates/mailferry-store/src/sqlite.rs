//! SQLite implementation of [`Store`]: the zero-setup embedded default.
//!
//! WAL journal and `synchronous = FULL`: a ledger row saying `copied` must survive a power
//! cut, because deletion at the source is decided from it (DESIGN.md §2.1).

use std::path::Path;
use std::time::Duration;
use std::str::FromStr;

use async_trait::async_trait;
use mailferry_model::{JobState, LedgerState};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::dialect::Dialect;
use crate::claims::{ClaimAttempt, ClaimHolder, SourceClaim};
use crate::common::{cli_source_key, INTERRUPTED};
use crate::{CopyDone, CopyIntent, JobId, LedgerEntry, LedgerQuery, ReadBackResult, Result, RunCounts, RunId, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The single writer (SQLite's model; one connection avoids SQLITE_BUSY).
    pub(crate) pool: SqlitePool,
    /// Readers: WAL lets them run beside the writer, so API polling never queues in front
    /// of a worker's ledger commit.
    pub(crate) reader: SqlitePool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl SqliteStore {
    /// Open (creating if needed) the state database at `path` and apply migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::StateDir { path: dir.display().to_string(), source })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        // One writer at a time is SQLite's model; a single connection avoids SQLITE_BUSY.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        MIGRATOR.run(&pool).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(Self { pool, reader })
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

/// RFC 3339 UTC with milliseconds, as every time is stored.
const RFC3339: &str = "'%Y-%m-%dT%H:%M:%fZ'";

impl Dialect for SqliteStore {
    type Db = Sqlite;
    const MANY_WRITERS: bool = false;
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    const CLOCK: &'static str = Self::NOW;
    // '' sorts before every time.
    const RELEASED: &'static str = "''";
    const STRPOS: &'static str = "instr";
    const LABEL: [&'static str; 3] = ["EXISTS (SELECT 1 FROM json_each(jobs.labels) AS l WHERE l.key = ", " AND l.value = ", ")"];

    fn text(col: &str) -> String {
        col.to_string()
    }

    fn cast(_pg_type: &str) -> String {
        String::new()
    }

    fn after(secs: &str) -> String {
        format!("strftime({RFC3339}, 'now', {secs} || ' seconds')")
    }

    fn secs_since(expr: &str) -> String {
        format!("(julianday('now') - julianday({expr})) * 86400.0")
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_job(&self, mailbox_key: &str, source: &str, target: &str) -> Result<JobId> {
        // A CLI job: found by its key, marked running for the dashboard, never claimable
        // (no spec). Its display forms stay those of its first run.
        let (source_key, source_host) = cli_source_key(source);
        let id = sqlx::query_scalar(
            "INSERT INTO jobs (cli_key, mailbox_key, source, target, source_key, source_host, target_host,
                               state, created_at, updated_at, started_at)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5, '', 'running', ?6, ?6, ?6)
             ON CONFLICT (cli_key) DO UPDATE SET state = 'running', last_error = NULL, finished_at = NULL,
                 started_at = excluded.started_at, updated_at = excluded.updated_at
             RETURNING id",
        )
        .bind(mailbox_key)
        .bind(source)
        .bind(target)
        .bind(source_key)
        .bind(source_host)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn start_run(&self, job: JobId, dry_run: bool) -> Result<RunId> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        // Earlier runs that never recorded their end (killed, or the database was gone when
        // they ended) are over: only the holder of the source claim starts a run.
        sqlx::query(&format!(
            "UPDATE runs SET finished_at = ?, outcome = 'failed', error = COALESCE(error, '{INTERRUPTED}')
             WHERE job_id = ? AND finished_at IS NULL"
        ))
        .bind(&now)
        .bind(job)
        .execute(&mut *tx)
        .await?;
        let id = sqlx::query_scalar("INSERT INTO runs (job_id, dry_run, started_at) VALUES (?, ?, ?) RETURNING id")
            .bind(job)
            .bind(dry_run)
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
        // Service jobs count passes when claimed; CLI jobs here.
        sqlx::query("UPDATE jobs SET runs = runs + 1, updated_at = ? WHERE id = ? AND spec IS NULL")
            .bind(&now)
            .bind(job)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn finish_run(&self, run: RunId, outcome: &str, error: Option<&str>, summary_json: &str) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE runs SET finished_at = ?, outcome = ?, error = ?, summary = ? WHERE id = ?")
            .bind(&now)
            .bind(outcome)
            .bind(error)
            .bind(summary_json)
            .bind(run)
            .execute(&mut *tx)
            .await?;
        // A CLI job's state follows its last run (service jobs: the worker's release_job).
        if JobState::parse(outcome).is_some_and(JobState::is_terminal) {
            sqlx::query(
                "UPDATE jobs SET state = ?, last_error = ?, finished_at = ?, updated_at = ?
                 WHERE id = (SELECT job_id FROM runs WHERE id = ?) AND spec IS NULL",
            )
            .bind(outcome)
            .bind(error)
            .bind(&now)
            .bind(&now)
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
             FROM ledger WHERE job_id = ?",
        )
        .bind(job)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(ledger_entry).collect()
    }

    async fn ledger_where(&self, job: JobId, query: LedgerQuery<'_>) -> Result<Vec<LedgerEntry>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT uidl, size, state, wire_digest, wire_size, message_id, copied_at, list_size, dest_uid, dest_uidvalidity, internal_date FROM ledger WHERE job_id = ",
        );
        q.push_bind(job);
        let list = |q: &mut QueryBuilder<'_, Sqlite>, column: &str, values: &[String]| {
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
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(ledger_entry).collect()
    }

    async fn record_listed(&self, job: JobId, run: RunId, listed: &[(String, u64)]) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        for (uidl, size) in listed {
            sqlx::query(
                "INSERT INTO ledger (job_id, uidl, size, list_size, state, first_seen_run_id, last_run_id, first_seen_at, updated_at)
                 VALUES (?, ?, ?, ?, 'listed', ?, ?, ?, ?)
                 ON CONFLICT (job_id, uidl) DO UPDATE SET list_size = COALESCE(ledger.list_size, excluded.list_size)",
            )
            .bind(job)
            .bind(uidl)
            .bind(*size as i64)
            .bind(*size as i64)
            .bind(run)
            .bind(run)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_copying(&self, job: JobId, run: RunId, intents: &[CopyIntent]) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        for i in intents {
            sqlx::query(
                "UPDATE ledger SET state = 'copying', size = ?, digest = ?, wire_digest = ?, wire_size = ?,
                     normalized = ?, message_id = ?, internal_date = ?, internal_date_source = ?,
                     reason = NULL, last_run_id = ?, updated_at = ?
                 WHERE job_id = ? AND uidl = ?",
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
            .bind(&now)
            .bind(job)
            .bind(&i.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn mark_copied(&self, job: JobId, run: RunId, done: &[CopyDone]) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        for d in done {
            sqlx::query(
                "UPDATE ledger SET state = 'copied', dest_uid = ?, dest_uidvalidity = ?, found_at_destination = ?, reason = NULL,
                     verify_error = NULL, readback_digest = NULL, verify_level = NULL, verified_at = NULL,
                     last_run_id = ?, copied_run_id = ?, copied_at = ?, updated_at = ?
                 WHERE job_id = ? AND uidl = ?",
            )
            .bind(d.dest_uid.map(i64::from))
            .bind(d.dest_uidvalidity.map(i64::from))
            .bind(d.found_at_destination)
            .bind(run)
            .bind(run)
            .bind(&now)
            .bind(&now)
            .bind(job)
            .bind(&d.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revert_copying(&self, job: JobId, uidls: &[String]) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        for uidl in uidls {
            sqlx::query(
                "UPDATE ledger SET state = 'listed', updated_at = ?
                 WHERE job_id = ? AND uidl = ? AND state = 'copying'",
            )
            .bind(&now)
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
        let now = now();
        let mut tx = self.pool.begin().await?;
        for uidl in uidls {
            // Only a confirmed copy may ever be recorded as deleted (first law).
            sqlx::query(
                "UPDATE ledger SET state = 'source-deleted', deleted_run_id = ?, deleted_at = ?,
                     last_run_id = ?, updated_at = ?
                 WHERE job_id = ? AND uidl = ? AND state IN ('copied', 'verified')",
            )
            .bind(run)
            .bind(&now)
            .bind(run)
            .bind(&now)
            .bind(job)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_source(&self, key: &str, who: &ClaimHolder, lease: Duration, take_over: Option<i64>) -> Result<ClaimAttempt> {
        let mut tx = self.pool.begin().await?;
        let attempt = crate::claims::sqlite_claim(&mut tx, key, who, lease, take_over).await?;
        tx.commit().await?;
        Ok(attempt)
    }

    async fn renew_source(&self, claim: &SourceClaim, lease: Duration) -> Result<bool> {
        let mut c = self.pool.acquire().await?;
        crate::claims::sqlite_renew(&mut c, claim, lease).await
    }

    async fn release_source(&self, claim: &SourceClaim) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        crate::claims::sqlite_release(&mut c, claim).await
    }

    async fn fence_run(&self, run: RunId, claim: &SourceClaim) -> Result<()> {
        let mut c = self.pool.acquire().await?;
        crate::claims::sqlite_fence_run(&mut c, run, claim).await
    }

    async fn supersede_reused(&self, job: JobId, run: RunId, uidl: &str, why: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE ledger SET uidl = ?, reason = ?, updated_at = ? WHERE job_id = ? AND uidl = ?")
            .bind(crate::superseded_name(uidl, run))
            .bind(why)
            .bind(now())
            .bind(job)
            .bind(uidl)
            .execute(&mut *tx)
            .await?;
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_readback(&self, job: JobId, run: RunId, results: &[ReadBackResult]) -> Result<()> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        for r in results {
            sqlx::query(
                "UPDATE ledger SET state = CASE WHEN ?1 IS NULL THEN 'verified' ELSE state END,
                     readback_digest = ?2, verify_level = ?3, verify_error = ?1,
                     verified_at = CASE WHEN ?1 IS NULL THEN ?4 ELSE verified_at END, last_run_id = ?5, updated_at = ?4
                 WHERE job_id = ?6 AND uidl = ?7 AND state IN ('copied', 'verified')",
            )
            .bind(&r.error)
            .bind(&r.readback_digest)
            .bind(r.level.as_str())
            .bind(&now)
            .bind(run)
            .bind(job)
            .bind(&r.uidl)
            .execute(&mut *tx)
            .await?;
        }
        crate::claims::sqlite_check_fence(&mut tx, run).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn receipt_rows(&self, job: JobId, after: &str, limit: u32) -> Result<Vec<crate::ReceiptRow>> {
        crate::receipts::sqlite::rows(&self.reader, job, after, limit).await
    }

    async fn save_receipt_lines(&self, run: RunId, first_seq: u64, lines: &[String]) -> Result<()> {
        crate::receipts::sqlite::save_lines(&self.pool, run, first_seq, lines).await
    }

    async fn save_receipt(&self, receipt: &crate::StoredReceipt) -> Result<()> {
        crate::receipts::sqlite::save(&self.pool, receipt).await
    }

    async fn receipt(&self, job: JobId, run: Option<RunId>) -> Result<Option<crate::StoredReceipt>> {
        crate::receipts::sqlite::get(&self.reader, job, run).await
    }

    async fn receipt_lines(&self, entries_run: RunId, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
        crate::receipts::sqlite::lines(&self.reader, entries_run, after, limit).await
    }

    async fn run_counts(&self, job: JobId, run: RunId) -> Result<RunCounts> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(1 - found_at_destination), 0) AS n, COALESCE(SUM(found_at_destination), 0) AS found,
                    COALESCE(SUM(CASE WHEN found_at_destination = 0 THEN COALESCE(wire_size, size) ELSE 0 END), 0) AS bytes
             FROM ledger WHERE job_id = ? AND copied_run_id = ?",
        )
        .bind(job)
        .bind(run)
        .fetch_one(&self.reader)
        .await?;
        let deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = ? AND deleted_run_id = ?")
            .bind(job)
            .bind(run)
            .fetch_one(&self.reader)
            .await?;
        let problems = sqlx::query(
            "SELECT uidl, CASE WHEN verify_error IS NOT NULL THEN 'failed' ELSE state END AS state,
                    COALESCE(verify_error, reason, '') AS reason FROM ledger
             WHERE job_id = ? AND last_run_id = ? AND (state IN ('skipped', 'failed') OR verify_error IS NOT NULL) ORDER BY uidl",
        )
        .bind(job)
        .bind(run)
        .fetch_all(&self.reader)
        .await?;
        let mut counts = RunCounts {
            copied: row.get::<i64, _>("n") as u64,
            found: row.get::<i64, _>("found") as u64,
            bytes: row.get::<i64, _>("bytes") as u64,
            deleted: deleted as u64,
            ..RunCounts::default()
        };
        for p in problems {
            let entry = (p.get::<String, _>("uidl"), p.get::<String, _>("reason"));
            if p.get::<String, _>("state") == "skipped" {
                counts.skipped.push(entry);
            } else {
                counts.failed.push(entry);
            }
        }
        Ok(counts)
    }
}

fn ledger_entry(r: &sqlx::sqlite::SqliteRow) -> Result<LedgerEntry> {
    let state: String = r.get("state");
    Ok(LedgerEntry {
        uidl: r.get("uidl"),
        size: r.get::<i64, _>("size") as u64,
        state: LedgerState::parse(&state).ok_or(StoreError::UnknownState(state))?,
        wire_digest: r.get("wire_digest"),
        wire_size: r.get::<Option<i64>, _>("wire_size").map(|s| s as u64),
        message_id: r.get("message_id"),
        copied_at: r.get("copied_at"),
        list_size: r.get::<Option<i64>, _>("list_size").map(|s| s as u64),
        dest_uid: r.get::<Option<i64>, _>("dest_uid").and_then(|u| u32::try_from(u).ok()),
        dest_uidvalidity: r.get::<Option<i64>, _>("dest_uidvalidity").and_then(|u| u32::try_from(u).ok()),
        internal_date: r.get("internal_date"),
    })
}

async fn set_terminal(pool: &SqlitePool, job: JobId, run: RunId, uidl: &str, state: &str, reason: &str) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE ledger SET state = ?, reason = ?, last_run_id = ?, updated_at = ?
         WHERE job_id = ? AND uidl = ? AND state NOT IN ('copied', 'verified', 'source-deleted')",
    )
    .bind(state)
    .bind(reason)
    .bind(run)
    .bind(now())
    .bind(job)
    .bind(uidl)
    .execute(&mut *tx)
    .await?;
    crate::claims::sqlite_check_fence(&mut tx, run).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sub/state.db")).await.unwrap();
        (dir, store)
    }

    fn intent(uidl: &str) -> CopyIntent {
        CopyIntent {
            uidl: uidl.into(),
            size: 10,
            digest: "d".into(),
            wire_digest: "w".into(),
            wire_size: 11,
            normalized: true,
            message_id: Some("<m@x>".into()),
            internal_date: None,
            internal_date_source: "retrieved",
        }
    }

    #[tokio::test]
    async fn ledger_story() {
        let (_dir, s) = store().await;
        let job = s.ensure_job("k", "pop3 a@h:995", "imap b@h:993/INBOX").await.unwrap();
        assert_eq!(s.ensure_job("k", "x", "y").await.unwrap(), job, "same key, same job");
        let run = s.start_run(job, false).await.unwrap();
        s.record_listed(job, run, &[("u1".into(), 10), ("u2".into(), 20), ("u3".into(), 30)]).await.unwrap();
        s.mark_copying(job, run, &[intent("u1"), intent("u2")]).await.unwrap();
        s.mark_copied(job, run, &[CopyDone { uidl: "u1".into(), dest_uid: Some(7), dest_uidvalidity: Some(1), found_at_destination: false }])
            .await
            .unwrap();
        s.revert_copying(job, &["u2".into()]).await.unwrap();
        s.mark_skipped(job, run, "u3", "too large").await.unwrap();
        // Deleting is refused for anything not copied.
        s.mark_source_deleted(job, run, &["u1".into(), "u2".into()]).await.unwrap();
        // A failure cannot overwrite a confirmed copy.
        s.mark_failed(job, run, "u1", "boom").await.unwrap();

        let mut ledger = s.ledger(job).await.unwrap();
        ledger.sort_by(|a, b| a.uidl.cmp(&b.uidl));
        let states: Vec<_> = ledger.iter().map(|e| e.state).collect();
        assert_eq!(states, [LedgerState::SourceDeleted, LedgerState::Listed, LedgerState::Skipped]);
        assert_eq!(ledger[0].wire_size, Some(11));

        let counts = s.run_counts(job, run).await.unwrap();
        assert_eq!(counts.copied, 1);
        assert_eq!(counts.bytes, 11);
        assert_eq!(counts.deleted, 1);
        assert_eq!(counts.skipped, vec![("u3".to_string(), "too large".to_string())]);
        assert!(counts.failed.is_empty());

        // Listing again leaves known rows alone.
        let run2 = s.start_run(job, false).await.unwrap();
        s.record_listed(job, run2, &[("u1".into(), 10), ("u4".into(), 40)]).await.unwrap();
        assert_eq!(s.ledger(job).await.unwrap().len(), 4);
        assert_eq!(s.run_counts(job, run2).await.unwrap(), RunCounts::default());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let job = {
            let s = SqliteStore::open(&path).await.unwrap();
            let job = s.ensure_job("k", "s", "t").await.unwrap();
            let run = s.start_run(job, false).await.unwrap();
            s.record_listed(job, run, &[("u1".into(), 1)]).await.unwrap();
            job
        };
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.ledger(job).await.unwrap().len(), 1);
    }
}
