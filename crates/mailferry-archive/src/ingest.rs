//! Ingest: [`Archive::put`] hashes a message, stores its blob once (compressed, sealed,
//! durable before the index row points at it) and records every occurrence once, appending
//! to the event log in the same transaction. The pieces here (hashing, storing a blob,
//! recording an occurrence inside a write transaction) are shared with the group ingest in
//! `ingest_group.rs`, so one message and a group of them are recorded the same way.

use std::io::Read;

use chrono::Utc;

use crate::archive::Archive;
use crate::backend;
use crate::blob;
use crate::chain::{Event, EventKind};
use crate::digest::{Digest, Hasher};
use crate::error::{ArchiveError, OccurrenceConflict, Result};
use crate::index::events::{self, append_event_after};
use crate::index::rows::{self, fmt_ts, parse_ts};
use crate::meta::{self, Extracted};
use crate::types::{MessageSource, Occurrence, OccurrenceRecord, PutOutcome};

/// A message after the first pass: its identity, its size, what the search index needs.
pub(crate) struct Hashed {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) extracted: Extracted,
}

impl Archive {
    /// Stores a message and records its occurrence. Identity is the SHA-256 of exactly
    /// these bytes; identical bytes are stored once, every (host, account, UIDL) is recorded
    /// once. Returns only when both the blob and the index rows are durable.
    // No account in the span: it is the mailbox user name, and spans are exported (OTLP).
    #[tracing::instrument(skip_all, err, fields(archive = %self.name, uidl = %occ.uidl))]
    pub async fn put(
        &self,
        source: impl Into<MessageSource>,
        occ: Occurrence,
    ) -> Result<PutOutcome> {
        let source = source.into();
        let hashed = self.hash_source(&source).await?;
        let digest = hashed.digest;

        if let Some(existing) = self.occurrence_by_key(&occ).await? {
            let outcome = repeat_outcome(existing, &occ, digest, hashed.size)?;
            self.lock_blob(&digest).await?;
            return Ok(outcome);
        }

        // Pass 2 (only for new bytes): compress + seal into a staged, fsynced file and
        // hand it to the backend, which returns once the object is durable. Looped: if a
        // purge removes the blob between this check and the write lock, store it again.
        let mut stored = None;
        let (w, mut tx) = loop {
            if !self.blob_stored(&digest).await? && stored.is_none() {
                stored = Some(self.store_blob(&source, &digest).await?);
            }
            let (w, mut tx) = self.begin_write().await?;
            // Re-check under the lock: a concurrent put of the same occurrence may have won.
            if let Some(existing) = self.occurrence_by_key(&occ).await? {
                drop(tx);
                drop(w);
                let outcome = repeat_outcome(existing, &occ, digest, hashed.size)?;
                self.lock_blob(&digest).await?;
                return Ok(outcome);
            }
            // ...and a purge may have removed the blob we are about to point at.
            if stored.is_some() || blob_stored_in(&mut tx, &digest).await? {
                break (w, tx);
            }
        };
        let tip = events::head(&mut *tx).await?;
        let (rec, stored_new, _) = self.record_occurrence(&mut tx, &hashed, &occ, stored, tip).await?;
        tx.commit().await?;
        // Added while the write lock is still held, so documents arrive in event order and
        // the index's "reflected up to event N" mark never skips an event.
        self.index_for_search(&rec, &hashed.extracted).await;
        drop(w);
        // WORM where the storage offers it, before the engine may DELE the source.
        self.lock_blob(&digest).await?;
        Ok(new_outcome(&rec, stored_new, stored))
    }

    /// Pass 1: hashes the whole message (streamed, on a blocking thread) and extracts its
    /// metadata from a bounded prefix.
    pub(crate) async fn hash_source(&self, source: &MessageSource) -> Result<Hashed> {
        let limit = self.scan_limit;
        let src = source.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let mut r = src.reader()?;
            let mut h = Hasher::new();
            let mut prefix = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut size = 0u64;
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                if prefix.len() < limit {
                    let take = (limit - prefix.len()).min(n);
                    prefix.extend_from_slice(&buf[..take]);
                }
                size += n as u64;
            }
            let extracted = meta::extract(&prefix, size);
            Ok(Hashed { digest: h.finish(), size, extracted })
        })
        .await?
    }

    /// Whether the index has this blob as stored (committed state, outside any write).
    pub(crate) async fn blob_stored(&self, digest: &Digest) -> Result<bool> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM blobs WHERE digest = $1")
            .bind(digest.to_hex())
            .fetch_optional(&self.db)
            .await?;
        Ok(state.as_deref() == Some("stored"))
    }

    /// Inside a write transaction (the caller holds [`Archive::begin_write`]): the blob row
    /// when this ingest stored the blob (`stored` = its encoded size), the message's
    /// metadata, the `ingest` event chained to the previous one, and the occurrence pointing
    /// at that event (`tip`: the chain's head, read in this transaction). Returns the
    /// occurrence as recorded, whether the blob row is new, and the event (the new head).
    pub(crate) async fn record_occurrence(
        &self,
        tx: &mut sqlx::AnyConnection,
        hashed: &Hashed,
        occ: &Occurrence,
        stored: Option<u64>,
        tip: Option<(i64, String)>,
    ) -> Result<(OccurrenceRecord, bool, Event)> {
        let Hashed { digest, size, extracted } = hashed;
        let (digest, size) = (*digest, *size);
        let now = fmt_ts(Utc::now());
        let mut stored_new = false;
        if let Some(n) = stored {
            let key_id = self.keys.active().map(|(id, _)| id.to_string());
            let r = sqlx::query(
                "INSERT INTO blobs (digest, size, stored_size, key_id, stored_at, state) \
                 VALUES ($1, $2, $3, $4, $5, 'stored') \
                 ON CONFLICT (digest) DO UPDATE SET stored_size = excluded.stored_size, \
                   key_id = excluded.key_id, stored_at = excluded.stored_at, state = 'stored' \
                 WHERE blobs.state = 'purged'",
            )
            .bind(digest.to_hex())
            .bind(size as i64)
            .bind(n as i64)
            .bind(key_id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            stored_new = r.rows_affected() == 1;
        }
        let meta_json = serde_json::to_string(&extracted.meta)
            .map_err(|e| ArchiveError::Config(e.to_string()))?;
        sqlx::query(
            "INSERT INTO messages (digest, meta, subject, message_id, date, has_attachment) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(digest.to_hex())
        .bind(meta_json)
        .bind(&extracted.meta.subject)
        .bind(&extracted.meta.message_id)
        .bind(extracted.meta.date.map(fmt_ts))
        .bind(i64::from(extracted.meta.has_attachment))
        .execute(&mut *tx)
        .await?;
        let actor = match occ.job_id {
            Some(j) => format!("job:{j}"),
            None => "ingest".to_string(),
        };
        let ev = append_event_after(
            &mut *tx,
            tip,
            EventKind::Ingest,
            &actor,
            serde_json::json!({
                "digest": digest.to_hex(), "size": size, "source_host": occ.source_host,
                "account": occ.account, "uidl": occ.uidl, "job_id": occ.job_id,
                "run_id": occ.run_id, "stored_new": stored_new,
            }),
        )
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO occurrences (source_host, account, uidl, job_id, run_id, retrieved_at, \
             ingested_at, digest, size, event_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(&occ.source_host)
        .bind(&occ.account)
        .bind(&occ.uidl)
        .bind(occ.job_id)
        .bind(occ.run_id)
        .bind(fmt_ts(occ.retrieved_at))
        .bind(&now)
        .bind(digest.to_hex())
        .bind(size as i64)
        .bind(ev.seq)
        .fetch_one(&mut *tx)
        .await?;
        let rec = OccurrenceRecord {
            id,
            archive: self.name.clone(),
            source_host: occ.source_host.clone(),
            account: occ.account.clone(),
            uidl: occ.uidl.clone(),
            job_id: occ.job_id,
            run_id: occ.run_id,
            retrieved_at: occ.retrieved_at,
            ingested_at: parse_ts(&now)?,
            digest,
            size,
            event_seq: ev.seq,
        };
        Ok((rec, stored_new, ev))
    }

    /// Adds a committed occurrence to the local search index; call it while still holding
    /// the write lock. The search index is derived data: a failure here is logged, not
    /// fatal — the index rows are the truth and `open`/`reindex` catch it up. A shared
    /// index is searched by another process, which catches up from the log.
    pub(crate) async fn index_for_search(&self, rec: &OccurrenceRecord, extracted: &Extracted) {
        if self.shared.is_some() {
            return;
        }
        let added = match self.search_index().await {
            Ok(search) => search.add(rec, extracted),
            Err(e) => Err(e),
        };
        if let Err(e) = added {
            tracing::warn!(error = %e, "search index update failed; will catch up on reopen");
        }
    }

    /// Compresses and seals the message into a staged, fsynced spool file and stores it;
    /// returns the encoded size once the object is durable.
    pub(crate) async fn store_blob(&self, source: &MessageSource, digest: &Digest) -> Result<u64> {
        let (staged, n) = self.stage_blob(source).await?;
        self.backend.put_staged(digest, staged).await?;
        Ok(n)
    }

    /// Compresses and seals the message into a staged spool file, fsynced; returns it with
    /// its encoded size.
    pub(crate) async fn stage_blob(&self, source: &MessageSource) -> Result<(tempfile::NamedTempFile, u64)> {
        let keys = self.keys.clone();
        let spool = self.spool.clone();
        let src = source.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let mut staged = backend::stage_file(&spool)?;
            let mut r = src.reader()?;
            let n = {
                let mut w = std::io::BufWriter::new(staged.as_file_mut());
                let n = blob::encode(&mut r, &mut w, &keys)?;
                std::io::Write::flush(&mut w)?;
                n
            };
            backend::sync_staged(&mut staged)?;
            Ok((staged, n))
        })
        .await?
    }

    /// Applies the blob's S3 Object Lock (retention, legal hold) if it is not yet applied:
    /// the engine calls it before it counts an arrival found in the archive as copied.
    /// A no-op without Object Lock.
    pub async fn ensure_locked(&self, digest: &Digest) -> Result<()> {
        self.lock_blob(digest).await
    }

    /// The occurrence already recorded under this arrival's (host, account, UIDL), if any.
    pub(crate) async fn occurrence_by_key(&self, occ: &Occurrence) -> Result<Option<OccurrenceRecord>> {
        rows::occurrence_by_key(&self.db, &self.name, &occ.source_host, &occ.account, &occ.uidl).await
    }
}

/// Whether the blob is stored, read inside the caller's write transaction.
pub(crate) async fn blob_stored_in(tx: &mut sqlx::AnyConnection, digest: &Digest) -> Result<bool> {
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM blobs WHERE digest = $1")
        .bind(digest.to_hex())
        .fetch_optional(&mut *tx)
        .await?;
    Ok(state.as_deref() == Some("stored"))
}

/// The outcome of an arrival whose (host, account, UIDL) is already recorded: a rerun when
/// the bytes are the same, refused when they differ (a source that reuses UIDLs).
pub(crate) fn repeat_outcome(
    existing: OccurrenceRecord,
    occ: &Occurrence,
    digest: Digest,
    size: u64,
) -> Result<PutOutcome> {
    if existing.digest != digest {
        return Err(conflict(occ, existing.digest, digest));
    }
    Ok(PutOutcome {
        digest,
        size,
        stored_new: false,
        occurrence_new: false,
        occurrence_id: existing.id,
        stored_size: None,
    })
}

/// Refusal of `offered` under an occurrence already recorded as `existing`.
pub(crate) fn conflict(occ: &Occurrence, existing: Digest, offered: Digest) -> ArchiveError {
    ArchiveError::OccurrenceConflict(Box::new(OccurrenceConflict {
        host: occ.source_host.clone(),
        account: occ.account.clone(),
        uidl: occ.uidl.clone(),
        existing,
        offered,
    }))
}

/// The outcome of a newly recorded occurrence.
pub(crate) fn new_outcome(rec: &OccurrenceRecord, stored_new: bool, stored: Option<u64>) -> PutOutcome {
    PutOutcome {
        digest: rec.digest,
        size: rec.size,
        stored_new,
        occurrence_new: true,
        occurrence_id: rec.id,
        stored_size: stored,
    }
}
