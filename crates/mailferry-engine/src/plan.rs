//! What a run has to do: the source's listing diffed against the ledger, chunk by chunk,
//! so memory follows the listing and never the ledger's history (a mailbox drained for
//! years keeps a row per deleted message).

use mailferry_model::LedgerState;
use mailferry_store::{JobId, LedgerEntry, LedgerQuery, RunId, Store, LEDGER_CHUNK};

use crate::error::Result;

/// One source message the run will retrieve (or skip without retrieving).
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub number: u32,
    pub uidl: String,
    /// The LIST size (RFC 1939 §5).
    pub size: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub to_copy: Vec<Planned>,
    /// Listed messages the ledger holds as copied (or copied and deleted).
    pub already_copied: u64,
    /// Of those, rows in state `verified` (still at the source, deletable).
    pub copied: u64,
    /// Of those, copied at least `after_days` ago (when asked).
    pub copied_days_ago: u64,
    /// Listed messages copied but not yet read back (copied by an older version, or whose
    /// read-back did not happen or did not match): verified before any deletion.
    pub unverified: Vec<LedgerEntry>,
}

/// Diff `listed` against the job's ledger. A UIDL the ledger holds as copied whose LIST
/// size now differs names other bytes (DESIGN.md §2.7: a server that reused a UIDL): it is
/// a new message; unless `dry_run`, its old row is superseded (kept under another name)
/// so the new one is copied, and only then deletable, on its own.
pub(crate) async fn plan(
    store: &dyn Store,
    job: JobId,
    run: RunId,
    listed: &[Planned],
    dry_run: bool,
    after_days: Option<u32>,
) -> Result<Plan> {
    let mut plan = Plan::default();
    for chunk in listed.chunks(LEDGER_CHUNK) {
        let uidls: Vec<String> = chunk.iter().map(|p| p.uidl.clone()).collect();
        let rows: std::collections::HashMap<String, LedgerEntry> =
            store.ledger_where(job, LedgerQuery::Uidls(&uidls)).await?.into_iter().map(|e| (e.uidl.clone(), e)).collect();
        for p in chunk {
            match rows.get(&p.uidl) {
                Some(old) if old.state.is_copied() && old.list_size.is_some_and(|was| was != p.size) => {
                    let was = old.list_size.unwrap_or_default();
                    let why = format!(
                        "the server reused UIDL {:?}: it named a message of {was} bytes (copied) and now one of {} bytes, treated as a new message",
                        p.uidl, p.size
                    );
                    tracing::warn!(uidl = %p.uidl, was, now = p.size, "the source reused a UIDL for other bytes; copying the new message too");
                    if !dry_run {
                        store.supersede_reused(job, run, &p.uidl, &why).await?;
                    }
                    plan.to_copy.push(p.clone());
                }
                Some(old) if old.state.is_copied() => {
                    plan.already_copied += 1;
                    if old.state == LedgerState::Copied {
                        plan.unverified.push(old.clone());
                    }
                    if old.state.is_at_source_with_copy() {
                        plan.copied += 1;
                        if after_days.is_some_and(|days| copied_before(old, days)) {
                            plan.copied_days_ago += 1;
                        }
                    }
                }
                _ => plan.to_copy.push(p.clone()),
            }
        }
    }
    Ok(plan)
}

/// Copied, and at least `days` ago (the `after-days:N` delete policy).
pub(crate) fn copied_before(entry: &LedgerEntry, days: u32) -> bool {
    entry.state.is_at_source_with_copy()
        && entry
            .copied_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| chrono::Utc::now().signed_duration_since(t) >= chrono::Duration::days(i64::from(days)))
}

/// Rows left `copying` by earlier runs, and the copied rows sharing a wire digest with them
/// (whose destination copies must not be taken for the in-doubt ones').
pub(crate) async fn in_doubt(store: &dyn Store, job: JobId) -> Result<(Vec<LedgerEntry>, Vec<LedgerEntry>)> {
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
