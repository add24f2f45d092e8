//! How archives, their messages, holds and verify/export runs look over the API, and the
//! search query the API accepts (as a query string for search, as JSON for exports and
//! holds). Timestamps are RFC 3339 strings; digests are lowercase hex SHA-256.

use chrono::{DateTime, NaiveDate, Utc};
use mailferry_archive::{
    ArchiveStats, BlobState, Hold, HoldScope, MessageRecord, OccurrenceRecord, SearchHit, SearchQuery,
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
    /// Page size: 1–500, default 50 (a server with a smaller `api.max_per_page` returns at
    /// most that many; larger values are refused with 400).
    #[serde(default, deserialize_with = "crate::extract::page_limit")]
    #[param(minimum = 1, maximum = 500)]
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

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    ts(t)
}

#[cfg(test)]
mod tests;
