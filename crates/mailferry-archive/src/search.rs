//! Full-text and field search with tantivy. One document per *occurrence* (so "account:"
//! finds a custodian's copy, and the same message in three mailboxes is three hits); the
//! index is derived data, rebuilt from blobs by `Archive::reindex`. The SQLite index stays
//! the truth: search returns occurrence ids, and hits are read back from SQLite.
//!
//! Commits are batched (see `search_commit_every`); the commit payload records the highest
//! event sequence reflected, so `Archive::open` can index whatever a crash left out. This
//! module knows nothing of the archive handle: `searching.rs` drives it from above.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, NumericOptions, Schema, STORED,
    STRING, TEXT,
};
use tantivy::{
    DateTime as TDate, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term,
};

use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::meta::{Extracted, MessageMeta};
use crate::types::OccurrenceRecord;

/// A search over an archive. Every set field must match (AND). Text fields match words or
/// phrases (case-insensitive); `account`, `source_host` and `message_id` match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchQuery {
    /// Free text in tantivy query syntax over from, to, cc, subject, body and attachment
    /// names (e.g. `invoice AND subject:march`).
    pub text: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub attachment: Option<String>,
    pub has_attachment: Option<bool>,
    /// Date header, inclusive lower bound.
    pub date_from: Option<DateTime<Utc>>,
    /// Date header, exclusive upper bound.
    pub date_to: Option<DateTime<Utc>>,
    /// Size in bytes, inclusive.
    pub size_min: Option<u64>,
    pub size_max: Option<u64>,
    pub account: Option<String>,
    pub source_host: Option<String>,
    pub message_id: Option<String>,
    pub job_id: Option<i64>,
}

/// One hit: an occurrence and its message's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    pub occurrence: OccurrenceRecord,
    pub meta: Option<MessageMeta>,
}

/// A page of hits in ingest order. Pass `next_cursor` back to get the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    pub next_cursor: Option<String>,
    /// Hits for the whole query (all pages).
    pub total: u64,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    occ: Field,
    digest: Field,
    account: Field,
    host: Field,
    job: Field,
    from: Field,
    to: Field,
    cc: Field,
    subject: Field,
    body: Field,
    attachment: Field,
    message_id: Field,
    has_attachment: Field,
    date: Field,
    size: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let num = NumericOptions::default().set_indexed().set_fast();
    let date = DateOptions::default()
        .set_indexed()
        .set_fast()
        .set_precision(DateTimePrecision::Seconds);
    let f = Fields {
        occ: b.add_u64_field("occ", num.clone().set_stored()),
        digest: b.add_text_field("digest", STRING | STORED),
        account: b.add_text_field("account", STRING),
        host: b.add_text_field("source_host", STRING),
        job: b.add_i64_field("job", num.clone()),
        from: b.add_text_field("from", TEXT),
        to: b.add_text_field("to", TEXT),
        cc: b.add_text_field("cc", TEXT),
        subject: b.add_text_field("subject", TEXT),
        body: b.add_text_field("body", TEXT),
        attachment: b.add_text_field("attachment", TEXT),
        message_id: b.add_text_field("message_id", STRING),
        has_attachment: b.add_u64_field("has_attachment", num.clone()),
        date: b.add_date_field("date", date),
        size: b.add_u64_field("size", num),
    };
    (b.build(), f)
}

pub(crate) struct SearchIndex {
    /// Where documents go: the on-disk index, or — opened read-only — an in-memory index of
    /// what the on-disk one does not reflect yet.
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    /// Read-only: the on-disk index as last committed by the process holding its writer
    /// (serve or worker), searched beside `index` and never written.
    frozen: Option<Frozen>,
    read_only: bool,
    f: Fields,
    pending: AtomicUsize,
    max_added: AtomicI64,
    commit_every: usize,
}

/// The on-disk index seen read-only, and what has happened to it since its last commit.
struct Frozen {
    reader: IndexReader,
    /// Digests purged after that commit: their documents are still in it, never shown.
    purged: Mutex<HashSet<String>>,
    /// A full rebuild (`delete_all`) started: the frozen documents are no longer wanted.
    dropped: AtomicBool,
}

impl SearchIndex {
    pub(crate) fn open(dir: &Path, commit_every: usize) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (schema, f) = schema();
        let mmap = mmap_dir(dir)?;
        let index = Index::open_or_create(mmap, schema)?;
        // One indexing thread: ingest is I/O-bound and the machine is shared with the engine.
        let writer = index.writer_with_num_threads(1, 32_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let max = Self::payload_of(&index)?.unwrap_or(0);
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            frozen: None,
            read_only: false,
            f,
            pending: AtomicUsize::new(0),
            max_added: AtomicI64::new(max),
            commit_every: commit_every.max(1),
        })
    }

    /// Opens the on-disk index without its writer, so no lock is taken and a running
    /// service keeps writing it. What it does not reflect yet (its writer commits in batches)
    /// is indexed into memory by the usual catch-up from the event log, starting at the
    /// sequence its last commit recorded.
    pub(crate) fn open_read_only(dir: &Path) -> Result<Self> {
        let (schema, f) = schema();
        let mut frozen = None;
        let mut upto = 0;
        if dir.join("meta.json").is_file() {
            let index = Index::open(mmap_dir(dir)?)?;
            // The payload must describe the commit the reader loaded: read it on both sides
            // of opening the reader and retry if a commit landed in between. (A commit that
            // still slipped through shows its documents twice at worst: hits are
            // de-duplicated by occurrence id.)
            for _ in 0..5 {
                let before = Self::payload_of(&index)?;
                let reader: IndexReader = index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()?;
                if Self::payload_of(&index)? != before {
                    continue;
                }
                // An index in the old format (no sequence recorded) is not used: everything
                // is indexed into memory instead.
                if let Some(seq) = before {
                    upto = seq;
                    frozen = Some(Frozen {
                        reader,
                        purged: Mutex::new(HashSet::new()),
                        dropped: AtomicBool::new(false),
                    });
                }
                break;
            }
        }
        let index = Index::create_in_ram(schema);
        let writer = index.writer_with_num_threads(1, 15_000_000)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            reader,
            writer: Mutex::new(writer),
            frozen,
            read_only: true,
            f,
            pending: AtomicUsize::new(0),
            max_added: AtomicI64::new(upto),
            commit_every: usize::MAX,
        })
    }

    /// The commit payload is `seq:N`: every event up to sequence N is reflected. `None`
    /// for an index written before that format (it counted occurrence ids): rebuild it.
    fn payload_of(index: &Index) -> Result<Option<i64>> {
        Ok(match index.load_metas()?.payload {
            None => Some(0),
            Some(p) => p.strip_prefix("seq:").and_then(|n| n.parse().ok()),
        })
    }

    /// Highest event sequence known to be reflected in the committed index (read-only: in
    /// the frozen index plus what was indexed into memory since).
    pub(crate) fn indexed_upto(&self) -> Result<Option<i64>> {
        if self.read_only {
            return Ok(Some(self.max_added.load(Ordering::SeqCst)));
        }
        Self::payload_of(&self.index)
    }

    /// Records that events up to `seq` are reflected (also those that add no document).
    pub(crate) fn advance_to(&self, seq: i64) {
        self.max_added.fetch_max(seq, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        // A panic while holding the lock leaves the writer usable; the data is derived anyway.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(&self, occ: &OccurrenceRecord, ex: &Extracted) -> Result<()> {
        let f = &self.f;
        let m = &ex.meta;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.occ, occ.id as u64);
        doc.add_text(f.digest, occ.digest.to_hex());
        doc.add_text(f.account, &occ.account);
        doc.add_text(f.host, &occ.source_host);
        if let Some(j) = occ.job_id {
            doc.add_i64(f.job, j);
        }
        for a in &m.from {
            doc.add_text(f.from, a);
        }
        for a in &m.to {
            doc.add_text(f.to, a);
        }
        for a in &m.cc {
            doc.add_text(f.cc, a);
        }
        if let Some(s) = &m.subject {
            doc.add_text(f.subject, s);
        }
        doc.add_text(f.body, &ex.body_text);
        for a in &m.attachment_names {
            doc.add_text(f.attachment, a);
        }
        if let Some(id) = &m.message_id {
            doc.add_text(f.message_id, id);
        }
        doc.add_u64(f.has_attachment, u64::from(m.has_attachment));
        if let Some(d) = m.date {
            doc.add_date(f.date, TDate::from_timestamp_secs(d.timestamp()));
        }
        doc.add_u64(f.size, m.size);
        let w = self.lock();
        w.add_document(doc)?;
        self.max_added.fetch_max(occ.event_seq, Ordering::SeqCst);
        let n = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
        drop(w);
        if n >= self.commit_every {
            self.commit()?;
        }
        Ok(())
    }

    pub(crate) fn delete_digest(&self, d: &Digest) {
        let w = self.lock();
        w.delete_term(Term::from_field_text(self.f.digest, &d.to_hex()));
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Some(frozen) = &self.frozen {
            frozen.purged.lock().unwrap_or_else(|p| p.into_inner()).insert(d.to_hex());
        }
    }

    pub(crate) fn delete_all(&self) -> Result<()> {
        let w = self.lock();
        w.delete_all_documents()?;
        if let Some(frozen) = &self.frozen {
            frozen.dropped.store(true, Ordering::SeqCst);
        }
        self.max_added.store(0, Ordering::SeqCst);
        self.pending.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Commits pending documents (no-op if none) and makes them searchable.
    pub(crate) fn commit(&self) -> Result<()> {
        let mut w = self.lock();
        if self.pending.load(Ordering::SeqCst) == 0 {
            return Ok(());
        }
        let mut prepared = w.prepare_commit()?;
        prepared.set_payload(&format!("seq:{}", self.max_added.load(Ordering::SeqCst)));
        prepared.commit()?;
        self.pending.store(0, Ordering::SeqCst);
        drop(w);
        self.reader.reload()?;
        Ok(())
    }

    fn text_clause(&self, field: Field, value: &str) -> Result<Box<dyn Query>> {
        // Quote the value so it is a phrase, never query syntax.
        let cleaned: String = value
            .chars()
            .map(|c| if c == '"' || c == '\\' { ' ' } else { c })
            .collect();
        let parser = QueryParser::for_index(&self.index, vec![field]);
        parser
            .parse_query(&format!("\"{}\"", cleaned.trim()))
            .map_err(|e| ArchiveError::Query(e.to_string()))
    }

    fn exact(&self, field: Field, value: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    }

    fn build(&self, q: &SearchQuery) -> Result<Box<dyn Query>> {
        let f = &self.f;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(t) = q.text.as_deref().filter(|t| !t.trim().is_empty()) {
            let mut parser = QueryParser::for_index(
                &self.index,
                vec![f.from, f.to, f.cc, f.subject, f.body, f.attachment],
            );
            parser.set_conjunction_by_default();
            clauses.push((
                Occur::Must,
                parser
                    .parse_query(t)
                    .map_err(|e| ArchiveError::Query(e.to_string()))?,
            ));
        }
        for (field, v) in [
            (f.from, &q.from),
            (f.to, &q.to),
            (f.cc, &q.cc),
            (f.subject, &q.subject),
            (f.body, &q.body),
            (f.attachment, &q.attachment),
        ] {
            if let Some(v) = v.as_deref() {
                clauses.push((Occur::Must, self.text_clause(field, v)?));
            }
        }
        if let Some(a) = &q.account {
            clauses.push((Occur::Must, self.exact(f.account, a)));
        }
        if let Some(h) = &q.source_host {
            clauses.push((Occur::Must, self.exact(f.host, h)));
        }
        if let Some(m) = &q.message_id {
            let m = m.trim().trim_start_matches('<').trim_end_matches('>');
            clauses.push((Occur::Must, self.exact(f.message_id, m)));
        }
        if let Some(j) = q.job_id {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_i64(f.job, j),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if let Some(h) = q.has_attachment {
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_u64(f.has_attachment, u64::from(h)),
                    IndexRecordOption::Basic,
                )),
            ));
        }
        if q.date_from.is_some() || q.date_to.is_some() {
            let t = |d: &DateTime<Utc>| {
                Term::from_field_date_for_search(f.date, TDate::from_timestamp_secs(d.timestamp()))
            };
            let lo = q
                .date_from
                .as_ref()
                .map_or(Bound::Unbounded, |d| Bound::Included(t(d)));
            let hi = q
                .date_to
                .as_ref()
                .map_or(Bound::Unbounded, |d| Bound::Excluded(t(d)));
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if q.size_min.is_some() || q.size_max.is_some() {
            let lo = q.size_min.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_u64(f.size, v))
            });
            let hi = q.size_max.map_or(Bound::Unbounded, |v| {
                Bound::Included(Term::from_field_u64(f.size, v))
            });
            clauses.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if clauses.is_empty() {
            return Ok(Box::new(AllQuery));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    /// Occurrence ids matching `q` after `cursor`, ascending; `limit + 1` fetched to know
    /// whether another page exists. Read-only, the frozen on-disk index is searched too
    /// (minus what was purged since its commit) and the two merged.
    pub(crate) fn query_ids(
        &self,
        q: &SearchQuery,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, bool, u64)> {
        let base = self.build(q)?;
        let (mut ids, mut total) = self.page(&self.reader, base.box_clone(), after, limit)?;
        if let Some(frozen) = self.frozen.as_ref().filter(|f| !f.dropped.load(Ordering::SeqCst)) {
            let purged: Vec<String> = frozen
                .purged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect();
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, base)];
            for d in &purged {
                clauses.push((Occur::MustNot, self.exact(self.f.digest, d)));
            }
            let (more_ids, n) = self.page(&frozen.reader, Box::new(BooleanQuery::new(clauses)), after, limit)?;
            ids.extend(more_ids);
            ids.sort_unstable();
            ids.dedup();
            total += n;
        }
        let more = ids.len() > limit;
        ids.truncate(limit);
        Ok((ids, more, total))
    }

    /// Up to `limit + 1` ids of one index matching `query` after `after`, and the count of
    /// all its matches.
    fn page(
        &self,
        reader: &IndexReader,
        query: Box<dyn Query>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<u64>, u64)> {
        let searcher = reader.searcher();
        let total = searcher.search(&*query, &Count)? as u64;
        let paged: Box<dyn Query> = match after {
            None => query,
            Some(a) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, query),
                (
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Excluded(Term::from_field_u64(self.f.occ, a)),
                        Bound::Unbounded,
                    )),
                ),
            ])),
        };
        let top = TopDocs::with_limit(limit + 1).order_by_u64_field("occ", Order::Asc);
        let docs = searcher.search(&*paged, &top)?;
        Ok((docs.into_iter().filter_map(|(v, _)| v).collect(), total))
    }
}

fn mmap_dir(dir: &Path) -> Result<tantivy::directory::MmapDirectory> {
    tantivy::directory::MmapDirectory::open(dir)
        .map_err(|e| ArchiveError::Search(tantivy::TantivyError::SystemError(e.to_string())))
}

impl ArchiveError {
    /// True when another process holds the archive's search-index writer (a running
    /// `serve` or `worker` on the same archive directory): only one may write it.
    pub fn is_held_elsewhere(&self) -> bool {
        matches!(
            self,
            ArchiveError::Search(tantivy::TantivyError::LockFailure(tantivy::directory::error::LockError::LockBusy, _))
        )
    }
}
