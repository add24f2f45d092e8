//! The one implementation of [`Store`]: the engine's jobs and runs, the per-message ledger,
//! source claims (their statements are in [`crate::claims`]) and receipts. One body serves
//! both backends ([`impl_store`], instantiated at the bottom); what differs is their
//! [`Dialect`].
//!
//! Every ledger write of a run is one transaction that checks the run's fence
//! ([`crate::claims`]) after its writes and before its commit.

use std::time::Duration;

use async_trait::async_trait;
use mailferry_model::JobState;
use sqlx::QueryBuilder;

use crate::claims::{ClaimAttempt, ClaimHolder, SourceClaim};
use crate::common::{cli_source_key, LedgerColumns, INTERRUPTED};
use crate::dialect::{Dialect, Statement};
use crate::receipts::{self, ReceiptColumns, ReceiptRow, StoredReceipt, RECEIPT_COLS};
use crate::{CopyDone, CopyIntent, JobId, LedgerEntry, LedgerQuery, ReadBackResult, Result, RunCounts, RunId, Store};
use crate::{PgStore, SqliteStore};

/// The columns of a [`LedgerEntry`].
fn entry_cols<D: Dialect>() -> String {
    format!(
        "uidl, size, state, wire_digest, wire_size, message_id, {}, list_size, dest_uid, dest_uidvalidity, internal_date",
        D::text("copied_at")
    )
}

/// The one implementation of [`Store`], for a store type that is its own [`Dialect`]:
/// writes go to its `pool`, reads to its `reader()`.
macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait]
        impl Store for $store {
            async fn ensure_job(&self, mailbox_key: &str, source: &str, target: &str) -> Result<JobId> {
                // A CLI job: found by its key, marked running for the dashboard, never
                // claimable (no spec). Its display forms stay those of its first run.
                let (source_key, source_host) = cli_source_key(source);
                let now = Self::NOW;
                let id = sqlx::query_scalar(&format!(
                    "INSERT INTO jobs (cli_key, mailbox_key, source, target, source_key, source_host, target_host,
                                       state, created_at, updated_at, started_at)
                     VALUES ($1, $1, $2, $3, $4, $5, '', 'running', {now}, {now}, {now})
                     ON CONFLICT (cli_key) DO UPDATE SET state = 'running', last_error = NULL, finished_at = NULL,
                         started_at = excluded.started_at, updated_at = excluded.updated_at
                     RETURNING id"
                ))
                .bind(mailbox_key).bind(source).bind(target).bind(source_key).bind(source_host)
                .fetch_one(&self.pool)
                .await?;
                Ok(id)
            }

            async fn start_run(&self, job: JobId, dry_run: bool) -> Result<RunId> {
                let now = Self::NOW;
                let mut tx = self.pool.begin().await?;
                // Earlier runs that never recorded their end (killed, or the database was gone
                // when they ended) are over: only the holder of the source claim starts a run.
                sqlx::query(&format!(
                    "UPDATE runs SET finished_at = {now}, outcome = 'failed', error = COALESCE(error, '{INTERRUPTED}')
                     WHERE job_id = $1 AND finished_at IS NULL"
                ))
                .bind(job)
                .execute(&mut *tx)
                .await?;
                let id = sqlx::query_scalar(&format!(
                    "INSERT INTO runs (job_id, dry_run, started_at) VALUES ($1, $2, {now}) RETURNING id"
                ))
                .bind(job).bind(dry_run)
                .fetch_one(&mut *tx)
                .await?;
                // Service jobs count passes when claimed; CLI jobs here.
                sqlx::query(&format!("UPDATE jobs SET runs = runs + 1, updated_at = {now} WHERE id = $1 AND spec IS NULL"))
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn finish_run(&self, run: RunId, outcome: &str, error: Option<&str>, summary_json: &str) -> Result<()> {
                let now = Self::NOW;
                let mut tx = self.pool.begin().await?;
                sqlx::query(&format!(
                    "UPDATE runs SET finished_at = {now}, outcome = $1, error = $2, summary = $3 WHERE id = $4"
                ))
                .bind(outcome).bind(error).bind(summary_json).bind(run)
                .execute(&mut *tx)
                .await?;
                // A CLI job's state follows its last run (service jobs: the worker's release_job).
                if JobState::parse(outcome).is_some_and(JobState::is_terminal) {
                    sqlx::query(&format!(
                        "UPDATE jobs SET state = $1, last_error = $2, finished_at = {now}, updated_at = {now}
                         WHERE id = (SELECT job_id FROM runs WHERE id = $3) AND spec IS NULL"
                    ))
                    .bind(outcome).bind(error).bind(run)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn ledger(&self, job: JobId) -> Result<Vec<LedgerEntry>> {
                let sql = format!("SELECT {} FROM ledger WHERE job_id = $1", entry_cols::<Self>());
                let rows: Vec<LedgerColumns> = sqlx::query_as(&sql).bind(job).fetch_all(self.reader()).await?;
                rows.into_iter().map(LedgerColumns::into_entry).collect()
            }

            async fn ledger_where(&self, job: JobId, query: LedgerQuery<'_>) -> Result<Vec<LedgerEntry>> {
                type Query<'q> = QueryBuilder<'q, <$store as Dialect>::Db>;
                let mut q = Query::new(format!("SELECT {} FROM ledger WHERE job_id = ", entry_cols::<Self>()));
                q.push_bind(job);
                let list = |q: &mut Query<'_>, column: &str, values: &[String]| {
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
                let rows: Vec<LedgerColumns> = q.build_query_as().fetch_all(self.reader()).await?;
                rows.into_iter().map(LedgerColumns::into_entry).collect()
            }

            async fn record_listed(&self, job: JobId, run: RunId, listed: &[(String, u64)]) -> Result<()> {
                let now = Self::NOW;
                let sql = format!(
                    "INSERT INTO ledger (job_id, uidl, size, list_size, state, first_seen_run_id, last_run_id,
                                         first_seen_at, updated_at)
                     VALUES ($1, $2, $3, $3, 'listed', $4, $4, {now}, {now})
                     ON CONFLICT (job_id, uidl) DO UPDATE SET list_size = COALESCE(ledger.list_size, excluded.list_size)"
                );
                let rows = listed.iter().map(|(uidl, size)| sqlx::query(&sql).bind(job).bind(uidl).bind(*size as i64).bind(run));
                self.write(Some(run), rows.collect()).await
            }

            async fn mark_copying(&self, job: JobId, run: RunId, intents: &[CopyIntent]) -> Result<()> {
                let sql = format!(
                    "UPDATE ledger SET state = 'copying', size = $1, digest = $2, wire_digest = $3, wire_size = $4,
                         normalized = $5, message_id = $6, internal_date = $7, internal_date_source = $8,
                         reason = NULL, last_run_id = $9, updated_at = {}
                     WHERE job_id = $10 AND uidl = $11",
                    Self::NOW
                );
                let rows = intents.iter().map(|i| {
                    sqlx::query(&sql)
                        .bind(i.size as i64).bind(&i.digest).bind(&i.wire_digest).bind(i.wire_size as i64).bind(i.normalized)
                        .bind(&i.message_id).bind(&i.internal_date).bind(i.internal_date_source)
                        .bind(run).bind(job).bind(&i.uidl)
                });
                self.write(Some(run), rows.collect()).await
            }

            async fn mark_copied(&self, job: JobId, run: RunId, done: &[CopyDone]) -> Result<()> {
                let now = Self::NOW;
                let sql = format!(
                    "UPDATE ledger SET state = 'copied', dest_uid = $1, dest_uidvalidity = $2, found_at_destination = $3,
                         verify_error = NULL, readback_digest = NULL, verify_level = NULL, verified_at = NULL,
                         reason = NULL, last_run_id = $4, copied_run_id = $4, copied_at = {now}, updated_at = {now}
                     WHERE job_id = $5 AND uidl = $6"
                );
                let rows = done.iter().map(|d| {
                    let uid = (d.dest_uid.map(i64::from), d.dest_uidvalidity.map(i64::from));
                    sqlx::query(&sql).bind(uid.0).bind(uid.1).bind(d.found_at_destination).bind(run).bind(job).bind(&d.uidl)
                });
                self.write(Some(run), rows.collect()).await
            }

            async fn revert_copying(&self, job: JobId, uidls: &[String]) -> Result<()> {
                let sql = format!(
                    "UPDATE ledger SET state = 'listed', updated_at = {}
                     WHERE job_id = $1 AND uidl = $2 AND state = 'copying'",
                    Self::NOW
                );
                self.write(None, uidls.iter().map(|uidl| sqlx::query(&sql).bind(job).bind(uidl)).collect()).await
            }

            async fn mark_skipped(&self, job: JobId, run: RunId, uidl: &str, reason: &str) -> Result<()> {
                self.set_terminal(job, run, uidl, "skipped", reason).await
            }

            async fn mark_failed(&self, job: JobId, run: RunId, uidl: &str, error: &str) -> Result<()> {
                self.set_terminal(job, run, uidl, "failed", error).await
            }

            async fn mark_source_deleted(&self, job: JobId, run: RunId, uidls: &[String]) -> Result<()> {
                // Only a confirmed copy may ever be recorded as deleted (first law).
                let now = Self::NOW;
                let sql = format!(
                    "UPDATE ledger SET state = 'source-deleted', deleted_run_id = $1, deleted_at = {now},
                         last_run_id = $1, updated_at = {now}
                     WHERE job_id = $2 AND uidl = $3 AND state IN ('copied', 'verified')"
                );
                let rows = uidls.iter().map(|uidl| sqlx::query(&sql).bind(run).bind(job).bind(uidl));
                self.write(Some(run), rows.collect()).await
            }

            async fn run_counts(&self, job: JobId, run: RunId) -> Result<RunCounts> {
                let (copied, found, bytes): (i64, i64, i64) = sqlx::query_as(
                    "SELECT COUNT(*) FILTER (WHERE NOT found_at_destination),
                            COUNT(*) FILTER (WHERE found_at_destination),
                            CAST(COALESCE(SUM(COALESCE(wire_size, size)) FILTER (WHERE NOT found_at_destination), 0) AS BIGINT)
                     FROM ledger WHERE job_id = $1 AND copied_run_id = $2",
                )
                .bind(job).bind(run)
                .fetch_one(self.reader())
                .await?;
                let deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger WHERE job_id = $1 AND deleted_run_id = $2")
                    .bind(job).bind(run)
                    .fetch_one(self.reader())
                    .await?;
                let problems: Vec<(String, String, String)> = sqlx::query_as(
                    "SELECT uidl, CASE WHEN verify_error IS NOT NULL THEN 'failed' ELSE state END,
                            COALESCE(verify_error, reason, '') FROM ledger
                     WHERE job_id = $1 AND last_run_id = $2 AND (state IN ('skipped', 'failed') OR verify_error IS NOT NULL)
                     ORDER BY uidl",
                )
                .bind(job).bind(run)
                .fetch_all(self.reader())
                .await?;
                let n = |v: i64| v.max(0) as u64;
                let (copied, found, bytes, deleted) = (n(copied), n(found), n(bytes), n(deleted));
                let mut counts = RunCounts { copied, found, bytes, deleted, ..RunCounts::default() };
                for (uidl, state, reason) in problems {
                    let list = if state == "skipped" { &mut counts.skipped } else { &mut counts.failed };
                    list.push((uidl, reason));
                }
                // Rows this run superseded (a reused UIDL): named `<uidl> (superseded in run
                // N)`, which no real UIDL can be (no spaces, RFC 1939 §7).
                let suffix = crate::superseded_name("", run);
                let reused: Vec<(String, Option<String>)> = sqlx::query_as(
                    "SELECT uidl, reason FROM ledger WHERE job_id = $1 AND uidl LIKE $2 ORDER BY uidl",
                )
                .bind(job).bind(format!("%{suffix}"))
                .fetch_all(self.reader())
                .await?;
                counts.reused = reused
                    .into_iter()
                    .filter_map(|(name, why)| Some((name.strip_suffix(&suffix)?.to_owned(), why.unwrap_or_default())))
                    .collect();
                Ok(counts)
            }

            async fn claim_source(
                &self,
                key: &str,
                who: &ClaimHolder,
                lease: Duration,
                take_over: Option<i64>,
            ) -> Result<ClaimAttempt> {
                self.claim(key, who, lease, take_over).await
            }

            async fn renew_source(&self, claim: &SourceClaim, lease: Duration) -> Result<bool> {
                self.renew(claim, lease).await
            }

            async fn release_source(&self, claim: &SourceClaim) -> Result<()> {
                self.release(claim).await
            }

            async fn fence_run(&self, run: RunId, claim: &SourceClaim) -> Result<()> {
                self.fence(run, claim).await
            }

            async fn supersede_reused(&self, job: JobId, run: RunId, uidl: &str, why: &str) -> Result<()> {
                let now = Self::NOW;
                let sql = format!("UPDATE ledger SET uidl = $1, reason = $2, updated_at = {now} WHERE job_id = $3 AND uidl = $4");
                let row = sqlx::query(&sql).bind(crate::superseded_name(uidl, run)).bind(why).bind(job).bind(uidl);
                self.write(Some(run), vec![row]).await
            }

            async fn record_readback(&self, job: JobId, run: RunId, results: &[ReadBackResult]) -> Result<()> {
                let now = Self::NOW;
                let sql = format!(
                    "UPDATE ledger SET state = CASE WHEN $1 IS NULL THEN 'verified' ELSE state END,
                         readback_digest = $2, verify_level = $3, verify_error = $1,
                         verified_at = CASE WHEN $1 IS NULL THEN {now} ELSE verified_at END,
                         last_run_id = $4, updated_at = {now}
                     WHERE job_id = $5 AND uidl = $6 AND state IN ('copied', 'verified')"
                );
                let rows = results.iter().map(|r| {
                    let query = sqlx::query(&sql).bind(&r.error).bind(&r.readback_digest).bind(r.level.as_str());
                    query.bind(run).bind(job).bind(&r.uidl)
                });
                self.write(Some(run), rows.collect()).await
            }

            async fn receipt_rows(&self, job: JobId, after: &str, limit: u32) -> Result<Vec<ReceiptRow>> {
                let rows: Vec<LedgerColumns> = sqlx::query_as(&receipts::rows_sql::<Self>())
                    .bind(job).bind(after).bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(LedgerColumns::into_receipt_row).collect())
            }

            async fn save_receipt_lines(&self, run: RunId, first_seq: u64, lines: &[String]) -> Result<()> {
                let first = i64::try_from(first_seq).unwrap_or(i64::MAX);
                let sql = "INSERT INTO receipt_entries (run_id, seq, line) VALUES ($1, $2, $3)";
                let rows = lines.iter().enumerate().map(|(i, line)| {
                    sqlx::query(sql).bind(run).bind(first.saturating_add(i as i64)).bind(line)
                });
                self.write(None, rows.collect()).await
            }

            /// Saves the header; when it reuses an earlier run's entries, drops this run's.
            async fn save_receipt(&self, r: &StoredReceipt) -> Result<()> {
                let sql = format!("INSERT INTO receipts ({RECEIPT_COLS}) VALUES ($1, $2, $3, $4, $5, $6)");
                let header = sqlx::query(&sql).bind(r.run).bind(r.job).bind(r.entries_run);
                let header = header.bind(&r.header).bind(&r.signature).bind(&r.public_key);
                let drop_entries = sqlx::query("DELETE FROM receipt_entries WHERE run_id = $1").bind(r.run);
                let reused = r.entries_run != r.run;
                self.write(None, if reused { vec![drop_entries, header] } else { vec![header] }).await
            }

            async fn receipt(&self, job: JobId, run: Option<RunId>) -> Result<Option<StoredReceipt>> {
                let select = format!("SELECT {RECEIPT_COLS} FROM receipts WHERE job_id = $1");
                let (of_run, latest) = (format!("{select} AND run_id = $2"), format!("{select} ORDER BY run_id DESC LIMIT 1"));
                let row: Option<ReceiptColumns> = match run {
                    Some(run) => sqlx::query_as(&of_run).bind(job).bind(run),
                    None => sqlx::query_as(&latest).bind(job),
                }
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(receipts::stored))
            }

            async fn receipt_lines(&self, entries_run: RunId, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
                let sql = "SELECT seq, line FROM receipt_entries WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
                Ok(sqlx::query_as(sql).bind(entries_run).bind(after).bind(i64::from(limit)).fetch_all(self.reader()).await?)
            }
        }

        impl $store {
            /// One write transaction: `statements` in order, then, for a write of `run`, the
            /// check of its fence ([`crate::claims`]), then the commit.
            async fn write<'q>(&self, run: Option<RunId>, statements: Vec<Statement<'q, Self>>) -> Result<()> {
                let mut tx = self.pool.begin().await?;
                for statement in statements {
                    statement.execute(&mut *tx).await?;
                }
                if let Some(run) = run {
                    Self::check_fence(&mut tx, run).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// Skipped or failed, unless the row is already a confirmed copy.
            async fn set_terminal(&self, job: JobId, run: RunId, uidl: &str, state: &str, reason: &str) -> Result<()> {
                let sql = format!(
                    "UPDATE ledger SET state = $1, reason = $2, last_run_id = $3, updated_at = {}
                     WHERE job_id = $4 AND uidl = $5 AND state NOT IN ('copied', 'verified', 'source-deleted')",
                    Self::NOW
                );
                let row = sqlx::query(&sql).bind(state).bind(reason).bind(run).bind(job).bind(uidl);
                self.write(Some(run), vec![row]).await
            }
        }
    };
}

impl_store!(PgStore);
impl_store!(SqliteStore);
