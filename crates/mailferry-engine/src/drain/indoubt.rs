//! Before anything is appended: what the destination already holds (DESIGN.md §2.2).
//!
//! Opening the destination settles what an earlier run left unsettled, so nothing is
//! appended twice. On IMAP, copies whose APPEND outcome was never recorded (`copying` rows,
//! left by a crash) are looked up in a destination index by the digest of the bytes sent;
//! a destination folder that holds messages while the job's ledger is empty is indexed
//! whole. An archive records every arrival by (host, account, UIDL) and says itself what
//! already arrived.
//!
//! In-doubt copies on a destination that rewrites messages (issue 14). A copy whose APPEND
//! outcome was never recorded is normally recognised by its digest: the destination index
//! hashes the candidates and the bytes sent must be among them. Gmail and
//! Exchange / Microsoft 365 add or rewrite headers on the way in, so no digest can match
//! there. On a job that declared such a destination (`--verify body` or `size`), a copy is
//! then located by what survives the rewrite: its Message-ID (`UID SEARCH HEADER`), the
//! INTERNALDATE mailferry set on the APPEND (the same instant), and a size at least the
//! size sent (rewrites add headers) and not much more. Each destination message vouches for
//! one copy only, and never for one already recorded by UID. A copy found this way is
//! recorded `copied` (not appended again) but not `verified`: only a read-back at the job's
//! level makes it deletable.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, FixedOffset};
use mailferry_imap::{Appender, DestinationIndex, ImapSession};
use mailferry_model::VerifyLevel;
use mailferry_store::{CopyDone, JobId, LedgerEntry, LedgerQuery, ReadBackResult, Store, LEDGER_CHUNK};

use super::context::{Planned, RunContext};
use super::retrieve::size_agrees;
use crate::error::Result;
use crate::sink::{ArchiveTarget, Sink, SinkError, Target};

/// The opened destination, with the index to check arrivals against (when the ledger could
/// not say what the folder holds).
pub(super) struct Destination {
    pub sink: Sink,
    pub index: Option<DestinationIndex>,
    /// Counts the open IMAP session while the attempt lasts.
    pub session: Option<crate::metrics::Session>,
}

impl RunContext<'_> {
    /// Connect to the destination and take out of `to_copy` what is found there already
    /// (recorded `copied`). `ledger_was_empty`: the job had no ledger rows before this run.
    pub(super) async fn open_destination(&self, to_copy: &mut Vec<Planned>, ledger_was_empty: bool) -> Result<Destination> {
        match &self.job.target {
            Target::Imap(endpoint) => {
                let imap = crate::connect::connect_imap(endpoint, &self.config.imap, self.tokens).await?;
                let session = Some(crate::metrics::Session::open("imap", &endpoint.host));
                let (sink, index) = self.open_imap(imap, to_copy, ledger_was_empty).await?;
                Ok(Destination { sink, index, session })
            }
            Target::Archive(target) => Ok(Destination { sink: self.open_archive(target, to_copy).await?, index: None, session: None }),
        }
    }

    /// Exactly once: copies whose APPEND outcome was never recorded are looked up at the
    /// destination before anything is appended again.
    async fn open_imap(
        &self,
        mut imap: ImapSession,
        to_copy: &mut Vec<Planned>,
        ledger_was_empty: bool,
    ) -> Result<(Sink, Option<DestinationIndex>)> {
        let (in_doubt, copied) = in_doubt(&*self.store, self.job_id).await?;
        let mut index = None;
        let mut rewritten = Vec::new();
        if imap.exists() > 0 && ledger_was_empty {
            tracing::warn!("no ledger for this job but the destination folder holds messages: indexing it to avoid duplicates");
            index = Some(imap.build_index(None).await.map_err(|e| self.dest_err(e))?);
        } else if !in_doubt.is_empty() {
            let in_doubt: Vec<&LedgerEntry> = in_doubt.iter().collect();
            let copied: Vec<&LedgerEntry> = copied.iter().collect();
            let (found, unmatched) = self.resolve_in_doubt(&mut imap, &in_doubt, &copied).await?;
            to_copy.retain(|p| !found.contains(&p.uidl));
            rewritten = unmatched;
        }
        let mut appender = imap.into_appender();
        if !rewritten.is_empty() {
            let found = locate_rewritten(self, &mut appender, &rewritten, &copied).await?;
            to_copy.retain(|p| !found.contains(&p.uidl));
        }
        Ok((Sink::Imap(appender), index))
    }

    /// The archive records every arrival by (host, account, UIDL): a copy this job left in
    /// doubt (its `copying` row records the digest it retrieved before the put) is settled
    /// by the archive's own occurrence, without retrieving the message again.
    ///
    /// Only then: the occurrence key has no port, and job ids are unique per ledger only
    /// (two `--state` files, or the CLI beside the service, sharing one archive each have a
    /// job 1), so an occurrence "of this job" may be another source's message with the same
    /// account, UIDL and size. It is trusted only when this job's own in-doubt row carries
    /// the occurrence's digest; everything else goes through put(), which compares digests
    /// (the same bytes: recorded copied; other bytes: refused, kept at the source).
    async fn open_archive(&self, target: &ArchiveTarget, to_copy: &mut Vec<Planned>) -> Result<Sink> {
        let store = &self.store;
        let recorded: HashMap<String, String> = store
            .ledger_where(self.job_id, LedgerQuery::InDoubt)
            .await?
            .into_iter()
            .filter_map(|e| e.wire_digest.map(|d| (e.uidl, d)))
            .collect();
        let mut found = Vec::new();
        let mut verified = Vec::new();
        for p in to_copy.iter() {
            let Some(digest) = recorded.get(&p.uidl) else { continue };
            let hit = target
                .archive
                .find_occurrence(&self.job.source.host, &self.job.source.username, &p.uidl)
                .await
                .map_err(|e| self.sink_err(SinkError::Archive(e)))?;
            let hit = hit.filter(|occ| {
                occ.job_id == Some(self.job_id)
                    && size_agrees(occ.size, p.size)
                    && occ.digest.to_hex().eq_ignore_ascii_case(digest)
            });
            if let Some(occ) = hit {
                // The arrival is recorded, but its S3 Object Lock may not be (the lock
                // call failed, or the process died, after the index commit): apply it
                // before this message can count as copied and be deleted at the source.
                target
                    .archive
                    .ensure_locked(&occ.digest)
                    .await
                    .map_err(|e| self.sink_err(SinkError::Archive(e)))?;
                // Verified means read back: the stored blob, re-hashed.
                match target.archive.read_back(&occ.digest).await {
                    Ok(_) => {}
                    Err(mailferry_archive::ArchiveError::Integrity(e)) => {
                        tracing::error!(uidl = %p.uidl, error = %e, "an archived copy does not read back intact; retrieving the message again");
                        continue;
                    }
                    Err(e) => return Err(self.sink_err(SinkError::Archive(e))),
                }
                verified.push(ReadBackResult::exact(p.uidl.clone(), Some(occ.digest.to_hex())));
                found.push(CopyDone { uidl: p.uidl.clone(), dest_uid: None, dest_uidvalidity: None, found_at_destination: true });
            }
        }
        if !found.is_empty() {
            store.mark_copied(self.job_id, self.run, &found).await?;
            store.record_readback(self.job_id, self.run, &verified).await?;
            let found: HashSet<&str> = found.iter().map(|d| d.uidl.as_str()).collect();
            to_copy.retain(|p| !found.contains(p.uidl.as_str()));
        }
        let sink = Sink::Archive {
            archive: std::sync::Arc::clone(&target.archive),
            source_host: self.job.source.host.clone(),
            account: self.job.source.username.clone(),
            job: self.job_id,
            run: self.run,
        };
        Ok(sink)
    }

    /// Returns the UIDLs found at the destination (now `copied`); the rest go back to
    /// `listed`, except, on a destination declared to rewrite messages (`--verify body` or
    /// `size`), those a Message-ID could still locate: returned for
    /// [`locate_rewritten`], still `copying`.
    /// Each destination copy vouches for one source message: copies already accounted for
    /// by `copied` rows are claimed first, so an in-doubt twin of a copied message is not
    /// mistaken for copied (and then deleted at the source) when its own APPEND never landed.
    async fn resolve_in_doubt(
        &self,
        imap: &mut ImapSession,
        in_doubt: &[&LedgerEntry],
        copied: &[&LedgerEntry],
    ) -> Result<(HashSet<String>, Vec<LedgerEntry>)> {
        let store = &self.store;
        let mut found = Vec::new();
        let mut again = Vec::new();
        let mut unmatched = Vec::new();
        if imap.exists() > 0 {
            let sizes: HashSet<u64> = in_doubt.iter().filter_map(|e| e.wire_size).collect();
            let mut index = imap.build_index(Some(&sizes)).await.map_err(|e| self.dest_err(e))?;
            for e in copied {
                if let Some(d) = e.wire_digest.as_deref() {
                    index.claim(d);
                }
            }
            for e in in_doubt {
                match e.wire_digest.as_deref().and_then(|d| index.claim(d)) {
                    Some(uid) => found.push(CopyDone {
                        uidl: e.uidl.clone(),
                        dest_uid: Some(uid),
                        dest_uidvalidity: imap.uid_validity(),
                        found_at_destination: true,
                    }),
                    None => again.push(e.uidl.clone()),
                }
            }
        } else {
            again.extend(in_doubt.iter().map(|e| e.uidl.clone()));
        }
        tracing::info!(found = found.len(), again = again.len(), "resolved copies left in doubt by an earlier run");
        store.mark_copied(self.job_id, self.run, &found).await?;
        // The destination index hashed the copies' own bytes: they are read back, exactly.
        let digests: HashMap<&str, &str> =
            in_doubt.iter().filter_map(|e| e.wire_digest.as_deref().map(|d| (e.uidl.as_str(), d))).collect();
        let verified: Vec<ReadBackResult> = found
            .iter()
            .map(|d| ReadBackResult::exact(d.uidl.clone(), digests.get(d.uidl.as_str()).map(|d| (*d).to_owned())))
            .collect();
        store.record_readback(self.job_id, self.run, &verified).await?;
        if may_rewrite(self.job.verify) {
            let by_uidl: HashMap<&str, &&LedgerEntry> = in_doubt.iter().map(|e| (e.uidl.as_str(), e)).collect();
            again.retain(|u| match by_uidl.get(u.as_str()) {
                Some(e) if locatable(e) => {
                    unmatched.push((**e).clone());
                    false
                }
                _ => true,
            });
        }
        store.revert_copying(self.job_id, &again).await?;
        Ok((found.into_iter().map(|d| d.uidl).collect(), unmatched))
    }
}
/// Rows left `copying` by earlier runs, and the copied rows sharing a wire digest with them
/// (whose destination copies must not be taken for the in-doubt ones').
async fn in_doubt(store: &dyn Store, job: JobId) -> Result<(Vec<LedgerEntry>, Vec<LedgerEntry>)> {
    let doubt = store.ledger_where(job, LedgerQuery::InDoubt).await?;
    let mut digests: Vec<String> = doubt.iter().filter_map(|e| e.wire_digest.clone()).collect();
    digests.sort();
    digests.dedup();
    let mut copied = Vec::new();
    for chunk in digests.chunks(LEDGER_CHUNK) {
        copied.extend(store.ledger_where(job, LedgerQuery::CopiedWithDigests(chunk)).await?);
    }
    Ok((doubt, copied))
}

/// Header lines a rewriting destination may add: more than this and it is another message.
const MAX_GROWTH: u64 = 64 * 1024;

/// Whether the job declared a destination that may rewrite messages.
fn may_rewrite(level: VerifyLevel) -> bool {
    matches!(level, VerifyLevel::Body | VerifyLevel::Size)
}

/// Whether the row carries what the fallback needs.
fn locatable(e: &LedgerEntry) -> bool {
    e.message_id.as_deref().is_some_and(|m| !m.is_empty()) && e.wire_size.is_some() && e.internal_date.is_some()
}

/// IMAP date-time (RFC 3501 §9: `"dd-Mon-yyyy hh:mm:ss +zzzz"`, day possibly space-padded).
fn imap_date(s: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_str(s.trim(), "%d-%b-%Y %H:%M:%S %z").ok()
}

/// Whether a destination message with `size` and `date` can be the copy of `e`.
fn fits(e: &LedgerEntry, level: VerifyLevel, size: u64, date: Option<&str>) -> bool {
    let (Some(sent), Some(set)) = (e.wire_size, e.internal_date.as_deref()) else { return false };
    let size_ok = match level {
        VerifyLevel::Size => size == sent,
        _ => size >= sent && size - sent <= MAX_GROWTH,
    };
    // INTERNALDATE has whole seconds; the recorded time may carry a fraction.
    let same_instant = match (date.and_then(imap_date), DateTime::parse_from_rfc3339(set).ok()) {
        (Some(a), Some(b)) => a.timestamp() == b.timestamp(),
        _ => false,
    };
    size_ok && same_instant
}

/// Locates `rows` (left `copying`) at the destination; records the ones found as copied
/// and hands the rest back to `listed`. Returns the UIDLs found.
async fn locate_rewritten(
    ctx: &RunContext<'_>,
    appender: &mut Appender,
    rows: &[LedgerEntry],
    copied: &[LedgerEntry],
) -> Result<HashSet<String>> {
    let uid_validity = appender.uid_validity();
    // Destination messages already vouching for a recorded copy.
    let mut taken: HashSet<u32> = copied
        .iter()
        .filter(|c| c.dest_uidvalidity.is_none() || c.dest_uidvalidity == uid_validity)
        .filter_map(|c| c.dest_uid)
        .collect();
    let mut found = Vec::new();
    let mut again = Vec::new();
    for e in rows {
        let Some(mid) = e.message_id.as_deref() else {
            again.push(e.uidl.clone());
            continue;
        };
        let candidates = match appender.search_message_id(mid).await {
            Ok(uids) => uids,
            // An id a quoted string cannot carry: it cannot be searched for.
            Err(mailferry_imap::ImapError::NotSent(_)) => Vec::new(),
            Err(err) => return Err(ctx.dest_err(err)),
        };
        let candidates: Vec<u32> = candidates.into_iter().filter(|u| !taken.contains(u)).collect();
        let placed = if candidates.is_empty() {
            Vec::new()
        } else {
            appender.placements(&candidates).await.map_err(|err| ctx.dest_err(err))?
        };
        match placed.iter().find(|(_, size, date)| fits(e, ctx.job.verify, *size, date.as_deref())) {
            Some(&(uid, _, _)) => {
                taken.insert(uid);
                found.push(CopyDone { uidl: e.uidl.clone(), dest_uid: Some(uid), dest_uidvalidity: uid_validity, found_at_destination: true });
            }
            None => again.push(e.uidl.clone()),
        }
    }
    tracing::info!(found = found.len(), again = again.len(), "in-doubt copies located by Message-ID and INTERNALDATE on a rewriting destination");
    ctx.store.mark_copied(ctx.job_id, ctx.run, &found).await?;
    ctx.store.revert_copying(ctx.job_id, &again).await?;
    Ok(found.into_iter().map(|d| d.uidl).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(size: u64, date: &str) -> LedgerEntry {
        LedgerEntry {
            uidl: "u".into(),
            size,
            state: mailferry_model::LedgerState::Copying,
            wire_digest: Some("d".into()),
            wire_size: Some(size),
            message_id: Some("<m@x>".into()),
            copied_at: None,
            list_size: Some(size),
            dest_uid: None,
            dest_uidvalidity: None,
            internal_date: Some(date.into()),
        }
    }

    #[test]
    fn a_rewritten_copy_fits_by_date_and_a_grown_size_only() {
        let e = row(1000, "2026-12-07T10:00:00.734+01:00");
        let same = Some(" 7-Dec-2026 09:00:00 +0000");
        assert!(fits(&e, VerifyLevel::Body, 1300, same), "same instant, headers added");
        assert!(fits(&e, VerifyLevel::Body, 1000, Some("07-Dec-2026 10:00:00 +0100")));
        assert!(!fits(&e, VerifyLevel::Body, 999, same), "smaller: not this message");
        assert!(!fits(&e, VerifyLevel::Body, 1000 + MAX_GROWTH + 1, same));
        assert!(!fits(&e, VerifyLevel::Body, 1300, Some(" 7-Dec-2026 09:00:01 +0000")), "another instant");
        assert!(!fits(&e, VerifyLevel::Body, 1300, None));
        assert!(!fits(&e, VerifyLevel::Body, 1300, Some("garbage")));
        assert!(fits(&e, VerifyLevel::Size, 1000, same) && !fits(&e, VerifyLevel::Size, 1300, same));
        assert!(!may_rewrite(VerifyLevel::Exact) && may_rewrite(VerifyLevel::Body));
    }
}
