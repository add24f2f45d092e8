//! `verify`: re-hash every stored blob, check every occurrence against its blob and its
//! ingest event, walk the event chain, and look for objects the index does not know.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::archive::Archive;
use crate::blob;
use crate::chain::{self, ChainBreak, Event, EventKind};
use crate::digest::Digest;
use crate::error::{ArchiveError, IntegrityError, IntegrityKind, Result};
use crate::index::rows::{OccRow, OCC_COLS};

/// One problem found by verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "kebab-case")]
pub enum Discrepancy {
    /// A stored blob is missing, corrupt, or hashes wrong.
    Blob { digest: Digest, kind: IntegrityKind },
    /// A blob is sealed under a key id this process does not have.
    UnknownKey { digest: Digest, key_id: String },
    /// An occurrence names a digest with no blob row.
    DanglingOccurrence { occurrence_id: i64, digest: Digest },
    /// An occurrence has no matching ingest event (or the event says something else).
    OccurrenceWithoutEvent { occurrence_id: i64, event_seq: i64 },
    /// An ingest event whose occurrence row is gone.
    EventWithoutOccurrence { seq: i64 },
    /// The event log's hash chain is broken.
    Chain(ChainBreak),
    /// An object in storage the index does not list (e.g. a crash between blob write and
    /// index commit). Harmless for the archive's content and never counted as a message;
    /// reported so an operator can remove it.
    OrphanObject { digest: Digest },
    /// A purged blob's object is still in storage (purge interrupted).
    PurgedButPresent { digest: Digest },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub archive: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub occurrences_checked: u64,
    pub events_checked: u64,
    pub chain_head: Option<String>,
    pub discrepancies: Vec<Discrepancy>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

impl Archive {
    /// Full verification; the result is logged as a `verify` event.
    pub async fn verify(&self, who: &str) -> Result<VerifyReport> {
        self.verify_with_progress(who, |_, _| {}).await
    }

    /// As [`verify`](Self::verify), calling `progress(blobs_done, blobs_total)` as it goes
    /// (for a verify job's progress bar).
    pub async fn verify_with_progress(
        &self,
        who: &str,
        progress: impl Fn(u64, u64),
    ) -> Result<VerifyReport> {
        let started_at = Utc::now();
        let mut d = Vec::new();

        // 1. Blobs.
        let blobs: Vec<(String, String)> =
            sqlx::query_as("SELECT digest, state FROM blobs ORDER BY digest")
                .fetch_all(&self.db)
                .await?;
        let total = blobs.iter().filter(|(_, s)| s == "stored").count() as u64;
        let mut known = HashSet::new();
        let mut purged = HashSet::new();
        let (mut blobs_checked, mut bytes_checked) = (0u64, 0u64);
        for (hex, state) in &blobs {
            let digest: Digest = hex.parse()?;
            known.insert(digest);
            if state == "purged" {
                purged.insert(digest);
                continue;
            }
            match self.backend.reader(&digest).await? {
                None => d.push(Discrepancy::Blob {
                    digest,
                    kind: IntegrityKind::Missing,
                }),
                Some(mut raw) => {
                    let keys = self.keys.clone();
                    // Streamed: verify's memory does not grow with message size.
                    let r = tokio::task::spawn_blocking(move || {
                        blob::decode(&digest, &mut raw, &mut std::io::sink(), &keys)
                    })
                    .await?;
                    match r {
                        Ok((_, n)) => bytes_checked += n,
                        Err(ArchiveError::Integrity(IntegrityError { kind, .. })) => {
                            d.push(Discrepancy::Blob { digest, kind })
                        }
                        Err(ArchiveError::UnknownKey(_, key_id)) => {
                            d.push(Discrepancy::UnknownKey { digest, key_id })
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            blobs_checked += 1;
            progress(blobs_checked, total);
        }

        // 2. Objects the index does not know, and purged objects still present.
        for digest in self.backend.list_digests().await? {
            if !known.contains(&digest) {
                d.push(Discrepancy::OrphanObject { digest });
            } else if purged.contains(&digest) {
                d.push(Discrepancy::PurgedButPresent { digest });
            }
        }

        // 3. The chain.
        let events: Vec<Event> = sqlx::query_as(
            "SELECT seq, at, kind, actor, detail, prev_hash, hash FROM events ORDER BY seq",
        )
        .fetch_all(&self.db)
        .await?;
        d.extend(chain::walk(&events).into_iter().map(Discrepancy::Chain));
        let by_seq: HashMap<i64, &Event> = events.iter().map(|e| (e.seq, e)).collect();

        // 4. Occurrences ↔ blobs ↔ ingest events.
        let occs: Vec<OccRow> =
            sqlx::query_as(&format!("SELECT {OCC_COLS} FROM occurrences ORDER BY id"))
                .fetch_all(&self.db)
                .await?;
        let mut occ_seqs = HashSet::new();
        let occurrences_checked = occs.len() as u64;
        for row in occs {
            let o = row.into_record(&self.name)?;
            occ_seqs.insert(o.event_seq);
            if !known.contains(&o.digest) {
                d.push(Discrepancy::DanglingOccurrence {
                    occurrence_id: o.id,
                    digest: o.digest,
                });
            }
            let matches = by_seq.get(&o.event_seq).is_some_and(|e| {
                e.kind == EventKind::Ingest.as_str()
                    && serde_json::from_str::<serde_json::Value>(&e.detail).is_ok_and(|v| {
                        v["digest"] == o.digest.to_hex()
                            && v["account"] == o.account.as_str()
                            && v["uidl"] == o.uidl.as_str()
                            && v["source_host"] == o.source_host.as_str()
                    })
            });
            if !matches {
                d.push(Discrepancy::OccurrenceWithoutEvent {
                    occurrence_id: o.id,
                    event_seq: o.event_seq,
                });
            }
        }
        for e in &events {
            if e.kind == EventKind::Ingest.as_str() && !occ_seqs.contains(&e.seq) {
                d.push(Discrepancy::EventWithoutOccurrence { seq: e.seq });
            }
        }

        let mut report = VerifyReport {
            archive: self.name.clone(),
            started_at,
            finished_at: Utc::now(),
            blobs_checked,
            bytes_checked,
            occurrences_checked,
            events_checked: events.len() as u64,
            chain_head: events.last().map(|e| e.hash.clone()),
            discrepancies: d,
        };
        self.log_event(
                EventKind::Verify,
                who,
                serde_json::json!({
                    "blobs_checked": report.blobs_checked, "bytes_checked": report.bytes_checked,
                    "occurrences_checked": report.occurrences_checked, "events_checked": report.events_checked,
                    "discrepancies": report.discrepancies.len(), "chain_head": report.chain_head,
                }),
            )
            .await?;
        report.finished_at = Utc::now();
        Ok(report)
    }
}
