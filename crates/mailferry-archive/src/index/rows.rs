//! Index rows, their text encodings and the reads that turn them into records: timestamps
//! are stored as RFC 3339 text (one column type on SQLite and PostgreSQL), occurrences are
//! read through [`OccRow`] with the column list [`OCC_COLS`]. The reads take the pool and
//! the archive's name, so they need nothing of the handle above.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::AnyPool;

use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::meta::MessageMeta;
use crate::types::{OccurrenceRecord, Tombstone};

pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| ArchiveError::Config(format!("bad timestamp {s:?} in index: {e}")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct OccRow {
    id: i64,
    source_host: String,
    account: String,
    uidl: String,
    job_id: Option<i64>,
    run_id: Option<i64>,
    retrieved_at: String,
    ingested_at: String,
    digest: String,
    size: i64,
    event_seq: i64,
}

pub(crate) const OCC_COLS: &str =
    "id, source_host, account, uidl, job_id, run_id, retrieved_at, ingested_at, digest, size, event_seq";

impl OccRow {
    pub(crate) fn into_record(self, archive: &str) -> Result<OccurrenceRecord> {
        Ok(OccurrenceRecord {
            id: self.id,
            archive: archive.to_string(),
            source_host: self.source_host,
            account: self.account,
            uidl: self.uidl,
            job_id: self.job_id,
            run_id: self.run_id,
            retrieved_at: parse_ts(&self.retrieved_at)?,
            ingested_at: parse_ts(&self.ingested_at)?,
            digest: self.digest.parse()?,
            size: self.size as u64,
            event_seq: self.event_seq,
        })
    }
}

fn records(rows: Vec<OccRow>, archive: &str) -> Result<Vec<OccurrenceRecord>> {
    rows.into_iter().map(|r| r.into_record(archive)).collect()
}

/// The occurrence recorded for (host, account, UIDL), if any: the key `put` dedups on.
/// Takes any executor: the pool, or a write transaction that must see its own inserts.
pub(crate) async fn occurrence_by_key<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    archive: &str,
    source_host: &str,
    account: &str,
    uidl: &str,
) -> Result<Option<OccurrenceRecord>> {
    let row: Option<OccRow> = sqlx::query_as(&format!(
        "SELECT {OCC_COLS} FROM occurrences WHERE source_host = $1 AND account = $2 AND uidl = $3"
    ))
    .bind(source_host)
    .bind(account)
    .bind(uidl)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.into_record(archive)).transpose()
}

/// The occurrences recorded under any of these (host, account, UIDL) keys, inside the
/// caller's transaction: one statement per 100 keys instead of one per key.
pub(crate) async fn occurrences_by_keys(
    conn: &mut sqlx::AnyConnection,
    archive: &str,
    keys: &[(&str, &str, &str)],
) -> Result<Vec<OccurrenceRecord>> {
    let mut out = Vec::new();
    for chunk in keys.chunks(100) {
        let cond = (0..chunk.len())
            .map(|i| format!("(source_host = ${} AND account = ${} AND uidl = ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect::<Vec<_>>()
            .join(" OR ");
        let sql = format!("SELECT {OCC_COLS} FROM occurrences WHERE {cond}");
        let mut q = sqlx::query_as::<_, OccRow>(&sql);
        for (host, account, uidl) in chunk {
            q = q.bind(*host).bind(*account).bind(*uidl);
        }
        out.extend(records(q.fetch_all(&mut *conn).await?, archive)?);
    }
    Ok(out)
}

pub(crate) async fn occurrences_of(db: &AnyPool, archive: &str, digest: &Digest) -> Result<Vec<OccurrenceRecord>> {
    let rows: Vec<OccRow> = sqlx::query_as(&format!(
        "SELECT {OCC_COLS} FROM occurrences WHERE digest = $1 ORDER BY id"
    ))
    .bind(digest.to_hex())
    .fetch_all(db)
    .await?;
    records(rows, archive)
}

pub(crate) async fn occurrences_of_run(
    db: &AnyPool,
    archive: &str,
    job_id: i64,
    run_id: i64,
) -> Result<Vec<OccurrenceRecord>> {
    let rows: Vec<OccRow> = sqlx::query_as(&format!(
        "SELECT {OCC_COLS} FROM occurrences WHERE job_id = $1 AND run_id = $2 ORDER BY id"
    ))
    .bind(job_id)
    .bind(run_id)
    .fetch_all(db)
    .await?;
    records(rows, archive)
}

/// Occurrences by id (search hits), in the order given.
pub(crate) async fn occurrences_by_ids(db: &AnyPool, archive: &str, ids: &[i64]) -> Result<Vec<OccurrenceRecord>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let placeholders = placeholders.join(",");
    let sql = format!("SELECT {OCC_COLS} FROM occurrences WHERE id IN ({placeholders})");
    let mut q = sqlx::query_as::<_, OccRow>(&sql);
    for id in ids {
        q = q.bind(id);
    }
    let mut recs = records(q.fetch_all(db).await?, archive)?;
    recs.sort_by_key(|r| ids.iter().position(|i| *i == r.id));
    Ok(recs)
}

/// The message's stored metadata (`None` once purged, or if it no longer decodes).
pub(crate) async fn message_meta(db: &AnyPool, digest: &Digest) -> Result<Option<MessageMeta>> {
    let meta: Option<String> = sqlx::query_scalar("SELECT meta FROM messages WHERE digest = $1")
        .bind(digest.to_hex())
        .fetch_optional(db)
        .await?;
    Ok(meta.and_then(|m| serde_json::from_str(&m).ok()))
}

pub(crate) async fn tombstone(db: &AnyPool, digest: &Digest) -> Result<Option<Tombstone>> {
    let row: Option<(String, i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT digest, size, reason, purged_by, purged_at, event_seq FROM tombstones WHERE digest = $1",
    )
    .bind(digest.to_hex())
    .fetch_optional(db)
    .await?;
    row.map(tombstone_from_row).transpose()
}

pub(crate) async fn tombstones(db: &AnyPool) -> Result<Vec<Tombstone>> {
    let rows: Vec<(String, i64, String, String, String, i64)> = sqlx::query_as(
        "SELECT digest, size, reason, purged_by, purged_at, event_seq FROM tombstones ORDER BY purged_at, digest",
    )
    .fetch_all(db)
    .await?;
    rows.into_iter().map(tombstone_from_row).collect()
}

fn tombstone_from_row(r: (String, i64, String, String, String, i64)) -> Result<Tombstone> {
    Ok(Tombstone {
        digest: r.0.parse()?,
        size: r.1 as u64,
        reason: r.2,
        purged_by: r.3,
        purged_at: parse_ts(&r.4)?,
        event_seq: r.5,
    })
}
