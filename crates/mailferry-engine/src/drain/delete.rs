//! The end of a run at the source: copies recorded by earlier runs but never read back
//! are read back first (so a deleting pass after a pre-stage can delete them), then DELE
//! for what the policy allows and the ledger holds as verified, and QUIT, which commits
//! the deletions (RFC 1939 §6).

use std::collections::HashMap;

use mailferry_model::{DeletePolicy, LedgerState};
use mailferry_pop3::Pop3Session;
use mailferry_store::{LedgerEntry, LedgerQuery, LEDGER_CHUNK};

use super::context::{Planned, RunContext};
use super::plan::copied_before;
use crate::error::Result;
use crate::sink::Sink;
use crate::verify::Sent;

impl RunContext<'_> {
    /// Read back copies that earlier runs recorded `copied` without a verified read-back
    /// (an older version, or a read-back that failed), so that a deleting pass (the cutover
    /// after a pre-stage) can delete them, and only them once they match.
    pub(super) async fn reverify(&self, sink: &mut Sink, rows: &[LedgerEntry]) -> Result<()> {
        let uid_validity = match &*sink {
            Sink::Imap(a) => a.uid_validity(),
            Sink::Archive { .. } => None,
        };
        for chunk in rows.chunks(256) {
            let sent: Vec<Sent> = chunk
                .iter()
                .filter_map(|e| {
                    Some(Sent {
                        uidl: e.uidl.clone(),
                        // A UID recorded under another UIDVALIDITY names nothing any more.
                        uid: e.dest_uid.filter(|_| e.dest_uidvalidity.is_some() && e.dest_uidvalidity == uid_validity),
                        wire_digest: e.wire_digest.clone()?,
                        wire_size: e.wire_size?,
                        body_digest: None,
                        message_id: e.message_id.clone(),
                        has_nul: false,
                    })
                })
                .collect();
            let results = crate::verify::read_back(sink, &sent, self.job.verify).await.map_err(|e| self.sink_err(e))?;
            tracing::info!(
                verified = results.iter().filter(|r| r.error.is_none()).count(),
                of = results.len(),
                "read back copies recorded by earlier runs"
            );
            self.store.record_readback(self.job_id, self.run, &results).await?;
        }
        Ok(())
    }

    /// DELE what the policy allows — only rows the ledger says are `copied` — then QUIT,
    /// which is what commits the deletions (RFC 1939 §6). Reached only when the copy phase
    /// finished without error (the first law).
    pub(super) async fn delete_and_quit(&self, mut pop: Pop3Session, listed: &[Planned]) -> Result<()> {
        let mut deleted = Vec::new();
        if self.job.delete != DeletePolicy::Keep {
            for chunk in listed.chunks(LEDGER_CHUNK) {
                let uidls: Vec<String> = chunk.iter().map(|p| p.uidl.clone()).collect();
                let ledger: HashMap<String, LedgerEntry> = self
                    .store
                    .ledger_where(self.job_id, LedgerQuery::Uidls(&uidls))
                    .await?
                    .into_iter()
                    .map(|e| (e.uidl.clone(), e))
                    .collect();
                for p in chunk {
                    let Some(entry) = ledger.get(&p.uidl) else { continue };
                    if may_delete(entry, self.job.delete) {
                        match pop.dele(p.number).await {
                            Ok(()) => deleted.push(p.uidl.clone()),
                            Err(e) if e.class().is_retryable() && !matches!(e, mailferry_pop3::Pop3Error::Server { .. }) => {
                                return Err(self.source_err(e));
                            }
                            Err(e) => tracing::warn!(uidl = %p.uidl, error = %e, "DELE refused; message left in place"),
                        }
                    }
                }
            }
        }
        pop.quit().await.map_err(|e| self.source_err(e))?;
        self.store.mark_source_deleted(self.job_id, self.run, &deleted).await?;
        Ok(())
    }
}

/// First law: only a copy read back and matched is deleted at the source, and only when
/// the job's policy allows it.
fn may_delete(entry: &LedgerEntry, policy: DeletePolicy) -> bool {
    entry.state == LedgerState::Verified
        && match policy {
            DeletePolicy::Keep => false,
            DeletePolicy::AfterVerified => true,
            DeletePolicy::AfterDays(days) => copied_before(entry, days),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: LedgerState, copied_days_ago: i64) -> LedgerEntry {
        let at = chrono::Utc::now() - chrono::Duration::days(copied_days_ago);
        LedgerEntry {
            uidl: "u".into(),
            size: 10,
            state,
            wire_digest: Some("d".into()),
            wire_size: Some(10),
            message_id: None,
            copied_at: Some(at.to_rfc3339()),
            list_size: Some(10),
            dest_uid: Some(1),
            dest_uidvalidity: Some(1),
            internal_date: None,
        }
    }

    #[test]
    fn only_a_verified_copy_is_deleted_and_only_as_the_policy_says() {
        let verified = row(LedgerState::Verified, 10);
        assert!(may_delete(&verified, DeletePolicy::AfterVerified));
        assert!(!may_delete(&verified, DeletePolicy::Keep));
        assert!(may_delete(&verified, DeletePolicy::AfterDays(7)));
        assert!(!may_delete(&verified, DeletePolicy::AfterDays(30)), "not old enough");
        for state in [LedgerState::Copied, LedgerState::Copying, LedgerState::Listed] {
            assert!(!may_delete(&row(state, 10), DeletePolicy::AfterVerified), "{state:?}: not read back");
        }
    }
}
