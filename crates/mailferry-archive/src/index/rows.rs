//! Index rows and their text encodings: timestamps are stored as RFC 3339 text (one
//! column type on SQLite and PostgreSQL), occurrences are read through [`OccRow`] with the
//! column list [`OCC_COLS`].

use chrono::{DateTime, SecondsFormat, Utc};

use crate::error::{ArchiveError, Result};
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

pub(crate) fn tombstone_from_row(r: (String, i64, String, String, String, i64)) -> Result<Tombstone> {
    Ok(Tombstone {
        digest: r.0.parse()?,
        size: r.1 as u64,
        reason: r.2,
        purged_by: r.3,
        purged_at: parse_ts(&r.4)?,
        event_seq: r.5,
    })
}
