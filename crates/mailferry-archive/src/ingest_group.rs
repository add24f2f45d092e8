//! Group ingest: [`Archive::put_group`] records a batch of arrivals with the cost of one.
//! Hashing and blob storage run concurrently; every new blob is staged and fsynced as a
//! single `put` does, but the directories they were renamed into are fsynced once for the
//! group, and the index rows of the whole group (blob rows, metadata, `ingest` events,
//! occurrences) go into ONE write transaction, in the order given, committed once. The
//! event chain is the one a `put` per message in that order would have made: each arrival
//! is decided (new, rerun, refused) against what the transaction has recorded so far, with
//! the same shared pieces as `put` (`ingest.rs`).
//!
//! Nothing is returned before the group's commit, so no arrival counts as copied (and no
//! source message is deleted) before its blob and its index rows are durable.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use futures::stream::{self, FuturesUnordered, StreamExt};

use crate::archive::Archive;
use crate::digest::Digest;
use crate::error::{ArchiveError, Result};
use crate::index::{events, rows};
use crate::ingest::{blob_stored_in, new_outcome, repeat_outcome, Hashed};
use crate::types::{MessageSource, Occurrence, OccurrenceRecord, PutOutcome};

/// Messages hashed at once (CPU: SHA-256 and the metadata scan, on blocking threads).
const HASH_CONCURRENCY: usize = 4;
/// Blobs compressed, sealed, fsynced and stored at once: more than the cores, so that one
/// blob's fsync overlaps another's compression (and the filesystem can join the flushes).
const STORE_CONCURRENCY: usize = 8;

/// A group that failed as a whole: the blob backend or the index failed, so nothing of the
/// group was committed (or, if the commit itself failed, whether it was is unknown).
#[derive(Debug, thiserror::Error)]
#[error("archive group ingest failed: {error}")]
pub struct GroupError {
    /// One per message, in the order given: `Some` where the outcome is known regardless
    /// (refused before the group's transaction, e.g. a conflicting UIDL or an unreadable
    /// source), `None` where it is unknown — the caller must not count those as copied.
    pub outcomes: Vec<Option<Result<PutOutcome>>>,
    pub error: ArchiveError,
}

/// What the group knows of one arrival before taking the write lock.
enum Plan {
    /// Decided against committed rows: a rerun (`Ok`), or refused / unreadable (`Err`).
    Settled(Result<PutOutcome>),
    /// Hashed; its key was not recorded when looked up. Decided under the lock.
    Open(Hashed),
    /// The index failed while looking it up: the group fails.
    Unknown,
}

/// A blob stored by the group: digest, encoded size, directories still to fsync.
type Stored = (Digest, u64, Vec<PathBuf>);

/// What the group's transaction decided for one open arrival.
enum Decided {
    Recorded(OccurrenceRecord, bool, Option<u64>),
    Repeat(Result<PutOutcome>),
}

impl Archive {
    /// Stores a group of messages and records their occurrences, as [`put`](Self::put)
    /// would one after another in this order (same dedup, same reruns and refusals, same
    /// event chain), with one index transaction for the group. Returns one result per
    /// message, in order, once everything stored is durable; a message that alone fails
    /// (an [`ArchiveError::OccurrenceConflict`], an unreadable source, an Object Lock call
    /// after the commit) does not fail the others. [`GroupError`] when the backend or the
    /// index fails: nothing of the group is committed then.
    #[tracing::instrument(skip_all, err, fields(archive = %self.name, messages = items.len()))]
    pub async fn put_group(
        &self,
        items: Vec<(MessageSource, Occurrence)>,
    ) -> std::result::Result<Vec<Result<PutOutcome>>, GroupError> {
        let (sources, occs): (Vec<MessageSource>, Vec<Occurrence>) = items.into_iter().unzip();
        let n = sources.len();
        if n == 0 {
            return Ok(Vec::new());
        }

        // Passes 1 and 2, pipelined: hash each arrival and look up what committed rows
        // already decide (concurrently); then, in the order given, take the first open
        // arrival of each key and digest whose blob is not stored yet, and store that blob
        // (concurrently, overlapping the hashing of later arrivals).
        // (Driven by hand rather than with stream combinators over closures: those make the
        // future lose `Send` where the engine spawns it.)
        let scans: Vec<_> = sources.iter().zip(&occs).map(|(s, o)| self.scan(s, o)).collect();
        let mut scans = stream::iter(scans).buffered(HASH_CONCURRENCY);
        let mut stores = FuturesUnordered::new();
        let mut waiting = VecDeque::new();
        let mut first_of_key = HashSet::new();
        let mut wanted = HashSet::new();
        let mut plans = Vec::with_capacity(n);
        let mut sizes = HashMap::new();
        let mut dirs = Vec::new();
        let mut fatal = None;
        let mut scanning = true;
        while scanning || !stores.is_empty() || !waiting.is_empty() {
            while stores.len() < STORE_CONCURRENCY {
                let Some((i, d)) = waiting.pop_front() else { break };
                stores.push(self.store_unsynced(&sources[i], d));
            }
            tokio::select! {
                scan = scans.next(), if scanning => {
                    let Some(scan) = scan else {
                        scanning = false;
                        continue;
                    };
                    let i = plans.len();
                    plans.push(match scan {
                        Ok((plan, blob_stored)) => {
                            if let Plan::Open(h) = &plan {
                                // A key seen earlier in the group is a rerun of it, or
                                // refused: never stored.
                                let o = &occs[i];
                                if first_of_key.insert((&o.source_host, &o.account, &o.uidl))
                                    && wanted.insert(h.digest)
                                    && !blob_stored
                                {
                                    waiting.push_back((i, h.digest));
                                }
                            }
                            plan
                        }
                        Err(e) => {
                            fatal.get_or_insert(e);
                            Plan::Unknown
                        }
                    });
                }
                Some(stored) = stores.next(), if !stores.is_empty() => match stored {
                    Ok((d, size, mut ds)) => {
                        sizes.insert(d, size);
                        dirs.append(&mut ds);
                    }
                    Err(e) => {
                        fatal.get_or_insert(e);
                    }
                },
            }
        }
        if let Some(e) = fatal {
            return Err(fail(&mut plans, n, e));
        }
        // The new blobs' directory entries: each directory fsynced once for the group.
        if let Err(e) = self.backend.sync_dirs(dirs).await {
            return Err(fail(&mut plans, n, e));
        }
        let stored = sizes;

        // Pass 3: one transaction under the chain lock, each arrival in order.
        let decided = match self.record_group(&sources, &occs, &plans, stored).await {
            Ok(d) => d,
            Err(e) => return Err(fail(&mut plans, n, e)),
        };

        // Object Lock where configured, before any arrival may count as copied.
        let mut out = Vec::with_capacity(n);
        for (plan, decided) in plans.into_iter().zip(decided) {
            let result = match (plan, decided) {
                (_, Some(Decided::Recorded(rec, stored_new, size))) => Ok(new_outcome(&rec, stored_new, size)),
                (_, Some(Decided::Repeat(r))) | (Plan::Settled(r), None) => r,
                (Plan::Open(_) | Plan::Unknown, None) => Err(ArchiveError::Config("group arrival left undecided".into())),
            };
            out.push(match result {
                Ok(o) => self.lock_blob(&o.digest).await.map(|()| o),
                Err(e) => Err(e),
            });
        }
        Ok(out)
    }

    /// Pass 1 for one arrival: hashes it (an unreadable source settles it as failed) and
    /// looks up what committed rows decide: its key already recorded (a rerun, or refused),
    /// or open, with whether its blob is stored. `Err` only when the index fails.
    async fn scan(&self, source: &MessageSource, occ: &Occurrence) -> Result<(Plan, bool)> {
        let h = match self.hash_source(source).await {
            Ok(h) => h,
            Err(e) => return Ok((Plan::Settled(Err(e)), false)),
        };
        if let Some(existing) = self.occurrence_by_key(occ).await? {
            return Ok((Plan::Settled(repeat_outcome(existing, occ, h.digest, h.size)), false));
        }
        let stored = self.blob_stored(&h.digest).await?;
        Ok((Plan::Open(h), stored))
    }

    /// Compresses, seals, fsyncs and stores one blob; durable once the directories
    /// returned are fsynced.
    async fn store_unsynced(&self, source: &MessageSource, d: Digest) -> Result<Stored> {
        let (staged, size) = self.stage_blob(source).await?;
        let dirs = self.backend.put_staged_unsynced(&d, staged).await?;
        Ok((d, size, dirs))
    }

    /// The group's write transaction: the open arrivals' keys are read again inside it (one
    /// statement: another writer may have recorded them since the scan), then each arrival,
    /// in order, is decided against those and the group's own earlier rows, and recorded as
    /// `put` records it. Committed once; search documents are added after the
    /// commit while the lock is still held, in event order.
    async fn record_group(
        &self,
        sources: &[MessageSource],
        occs: &[Occurrence],
        plans: &[Plan],
        mut stored: HashMap<Digest, u64>,
    ) -> Result<Vec<Option<Decided>>> {
        let (w, mut tx) = self.begin_write().await?;
        // What other writers recorded since the scan, in one read; then, arrival by arrival,
        // what this transaction recorded itself.
        let open_keys: Vec<(&str, &str, &str)> = plans
            .iter()
            .zip(occs)
            .filter(|(p, _)| matches!(p, Plan::Open(_)))
            .map(|(_, o)| (o.source_host.as_str(), o.account.as_str(), o.uidl.as_str()))
            .collect();
        let mut recorded: HashMap<(String, String, String), OccurrenceRecord> =
            rows::occurrences_by_keys(&mut tx, &self.name, &open_keys)
                .await?
                .into_iter()
                .map(|r| ((r.source_host.clone(), r.account.clone(), r.uidl.clone()), r))
                .collect();
        let mut blobs_in_tx = HashSet::new();
        let mut tip = events::head(&mut *tx).await?;
        let mut decided = Vec::with_capacity(plans.len());
        for (i, plan) in plans.iter().enumerate() {
            let Plan::Open(h) = plan else {
                decided.push(None);
                continue;
            };
            let occ = &occs[i];
            let key = (occ.source_host.clone(), occ.account.clone(), occ.uidl.clone());
            if let Some(existing) = recorded.get(&key) {
                decided.push(Some(Decided::Repeat(repeat_outcome(existing.clone(), occ, h.digest, h.size))));
                continue;
            }
            let mut size = stored.remove(&h.digest);
            // A purge may have removed a blob we found stored before the lock: store it
            // again (rare, so under the lock, as `put` would loop).
            if size.is_none() && !blobs_in_tx.contains(&h.digest) && !blob_stored_in(&mut tx, &h.digest).await? {
                size = Some(self.store_blob(&sources[i], &h.digest).await?);
            }
            let (rec, stored_new, ev) = self.record_occurrence(&mut tx, h, occ, size, tip).await?;
            tip = Some((ev.seq, ev.hash));
            blobs_in_tx.insert(h.digest);
            recorded.insert(key, rec.clone());
            decided.push(Some(Decided::Recorded(rec, stored_new, size)));
        }
        tx.commit().await?;
        for (d, plan) in decided.iter().zip(plans) {
            if let (Some(Decided::Recorded(rec, ..)), Plan::Open(h)) = (d, plan) {
                self.index_for_search(rec, &h.extracted).await;
            }
        }
        drop(w);
        Ok(decided)
    }
}

/// The group failed: what is known without it (refusals and unreadable sources decided
/// before the transaction), `None` for the rest.
fn fail(plans: &mut Vec<Plan>, n: usize, error: ArchiveError) -> GroupError {
    let mut outcomes: Vec<Option<Result<PutOutcome>>> = plans
        .drain(..)
        .map(|p| match p {
            Plan::Settled(Err(e)) => Some(Err(e)),
            _ => None,
        })
        .collect();
    outcomes.resize_with(n, || None);
    GroupError { outcomes, error }
}
