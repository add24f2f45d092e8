//! What a run has to do: the source's listing (UIDL and LIST), diffed against the ledger
//! chunk by chunk, so memory follows the listing and never the ledger's history (a mailbox
//! drained for years keeps a row per deleted message); what a dry run would do; and the
//! listing recorded in the ledger before anything is copied.

use std::collections::{HashMap, HashSet};

use mailferry_model::{DeletePolicy, LedgerState};
use mailferry_pop3::Pop3Session;
use mailferry_store::{JobId, LedgerEntry, LedgerQuery, RunId, Store, LEDGER_CHUNK};

use super::context::{Planned, RunContext, Tally};
use crate::error::Result;

/// The source's listing as the run keeps it: the messages it can track, and those it
/// cannot (a UIDL the server reports for two messages, an invalid UIDL).
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub listed: Vec<Planned>,
    /// Every message the server listed, trackable or not.
    pub count: u64,
    duplicates: Vec<(String, Vec<u32>)>,
    invalid: Vec<(u32, String)>,
}

impl RunContext<'_> {
    /// UIDL and LIST (RFC 1939 §7, §5): each trackable message with its number and size.
    pub(super) async fn list(&self, pop: &mut Pop3Session) -> Result<Listing> {
        let listing = pop.uidl().await.map_err(|e| self.source_err(e))?;
        let sizes: HashMap<u32, u64> = pop.list().await.map_err(|e| self.source_err(e))?.into_iter().collect();
        // Messages whose UIDL the server reports twice cannot be tracked; report them.
        let duplicate: HashSet<&str> = listing.duplicates.iter().map(|(u, _)| u.as_str()).collect();
        let mut listed: Vec<Planned> = Vec::new();
        for (number, uidl) in &listing.entries {
            if !duplicate.contains(uidl.as_str()) {
                listed.push(Planned { number: *number, uidl: uidl.clone(), size: sizes.get(number).copied().unwrap_or(0) });
            }
        }
        let count = (listing.entries.len() + listing.invalid.len()) as u64;
        Ok(Listing { listed, count, duplicates: listing.duplicates, invalid: listing.invalid })
    }

    /// The listing diffed against the ledger (see [`plan`]).
    pub(super) async fn plan(&self, listing: &Listing) -> Result<Plan> {
        let after_days = match self.job.delete {
            DeletePolicy::AfterDays(days) => Some(days),
            _ => None,
        };
        plan(&*self.store, self.job_id, self.run, &listing.listed, self.job.dry_run, after_days).await
    }

    /// What a dry run reports: what it would copy and delete, having changed nothing.
    pub(super) fn dry_run_tally(&self, listing: &Listing, plan: &Plan) -> Tally {
        Tally {
            listed: listing.count,
            already_copied: plan.already_copied,
            would_copy: plan.to_copy.len() as u64,
            would_delete: would_delete(self.job.delete, self.job.max_message_bytes, self.config.pop3.max_message_bytes, plan),
        }
    }

    /// Record the listing in the ledger: every trackable message the ledger has no row for
    /// (or no LIST size) `listed`, each duplicate UIDL failed with why, each invalid one
    /// logged (it has no row to carry it). Rows the ledger holds already are not written
    /// again: a rerun of a drained mailbox writes nothing here (issue 18).
    pub(super) async fn record_listing(&self, listing: &Listing, plan: &Plan) -> Result<()> {
        let store = &*self.store;
        store.record_listed(self.job_id, self.run, &plan.to_record).await?;
        for (uidl, numbers) in &listing.duplicates {
            store.record_listed(self.job_id, self.run, &[(uidl.clone(), 0)]).await?;
            let why = format!("the server reports UIDL {uidl:?} for messages {numbers:?}; such messages cannot be tracked and are left in place");
            store.mark_failed(self.job_id, self.run, uidl, &why).await?;
        }
        for (number, reason) in &listing.invalid {
            tracing::warn!(number, reason, "invalid UIDL; message left in place");
        }
        Ok(())
    }
}

/// What a dry run would delete under `policy`: what is copied already, and what this run
/// would copy (within the smallest size limit, the job's or the POP3 client's own cap, as
/// the copy applies them): skipped or failed messages stay at the source.
fn would_delete(policy: DeletePolicy, max_message_bytes: Option<u64>, client_max: u64, plan: &Plan) -> u64 {
    match policy {
        DeletePolicy::Keep => 0,
        DeletePolicy::AfterVerified => {
            let max = max_message_bytes.map_or(client_max, |job| job.min(client_max));
            let within = |p: &&Planned| p.size <= max;
            plan.copied + plan.to_copy.iter().filter(within).count() as u64
        }
        DeletePolicy::AfterDays(_) => plan.copied_days_ago,
    }
}

#[derive(Debug, Default)]
pub(super) struct Plan {
    pub to_copy: Vec<Planned>,
    /// Listed messages to record as `listed` (UIDL and LIST size): those without a row,
    /// or whose row has no LIST size yet (written by an older version).
    pub to_record: Vec<(String, u64)>,
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
pub(super) async fn plan(
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
            if rows.get(&p.uidl).is_none_or(|row| row.list_size.is_none()) {
                plan.to_record.push((p.uidl.clone(), p.size));
            }
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
                    // The old row now goes by another name: the new message needs its own.
                    plan.to_record.push((p.uidl.clone(), p.size));
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
pub(super) fn copied_before(entry: &LedgerEntry, days: u32) -> bool {
    entry.state.is_at_source_with_copy()
        && entry
            .copied_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| chrono::Utc::now().signed_duration_since(t) >= chrono::Duration::days(i64::from(days)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(size: u64) -> Planned {
        Planned { number: 1, uidl: format!("u{size}"), size }
    }

    #[test]
    fn a_dry_run_would_delete_what_the_policy_allows() {
        let plan = Plan { to_copy: vec![planned(10), planned(500)], copied: 3, copied_days_ago: 1, ..Plan::default() };
        let cap = u64::MAX;
        assert_eq!(would_delete(DeletePolicy::Keep, None, cap, &plan), 0);
        assert_eq!(would_delete(DeletePolicy::AfterVerified, None, cap, &plan), 5);
        assert_eq!(would_delete(DeletePolicy::AfterVerified, Some(100), cap, &plan), 4, "the large one would be skipped");
        assert_eq!(would_delete(DeletePolicy::AfterDays(7), None, cap, &plan), 1);
    }

    #[test]
    fn a_dry_run_would_not_delete_what_the_pop3_clients_cap_skips() {
        let plan = Plan { to_copy: vec![planned(10), planned(500), planned(5000)], copied: 3, ..Plan::default() };
        assert_eq!(would_delete(DeletePolicy::AfterVerified, None, 1000, &plan), 5, "pop3.max_message_bytes alone");
        assert_eq!(would_delete(DeletePolicy::AfterVerified, Some(100), 1000, &plan), 4, "the job's smaller limit");
        assert_eq!(would_delete(DeletePolicy::AfterVerified, Some(100_000), 400, &plan), 4, "the client's smaller cap");
        assert_eq!(would_delete(DeletePolicy::AfterVerified, Some(100_000), 5000, &plan), 6, "at the cap is within");
    }
}
