//! Searching an archive ([`Archive::search`]) and keeping its tantivy index (`search.rs`) in
//! step with the event log: catch-up after a crash or after other workers ingested into a
//! shared index, and a full reindex from the blobs.

use std::collections::BTreeSet;

use crate::archive::Archive;
use crate::chain::EventKind;
use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::index::rows::{self, OccRow, OCC_COLS};
use crate::search::{SearchHit, SearchIndex, SearchPage, SearchQuery};

impl Archive {
    /// Searches the archive; hits are occurrences in ingest order. `limit` is capped at 1000.
    pub async fn search(
        &self,
        q: &SearchQuery,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SearchPage> {
        if self.shared.is_some() || self.read_only {
            // Other processes ingest into the shared index (or, read-only, into the one on
            // disk without committing every document): pick up what they committed.
            self.catch_up_search().await?;
        }
        let search = self.search_index().await?;
        search.commit()?;
        let after = match cursor {
            None | Some("") => None,
            Some(c) => Some(
                c.parse::<u64>()
                    .map_err(|_| ArchiveError::Query(format!("bad cursor {c:?}")))?,
            ),
        };
        let limit = limit.clamp(1, 1000);
        let (ids, more, total) = search.query_ids(q, after, limit)?;
        let ids: Vec<i64> = ids.iter().map(|i| *i as i64).collect();
        let occs = rows::occurrences_by_ids(&self.db, &self.name, &ids).await?;
        let mut hits = Vec::with_capacity(occs.len());
        for o in occs {
            let meta = rows::message_meta(&self.db, &o.digest).await?;
            hits.push(SearchHit {
                occurrence: o,
                meta,
            });
        }
        let next_cursor = if more {
            ids.last().map(|i| i.to_string())
        } else {
            None
        };
        Ok(SearchPage {
            hits,
            next_cursor,
            total,
        })
    }

    /// Every distinct digest matching `q`, in first-ingest order.
    pub async fn search_digests(&self, q: &SearchQuery) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.search(q, 1000, cursor.as_deref()).await?;
            for h in page.hits {
                if seen.insert(h.occurrence.digest) {
                    out.push(h.occurrence.digest);
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// Rebuilds the search index from the blobs (each read verified). Returns documents indexed.
    pub async fn reindex(&self) -> Result<u64> {
        let _w = self.search_guard().await;
        let search = self.search_index().await?;
        search.delete_all()?;
        search.commit()?;
        let n = self.index_events_after(search, 0).await?;
        search.commit()?;
        Ok(n)
    }

    /// Brings the search index up to the event log: crash recovery for a local archive, and
    /// how a process sees what other workers ingested into a shared one. The log is in
    /// commit order (its writers are serialised), so "every event after N" misses nothing —
    /// unlike occurrence ids, which concurrent transactions may commit out of order.
    pub(crate) async fn catch_up_search(&self) -> Result<()> {
        let _w = self.search_guard().await;
        let search = self.search_index().await?;
        let n = match search.indexed_upto()? {
            Some(from) => self.index_events_after(search, from).await?,
            None => {
                tracing::info!(archive = %self.name, "search index predates event-ordered catch-up; rebuilding");
                search.delete_all()?;
                search.commit()?;
                self.index_events_after(search, 0).await?
            }
        };
        if n > 0 {
            tracing::info!(archive = %self.name, documents = n, "search index caught up");
        }
        search.commit()
    }

    /// Serialises search-index maintenance. A local archive adds documents inside `put`
    /// under the write lock, so maintenance takes that lock too (documents stay in event
    /// order). A shared archive's `put` never touches the search index, so maintenance —
    /// which may read many blobs back from S3 — takes its own lock and never stalls ingest.
    async fn search_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        if self.shared.is_some() {
            self.search_sync.lock().await
        } else {
            self.write.lock().await
        }
    }

    async fn index_events_after(&self, search: &SearchIndex, after: i64) -> Result<u64> {
        let mut n = 0;
        let mut last = after;
        loop {
            let events: Vec<(i64, String, String)> = sqlx::query_as(
                "SELECT seq, kind, detail FROM events WHERE seq > $1 ORDER BY seq LIMIT 500",
            )
            .bind(last)
            .fetch_all(&self.db)
            .await?;
            let Some(upto) = events.last().map(|e| e.0) else {
                return Ok(n);
            };
            let rows: Vec<OccRow> = sqlx::query_as(&format!(
                "SELECT {OCC_COLS} FROM occurrences o WHERE event_seq > $1 AND event_seq <= $2 AND EXISTS \
                 (SELECT 1 FROM blobs b WHERE b.digest = o.digest AND b.state = 'stored') ORDER BY event_seq"
            ))
            .bind(last)
            .bind(upto)
            .fetch_all(&self.db)
            .await?;
            // Deletes first: the adds below are only for blobs stored *now*.
            for (_, kind, detail) in events.iter().filter(|e| e.1 == EventKind::Purge.as_str()) {
                let digest = serde_json::from_str::<serde_json::Value>(detail)
                    .ok()
                    .and_then(|v| v.get("digest").and_then(|d| d.as_str()).and_then(|d| d.parse().ok()));
                if let Some(d) = digest {
                    search.delete_digest(&d);
                } else {
                    tracing::warn!(archive = %self.name, kind, "purge event without a digest");
                }
            }
            for r in rows {
                let rec = r.into_record(&self.name)?;
                match self.extract_stored(&rec.digest).await {
                    Ok(ex) => {
                        search.add(&rec, &ex)?;
                        n += 1;
                    }
                    // A blob that fails its check is reported by verify; index what we can.
                    Err(e) => tracing::warn!(digest = %rec.digest, error = %e, "not indexed"),
                }
            }
            search.advance_to(upto);
            last = upto;
        }
    }
}
