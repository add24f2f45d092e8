//! How archives, their messages, holds and verify/export runs look over the API, and the
//! search query the API accepts (as a query string for search, as JSON for exports and
//! holds). Timestamps are RFC 3339 strings; digests are lowercase hex SHA-256.

use chrono::{DateTime, NaiveDate, Utc};
use mailferry_archive::{
    ArchiveStats, BlobState, ExportFormat, Hold, HoldScope, MessageRecord, OccurrenceRecord, SearchHit, SearchQuery,
    VerifyReport,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::FieldError;

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An archive with its counts, policy and active legal holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveView {
    pub name: String,
    /// Distinct stored messages (unique digests).
    pub messages: u64,
    /// Arrivals (one per source mailbox and UIDL); at least `messages`.
    pub occurrences: u64,
    /// Messages purged under retention (tombstoned).
    pub purged: u64,
    /// Bytes on storage (compressed, sealed).
    pub stored_bytes: u64,
    /// Bytes of every occurrence before dedup and compression.
    pub logical_bytes: u64,
    /// Bytes of the distinct messages, uncompressed.
    pub unique_bytes: u64,
    /// `logical_bytes / unique_bytes`: how much dedup saves (1.0 = nothing).
    pub dedup_ratio: f64,
    /// `stored_bytes / logical_bytes`.
    pub storage_ratio: f64,
    /// Retention period counted from ingest; `null` keeps messages forever.
    pub retention_days: Option<u32>,
    /// Active legal holds (they block every purge they cover).
    pub holds: Vec<HoldView>,
}

impl ArchiveView {
    pub fn new(s: ArchiveStats, retention_days: Option<u32>, holds: Vec<Hold>) -> Self {
        Self {
            name: s.name,
            messages: s.messages,
            occurrences: s.occurrences,
            purged: s.purged,
            stored_bytes: s.stored_bytes,
            logical_bytes: s.logical_bytes,
            unique_bytes: s.unique_bytes,
            dedup_ratio: s.dedup_ratio,
            storage_ratio: s.storage_ratio,
            retention_days,
            holds: holds.into_iter().map(HoldView::from).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveList {
    pub items: Vec<ArchiveView>,
}

/// What a legal hold covers: `"archive"`, `{"account": "alice@example.com"}` or
/// `{"query": {…}}` (messages matching the query at purge time, later arrivals included).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum HoldScopeBody {
    Archive,
    Account(String),
    Query(Box<ArchiveQuery>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub id: i64,
    pub scope: HoldScopeBody,
    pub reason: String,
    pub placed_by: String,
    pub placed_at: String,
}

impl From<Hold> for HoldView {
    fn from(h: Hold) -> Self {
        let scope = match h.scope {
            HoldScope::Archive => HoldScopeBody::Archive,
            HoldScope::Account(a) => HoldScopeBody::Account(a),
            HoldScope::Query(q) => HoldScopeBody::Query(Box::new(ArchiveQuery::from(*q))),
        };
        Self { id: h.id, scope, reason: h.reason, placed_by: h.placed_by, placed_at: ts(h.placed_at) }
    }
}

/// A search over an archive (JSON form, for exports and holds). Every field given must
/// match; text fields match words or phrases case-insensitively, `account`, `source_host`
/// and `message_id` match exactly. Dates are RFC 3339 or `YYYY-MM-DD`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveQuery {
    /// Free text over from, to, cc, subject, body and attachment names (tantivy syntax:
    /// `invoice AND subject:march`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// An attachment's file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_attachment: Option<bool>,
    /// Date header on or after (`YYYY-MM-DD` = that day's start, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_from: Option<String>,
    /// Date header before (`YYYY-MM-DD` includes that whole day, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_min: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_max: Option<u64>,
    /// The source account (POP3 user name), exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// Message-ID header, exactly (with or without `<>`, as stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The search of `GET /archives/{name}/messages`: [`ArchiveQuery`]'s fields plus paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesParams {
    /// Free text over from, to, cc, subject, body and attachment names (tantivy syntax).
    pub q: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    /// An attachment's file name.
    pub attachment: Option<String>,
    pub has_attachment: Option<bool>,
    /// Date header on or after: RFC 3339 or `YYYY-MM-DD`.
    pub date_from: Option<String>,
    /// Date header before: RFC 3339, or `YYYY-MM-DD` (that whole day included).
    pub date_to: Option<String>,
    pub size_min: Option<u64>,
    pub size_max: Option<u64>,
    /// The source account, exactly.
    pub account: Option<String>,
    pub source_host: Option<String>,
    /// Message-ID, exactly.
    pub message_id: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (default 50, at most 500).
    pub limit: Option<u32>,
}

impl MessagesParams {
    pub fn split(self) -> (ArchiveQuery, Option<String>, Option<u32>) {
        let q = ArchiveQuery {
            q: self.q,
            from: self.from,
            to: self.to,
            cc: self.cc,
            subject: self.subject,
            body: self.body,
            attachment: self.attachment,
            has_attachment: self.has_attachment,
            date_from: self.date_from,
            date_to: self.date_to,
            size_min: self.size_min,
            size_max: self.size_max,
            account: self.account,
            source_host: self.source_host,
            message_id: self.message_id,
        };
        (q, self.cursor, self.limit)
    }
}

fn text(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// RFC 3339, or a bare date (its start; with `end_of_day`, the next day's start).
fn date(field: &str, v: Option<String>, end_of_day: bool, errs: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let v = text(v)?;
    if let Ok(d) = DateTime::parse_from_rfc3339(&v) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        let d = if end_of_day { d.succ_opt().unwrap_or(d) } else { d };
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    errs.push(FieldError::invalid(field, format!("{field} must be an RFC 3339 time or a YYYY-MM-DD date")));
    None
}

impl ArchiveQuery {
    /// The library query; field errors are named `{prefix}{field}`.
    pub fn to_search(&self, prefix: &str, errs: &mut Vec<FieldError>) -> SearchQuery {
        let c = self.clone();
        SearchQuery {
            text: text(c.q),
            from: text(c.from),
            to: text(c.to),
            cc: text(c.cc),
            subject: text(c.subject),
            body: text(c.body),
            attachment: text(c.attachment),
            has_attachment: c.has_attachment,
            date_from: date(&format!("{prefix}date_from"), c.date_from, false, errs),
            date_to: date(&format!("{prefix}date_to"), c.date_to, true, errs),
            size_min: c.size_min,
            size_max: c.size_max,
            account: text(c.account),
            source_host: text(c.source_host),
            message_id: text(c.message_id),
            job_id: None,
        }
    }
}

impl From<SearchQuery> for ArchiveQuery {
    fn from(q: SearchQuery) -> Self {
        Self {
            q: q.text,
            from: q.from,
            to: q.to,
            cc: q.cc,
            subject: q.subject,
            body: q.body,
            attachment: q.attachment,
            has_attachment: q.has_attachment,
            date_from: q.date_from.map(ts),
            date_to: q.date_to.map(ts),
            size_min: q.size_min,
            size_max: q.size_max,
            account: q.account,
            source_host: q.source_host,
            message_id: q.message_id,
        }
    }
}

/// One search hit: an occurrence (one arrival from one mailbox) and its message's headers.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveHit {
    /// SHA-256 of the exact message bytes: the message's identity.
    pub digest: String,
    pub occurrence_id: i64,
    pub account: String,
    pub source_host: String,
    pub uidl: String,
    pub job_id: Option<i64>,
    pub retrieved_at: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub subject: Option<String>,
    /// The Date header (forgeable; retention counts from ingest instead).
    pub date: Option<String>,
    pub message_id: Option<String>,
    pub size: u64,
    pub has_attachment: bool,
}

impl From<SearchHit> for ArchiveHit {
    fn from(h: SearchHit) -> Self {
        let o = h.occurrence;
        let m = h.meta.unwrap_or_default();
        Self {
            digest: o.digest.to_hex(),
            occurrence_id: o.id,
            account: o.account,
            source_host: o.source_host,
            uidl: o.uidl,
            job_id: o.job_id,
            retrieved_at: ts(o.retrieved_at),
            from: m.from,
            to: m.to,
            subject: m.subject,
            date: m.date.map(ts),
            message_id: m.message_id,
            size: o.size,
            has_attachment: m.has_attachment,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArchiveHitPage {
    pub items: Vec<ArchiveHit>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// Hits of the whole query.
    pub total: u64,
}

/// One arrival of a message: where and when it came from. The source mailbox is the only
/// record of Bcc recipients, so occurrences are never merged.
#[derive(Debug, Serialize, ToSchema)]
pub struct OccurrenceView {
    pub id: i64,
    pub source_host: String,
    pub account: String,
    pub uidl: String,
    pub job_id: Option<i64>,
    pub run_id: Option<i64>,
    pub retrieved_at: String,
    pub ingested_at: String,
    /// Sequence number of its `ingest` record in the archive's hash-chained event log.
    pub event_seq: i64,
}

impl From<OccurrenceRecord> for OccurrenceView {
    fn from(o: OccurrenceRecord) -> Self {
        Self {
            id: o.id,
            source_host: o.source_host,
            account: o.account,
            uidl: o.uidl,
            job_id: o.job_id,
            run_id: o.run_id,
            retrieved_at: ts(o.retrieved_at),
            ingested_at: ts(o.ingested_at),
            event_seq: o.event_seq,
        }
    }
}

/// Parsed headers of a message (best effort: `parsed` is false for mail that did not parse).
#[derive(Debug, Serialize, ToSchema)]
pub struct HeadersView {
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: Option<String>,
    pub date: Option<String>,
    pub message_id: Option<String>,
    pub attachment_names: Vec<String>,
    pub has_attachment: bool,
    pub parsed: bool,
}

/// Left behind when retention purged a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct TombstoneView {
    pub reason: String,
    pub purged_by: String,
    pub purged_at: String,
    pub event_seq: i64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    Stored,
    Purged,
}

/// A message's metadata, provenance and (when purged) tombstone.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageMetaView {
    pub digest: String,
    pub state: MessageState,
    /// Exact size of the message.
    pub size: u64,
    /// Size on storage (compressed, sealed).
    pub stored_size: u64,
    /// Id of the key the blob is sealed with; absent when not sealed.
    pub key_id: Option<String>,
    pub stored_at: String,
    pub headers: Option<HeadersView>,
    pub occurrences: Vec<OccurrenceView>,
    pub tombstone: Option<TombstoneView>,
}

impl From<MessageRecord> for MessageMetaView {
    fn from(r: MessageRecord) -> Self {
        Self {
            digest: r.digest.to_hex(),
            state: match r.state {
                BlobState::Stored => MessageState::Stored,
                BlobState::Purged => MessageState::Purged,
            },
            size: r.size,
            stored_size: r.stored_size,
            key_id: r.key_id,
            stored_at: ts(r.stored_at),
            headers: r.meta.map(|m| HeadersView {
                from: m.from,
                to: m.to,
                cc: m.cc,
                subject: m.subject,
                date: m.date.map(ts),
                message_id: m.message_id,
                attachment_names: m.attachment_names,
                has_attachment: m.has_attachment,
                parsed: m.parsed,
            }),
            occurrences: r.occurrences.into_iter().map(OccurrenceView::from).collect(),
            tombstone: r.tombstone.map(|t| TombstoneView {
                reason: t.reason,
                purged_by: t.purged_by,
                purged_at: ts(t.purged_at),
                event_seq: t.event_seq,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunProgress {
    pub done: u64,
    pub total: u64,
}

/// What verify found. `ok` is true when there are no discrepancies.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReportView {
    pub ok: bool,
    pub started_at: String,
    pub finished_at: String,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub occurrences_checked: u64,
    pub events_checked: u64,
    /// Hash of the last event-log record (publish it to make history rewrites detectable).
    pub chain_head: Option<String>,
    /// Every problem, e.g. `{"problem": "blob", "digest": "…", "kind": {"kind": "digest-mismatch", …}}`.
    #[schema(value_type = Vec<Object>)]
    pub discrepancies: Vec<serde_json::Value>,
}

impl From<VerifyReport> for VerifyReportView {
    fn from(r: VerifyReport) -> Self {
        Self {
            ok: r.ok(),
            started_at: ts(r.started_at),
            finished_at: ts(r.finished_at),
            blobs_checked: r.blobs_checked,
            bytes_checked: r.bytes_checked,
            occurrences_checked: r.occurrences_checked,
            events_checked: r.events_checked,
            chain_head: r.chain_head,
            discrepancies: r.discrepancies.iter().map(|d| serde_json::to_value(d).unwrap_or_default()).collect(),
        }
    }
}

/// A verify run (in memory; see `POST /archives/{name}/verify`).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyRun {
    pub id: u64,
    pub archive: String,
    pub state: RunState,
    /// Blobs re-hashed so far, of all stored blobs.
    pub progress: RunProgress,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why the run could not complete (`failed`); discrepancies are in `report`, not here.
    pub error: Option<String>,
    pub report: Option<VerifyReportView>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormatBody {
    /// mboxrd (`From ` lines quoted so they round-trip).
    Mbox,
    /// A zip of `messages/<sha256>.eml` with `manifest.sha256` inside.
    EmlZip,
}

impl ExportFormatBody {
    pub fn library(self) -> ExportFormat {
        match self {
            Self::Mbox => ExportFormat::Mbox,
            Self::EmlZip => ExportFormat::EmlZip,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Mbox => "mbox",
            Self::EmlZip => "zip",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Mbox => "application/mbox",
            Self::EmlZip => "application/zip",
        }
    }

    pub fn of(f: ExportFormat) -> Self {
        match f {
            ExportFormat::Mbox => Self::Mbox,
            ExportFormat::EmlZip => Self::EmlZip,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// Which messages (each distinct message once); default: the whole archive.
    #[serde(default)]
    pub query: ArchiveQuery,
    pub format: ExportFormatBody,
}

/// The finished export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportResult {
    pub messages: u64,
    pub bytes: u64,
    /// SHA-256 of the export file itself.
    pub file_sha256: String,
    /// Where to download it (same token).
    pub download: String,
    /// The SHA-256 manifest (`sha256sum -c` format: digest, two spaces, name).
    pub manifest: String,
    /// When the file is deleted (`[archive] export_ttl_secs` after it was written, as
    /// configured then); its download answers 410 from then on.
    pub expires_at: Option<String>,
}

/// An export run (in memory; see `POST /archives/{name}/exports`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportRun {
    pub id: u64,
    pub archive: String,
    pub format: ExportFormatBody,
    pub state: RunState,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub result: Option<ExportResult>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub scope: HoldScopeBody,
    /// Why (case number, matter): recorded in the event log.
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Days from ingest before a message may be purged; `null` keeps everything forever.
    #[schema(minimum = 1)]
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionView {
    pub retention_days: Option<u32>,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<mailferry_archive::RetentionPolicy> for RetentionView {
    fn from(p: mailferry_archive::RetentionPolicy) -> Self {
        Self { retention_days: p.retention_days, updated_at: ts(p.updated_at), updated_by: p.updated_by }
    }
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    ts(t)
}

#[cfg(test)]
mod tests;
