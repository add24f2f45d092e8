//! In-doubt copies on a destination that rewrites messages (DESIGN.md §2.2, issue 14).
//!
//! A copy whose APPEND outcome was never recorded is normally recognised by its digest: the
//! destination index hashes the candidates and the bytes sent must be among them. Gmail and
//! Exchange / Microsoft 365 add or rewrite headers on the way in, so no digest can match
//! there. On a job that declared such a destination (`--verify body` or `size`), a copy is
//! then located by what survives the rewrite: its Message-ID (`UID SEARCH HEADER`), the
//! INTERNALDATE mailferry set on the APPEND (the same instant), and a size at least the
//! size sent (rewrites add headers) and not much more. Each destination message vouches for
//! one copy only, and never for one already recorded by UID. A copy found this way is
//! recorded `copied` (not appended again) but not `verified`: only a read-back at the job's
//! level makes it deletable.

use std::collections::HashSet;

use chrono::{DateTime, FixedOffset};
use mailferry_imap::Appender;
use mailferry_model::VerifyLevel;
use mailferry_store::{CopyDone, LedgerEntry};

use crate::drain::RunContext;
use crate::error::Result;

/// Header lines a rewriting destination may add: more than this and it is another message.
const MAX_GROWTH: u64 = 64 * 1024;

/// Whether the job declared a destination that may rewrite messages.
pub(crate) fn may_rewrite(level: VerifyLevel) -> bool {
    matches!(level, VerifyLevel::Body | VerifyLevel::Size)
}

/// Whether the row carries what the fallback needs.
pub(crate) fn locatable(e: &LedgerEntry) -> bool {
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
pub(crate) async fn locate_rewritten(
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
