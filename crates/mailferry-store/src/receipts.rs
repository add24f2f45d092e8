//! Signed migration receipts (issue 14): the ledger rows a receipt is built from, and the
//! receipts themselves. One SQL text serves both backends (the first step of issue 15's
//! single store): parameters are `$n`, which SQLite reads as numbered too, and the one
//! dialect difference (how a time is rendered as RFC 3339 text) is a function per backend.

use sqlx::Row as _;

use crate::{JobId, Result, RunId};

/// The ledger columns a receipt entry is made of. Times are RFC 3339 UTC text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptRow {
    pub uidl: String,
    pub size: u64,
    pub state: String,
    pub digest: Option<String>,
    pub wire_digest: Option<String>,
    pub dest_uid: Option<u32>,
    pub dest_uidvalidity: Option<u32>,
    pub readback_digest: Option<String>,
    pub verify_level: Option<String>,
    pub verified_at: Option<String>,
    pub copied_at: Option<String>,
    pub deleted_at: Option<String>,
    /// Why the row was skipped or failed.
    pub reason: Option<String>,
    /// Why its last read-back did not match.
    pub verify_error: Option<String>,
}

/// A receipt as stored: the signed header (canonical JSON), its signature and key, and
/// which run's stored entries it covers (its own, or an earlier identical set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub run: RunId,
    pub job: JobId,
    pub entries_run: RunId,
    pub header: String,
    pub signature: String,
    pub public_key: String,
}

fn row_of<R: sqlx::Row>(r: &R) -> Result<ReceiptRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
{
    let u32_of = |v: Option<i64>| v.and_then(|u| u32::try_from(u).ok());
    Ok(ReceiptRow {
        uidl: r.try_get("uidl")?,
        size: u64::try_from(r.try_get::<i64, _>("size")?).unwrap_or(0),
        state: r.try_get("state")?,
        digest: r.try_get("digest")?,
        wire_digest: r.try_get("wire_digest")?,
        dest_uid: u32_of(r.try_get("dest_uid")?),
        dest_uidvalidity: u32_of(r.try_get("dest_uidvalidity")?),
        readback_digest: r.try_get("readback_digest")?,
        verify_level: r.try_get("verify_level")?,
        verified_at: r.try_get("verified_at")?,
        copied_at: r.try_get("copied_at")?,
        deleted_at: r.try_get("deleted_at")?,
        reason: r.try_get("reason")?,
        verify_error: r.try_get("verify_error")?,
    })
}

fn rows_sql(ts: fn(&str) -> String) -> String {
    format!(
        "SELECT uidl, size, state, digest, wire_digest, dest_uid, dest_uidvalidity, readback_digest, verify_level,
                {}, {}, {}, reason, verify_error
         FROM ledger WHERE job_id = $1 AND uidl > $2 ORDER BY uidl LIMIT $3",
        ts("verified_at"),
        ts("copied_at"),
        ts("deleted_at")
    )
}

const RECEIPT_COLS: &str = "run_id, job_id, entries_run_id, header, signature, public_key";

fn stored_of<R: sqlx::Row>(r: &R) -> Result<StoredReceipt>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredReceipt {
        run: r.try_get("run_id")?,
        job: r.try_get("job_id")?,
        entries_run: r.try_get("entries_run_id")?,
        header: r.try_get("header")?,
        signature: r.try_get("signature")?,
        public_key: r.try_get("public_key")?,
    })
}

/// The same functions for each backend's pool type: only the time rendering differs.
macro_rules! receipt_queries {
    ($module:ident, $pool:ty, $ts:expr) => {
        pub(crate) mod $module {
            use super::*;

            /// Ledger rows of `job` after `after` (UIDL, byte order), at most `limit`.
            pub(crate) async fn rows(pool: &$pool, job: JobId, after: &str, limit: u32) -> Result<Vec<ReceiptRow>> {
                let rows = sqlx::query(&rows_sql($ts))
                    .bind(job)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(row_of).collect()
            }

            pub(crate) async fn save_lines(pool: &$pool, run: RunId, first_seq: u64, lines: &[String]) -> Result<()> {
                let mut tx = pool.begin().await?;
                for (i, line) in lines.iter().enumerate() {
                    sqlx::query("INSERT INTO receipt_entries (run_id, seq, line) VALUES ($1, $2, $3)")
                        .bind(run)
                        .bind(i64::try_from(first_seq).unwrap_or(i64::MAX).saturating_add(i as i64))
                        .bind(line)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            /// Saves the header; when it reuses an earlier run's entries, drops this run's.
            pub(crate) async fn save(pool: &$pool, r: &StoredReceipt) -> Result<()> {
                let mut tx = pool.begin().await?;
                if r.entries_run != r.run {
                    sqlx::query("DELETE FROM receipt_entries WHERE run_id = $1").bind(r.run).execute(&mut *tx).await?;
                }
                sqlx::query(
                    "INSERT INTO receipts (run_id, job_id, entries_run_id, header, signature, public_key)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(r.run)
                .bind(r.job)
                .bind(r.entries_run)
                .bind(&r.header)
                .bind(&r.signature)
                .bind(&r.public_key)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            /// The receipt of `run` of `job`, or the job's latest when `run` is `None`.
            pub(crate) async fn get(pool: &$pool, job: JobId, run: Option<RunId>) -> Result<Option<StoredReceipt>> {
                let row = match run {
                    Some(run) => {
                        sqlx::query(&format!("SELECT {RECEIPT_COLS} FROM receipts WHERE job_id = $1 AND run_id = $2"))
                            .bind(job)
                            .bind(run)
                            .fetch_optional(pool)
                            .await?
                    }
                    None => {
                        sqlx::query(&format!(
                            "SELECT {RECEIPT_COLS} FROM receipts WHERE job_id = $1 ORDER BY run_id DESC LIMIT 1"
                        ))
                        .bind(job)
                        .fetch_optional(pool)
                        .await?
                    }
                };
                row.as_ref().map(stored_of).transpose()
            }

            /// Entry lines of `entries_run` with seq > `after`, in order, at most `limit`.
            pub(crate) async fn lines(pool: &$pool, entries_run: RunId, after: i64, limit: u32) -> Result<Vec<(i64, String)>> {
                let rows = sqlx::query(
                    "SELECT seq, line FROM receipt_entries WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(entries_run)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
                rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("line")?))).collect()
            }
        }
    };
}

receipt_queries!(pg, sqlx::PgPool, |c: &str| format!(
    "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS {c}"
));
receipt_queries!(sqlite, sqlx::SqlitePool, |c: &str| c.to_string());
