//! Plain Rust the store's queries share: rows → records, the control state machine, the
//! values derived from a spec, and limits.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use mailferry_model::{
    ArchiveTask, DeletePolicy, JobCounts, JobSpec, JobState, LedgerState, OAuth2Spec, Scope, Sealed, TargetSpec,
};

use crate::service::{BatchRecord, BatchSummary, ControlAction, Cutover, JobRecord, LedgerRow, TokenRecord};
use crate::{LedgerEntry, ReceiptRow, Result, StoreError};

/// Largest page `list_jobs` and `ledger_page` return; a limit of 0 means [`DEFAULT_PAGE`].
pub(crate) const MAX_PAGE: u32 = 500;
pub(crate) const DEFAULT_PAGE: u32 = 100;

pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(if limit == 0 { DEFAULT_PAGE } else { limit.min(MAX_PAGE) })
}

/// A per-host cap of 0 means "no cap".
pub(crate) fn cap(n: u32) -> i64 {
    if n == 0 {
        i64::MAX
    } else {
        i64::from(n)
    }
}

/// The one text form of a time both backends hand out: RFC 3339, UTC, milliseconds.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The error recorded on a run that ended without recording its end.
pub(crate) const INTERRUPTED: &str =
    "interrupted: the run stopped without recording its end (process killed, or the database was unreachable)";

pub(crate) fn parse_job_state(s: String) -> Result<JobState> {
    JobState::parse(&s).ok_or(StoreError::UnknownState(s))
}

pub(crate) fn parse_ledger_state(s: String) -> Result<LedgerState> {
    LedgerState::parse(&s).ok_or(StoreError::UnknownState(s))
}

pub(crate) fn parse_scope(s: String) -> Result<Scope> {
    Scope::parse(&s).ok_or(StoreError::UnknownState(s))
}

/// The columns of a job row, times already rendered as text.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub id: i64,
    pub state: String,
    pub spec: Option<String>,
    pub source: String,
    pub target: String,
    pub batch_id: Option<i64>,
    pub labels: String,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    pub runs: i64,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<String>,
    pub trace_parent: Option<String>,
    pub task: Option<String>,
    pub not_before: Option<String>,
    pub cutover: Option<String>,
    pub cutover_at: Option<String>,
}

impl JobRow {
    pub(crate) fn into_record(self) -> Result<JobRecord> {
        let spec = match self.spec {
            Some(s) => Some(serde_json::from_str::<JobSpec>(&s).map_err(|e| StoreError::BadSpec(format!("job {}: {e}", self.id)))?),
            None => None,
        };
        let task = match &self.task {
            Some(t) => Some(serde_json::from_str::<ArchiveTask>(t).map_err(|e| StoreError::BadSpec(format!("job {} task: {e}", self.id)))?),
            None => None,
        };
        let labels: BTreeMap<String, String> = serde_json::from_str(&self.labels)
            .map_err(|e| StoreError::BadSpec(format!("job {} labels: {e}", self.id)))?;
        let cutover = match self.cutover {
            Some(p) => Some(Cutover {
                delete: p.parse::<DeletePolicy>().map_err(|e| StoreError::BadSpec(format!("job {} cutover: {e}", self.id)))?,
                started_at: self.cutover_at,
            }),
            None => None,
        };
        Ok(JobRecord {
            id: self.id,
            state: parse_job_state(self.state)?,
            spec,
            source: self.source,
            target: self.target,
            batch_id: self.batch_id,
            labels,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            last_error: self.last_error,
            runs: self.runs,
            cancel_requested: self.cancel_requested,
            pause_requested: self.pause_requested,
            lease_owner: self.lease_owner,
            lease_expires_at: self.lease_expires_at,
            trace_parent: self.trace_parent,
            task,
            next_run_at: self.not_before,
            cutover,
        })
    }
}

/// A ledger row as selected, times already rendered as text. Each query selects the
/// columns of the record it makes ([`LedgerEntry`], [`LedgerRow`], [`ReceiptRow`]); the
/// others keep their defaults.
#[derive(Debug, Default, sqlx::FromRow)]
#[sqlx(default)]
pub(crate) struct LedgerColumns {
    pub uidl: String,
    pub size: i64,
    pub list_size: Option<i64>,
    pub state: String,
    pub reason: Option<String>,
    pub digest: Option<String>,
    pub wire_digest: Option<String>,
    pub wire_size: Option<i64>,
    pub message_id: Option<String>,
    pub dest_uid: Option<i64>,
    pub dest_uidvalidity: Option<i64>,
    pub internal_date: Option<String>,
    pub internal_date_source: Option<String>,
    pub readback_digest: Option<String>,
    pub verify_level: Option<String>,
    pub verify_error: Option<String>,
    pub first_seen_at: String,
    pub copied_at: Option<String>,
    pub verified_at: Option<String>,
    pub deleted_at: Option<String>,
}

fn u64_of(n: i64) -> u64 {
    n.max(0) as u64
}

fn u32_of(n: Option<i64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

impl LedgerColumns {
    pub(crate) fn into_entry(self) -> Result<LedgerEntry> {
        Ok(LedgerEntry {
            uidl: self.uidl,
            size: u64_of(self.size),
            state: parse_ledger_state(self.state)?,
            wire_digest: self.wire_digest,
            wire_size: self.wire_size.map(u64_of),
            message_id: self.message_id,
            copied_at: self.copied_at,
            list_size: self.list_size.map(u64_of),
            dest_uid: u32_of(self.dest_uid),
            dest_uidvalidity: u32_of(self.dest_uidvalidity),
            internal_date: self.internal_date,
        })
    }

    pub(crate) fn into_row(self) -> Result<LedgerRow> {
        Ok(LedgerRow {
            uidl: self.uidl,
            size: u64_of(self.size),
            state: parse_ledger_state(self.state)?,
            reason: self.reason,
            digest: self.digest,
            dest_uid: u32_of(self.dest_uid),
            internal_date: self.internal_date,
            internal_date_source: self.internal_date_source,
            first_seen_at: self.first_seen_at,
            copied_at: self.copied_at,
            deleted_at: self.deleted_at,
        })
    }

    pub(crate) fn into_receipt_row(self) -> ReceiptRow {
        ReceiptRow {
            uidl: self.uidl,
            size: u64_of(self.size),
            state: self.state,
            digest: self.digest,
            wire_digest: self.wire_digest,
            dest_uid: u32_of(self.dest_uid),
            dest_uidvalidity: u32_of(self.dest_uidvalidity),
            readback_digest: self.readback_digest,
            verify_level: self.verify_level,
            verified_at: self.verified_at,
            copied_at: self.copied_at,
            deleted_at: self.deleted_at,
            reason: self.reason,
            verify_error: self.verify_error,
        }
    }
}

/// A token from its columns: id, name, scope, created_at.
pub(crate) fn token_record((id, name, scope, created_at): (i64, String, String, String)) -> Result<TokenRecord> {
    Ok(TokenRecord { id, name, scope: parse_scope(scope)?, created_at })
}

/// What a new service job row holds besides its state and times.
#[derive(Debug)]
pub(crate) struct NewJob {
    pub mailbox_key: String,
    pub source: String,
    pub target: String,
    pub source_key: String,
    pub source_host: String,
    pub target_host: String,
    pub spec: String,
    pub labels: String,
    /// `scheduled` (with `not_before`) for a job whose schedule starts later, else `queued`.
    pub state: &'static str,
    pub not_before: Option<String>,
}

impl NewJob {
    pub(crate) fn from_spec(spec: &JobSpec) -> Result<Self> {
        Ok(Self {
            mailbox_key: spec.mailbox_key(),
            source: spec.source_display(),
            target: spec.target_display(),
            source_key: spec.source_key(),
            source_host: spec.source.host.to_ascii_lowercase(),
            target_host: spec.target_host().to_ascii_lowercase(),
            spec: serde_json::to_string(spec).map_err(|e| StoreError::BadSpec(e.to_string()))?,
            labels: serde_json::to_string(&spec.labels).map_err(|e| StoreError::BadSpec(e.to_string()))?,
            // The first pass of a schedule with a start waits for it, shown as scheduled.
            state: match spec.schedule.and_then(|s| s.not_before) {
                Some(_) => "scheduled",
                None => "queued",
            },
            not_before: spec.schedule.and_then(|s| s.not_before).map(fmt_time),
        })
    }
}

/// `source_key` and `source_host` of a CLI job, from its source display
/// (`pop3 user@host:port`). CLI jobs are never claimed, so this only has to be stable.
pub(crate) fn cli_source_key(source: &str) -> (String, String) {
    let key = source.strip_prefix("pop3 ").unwrap_or(source);
    let host_port = key.rsplit_once('@').map_or(key, |(_, hp)| hp);
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h).to_ascii_lowercase();
    let key = match key.rsplit_once('@') {
        Some((user, _)) => format!("{user}@{}", host_port.to_ascii_lowercase()),
        None => key.to_ascii_lowercase(),
    };
    (key, host)
}

/// What happens to `finished_at` on a control action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    Keep = 0,
    Now = 1,
    Clear = 2,
}

/// The row change a control action makes (always guarded by the state it was planned from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ControlPlan {
    pub state: JobState,
    pub cancel_requested: bool,
    pub pause_requested: bool,
    pub clear_error: bool,
    pub finished: Finished,
    pub clear_not_before: bool,
    /// A cutover's delete policy to record (its start cleared: the final pass is to come).
    pub cutover: Option<DeletePolicy>,
}

/// The control state machine (see [`ControlAction`]); `None` is a conflict. CLI jobs
/// (no spec) are driven by their own process: every action conflicts.
pub(crate) fn plan_control(action: ControlAction, job: &JobRecord) -> Option<ControlPlan> {
    // CLI jobs (neither spec nor task) are driven by their own process; an archive run
    // can only be cancelled (it has no passes to pause or rerun).
    if job.spec.is_none() && (job.task.is_none() || action != ControlAction::Cancel) {
        return None;
    }
    let keep = ControlPlan {
        state: job.state,
        cancel_requested: job.cancel_requested,
        pause_requested: job.pause_requested,
        clear_error: false,
        finished: Finished::Keep,
        clear_not_before: false,
        cutover: None,
    };
    let to = |state: JobState| ControlPlan {
        state,
        cancel_requested: false,
        pause_requested: false,
        clear_not_before: true,
        ..keep
    };
    use ControlAction as A;
    use JobState as S;
    Some(match (action, job.state) {
        (A::Cancel, S::Queued | S::Paused | S::Scheduled) => ControlPlan { finished: Finished::Now, ..to(S::Cancelled) },
        (A::Cancel, S::Running) => ControlPlan { cancel_requested: true, ..keep },
        // A paused schedule resumes with a pass at once (then keeps its cadence).
        (A::Pause, S::Queued | S::Scheduled) => to(S::Paused),
        (A::Pause, S::Running) => ControlPlan { pause_requested: true, ..keep },
        (A::Resume, S::Paused) => to(S::Queued),
        (A::Resume, S::Running) if job.pause_requested => ControlPlan { pause_requested: false, ..keep },
        (A::Rerun, s) if s.is_terminal() => ControlPlan { clear_error: true, finished: Finished::Clear, ..to(S::Queued) },
        (A::Cutover(_), _) if job.task.is_some() => return None,
        (A::Cutover(p), S::Queued | S::Paused | S::Scheduled) => ControlPlan { cutover: Some(p), ..to(S::Queued) },
        // The final pass follows the running one (the release queues it); refused while
        // the final pass itself runs.
        (A::Cutover(p), S::Running) if job.cutover.as_ref().is_none_or(|c| c.started_at.is_none()) => {
            ControlPlan { cutover: Some(p), ..keep }
        }
        (A::Cutover(p), s) if s.is_terminal() => {
            ControlPlan { cutover: Some(p), clear_error: true, finished: Finished::Clear, ..to(S::Queued) }
        }
        _ => return None,
    })
}

/// A batch summary with states in [`JobState::ALL`] order (only states that occur).
pub(crate) fn summary(batch: BatchRecord, per_state: Vec<(String, i64)>, counts: JobCounts) -> Result<BatchSummary> {
    let mut states = Vec::new();
    for (state, n) in per_state {
        states.push((parse_job_state(state)?, n.max(0) as u64));
    }
    states.sort_by_key(|(s, _)| JobState::ALL.iter().position(|a| a == s));
    let jobs = states.iter().map(|(_, n)| n).sum();
    Ok(BatchSummary { batch, jobs, states, counts })
}

/// The stored spec `spec` (JSON) of job `id` with the refresh token of its OAuth2
/// refresh-token grant replaced by `new`, everything else kept; `None` when the spec holds
/// no such grant or its refresh token is no longer `current`.
pub(crate) fn rotate_refresh_token(id: i64, spec: &str, current: &Sealed, new: &Sealed) -> Result<Option<String>> {
    let mut spec: JobSpec =
        serde_json::from_str(spec).map_err(|e| StoreError::BadSpec(format!("job {id}: {e}")))?;
    match &mut spec.target {
        TargetSpec::Imap { oauth2: Some(grant), .. } => match &mut **grant {
            OAuth2Spec::RefreshToken { refresh_token, .. } if refresh_token == current => *refresh_token = new.clone(),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    }
    serde_json::to_string(&spec).map(Some).map_err(|e| StoreError::BadSpec(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_source_keys() {
        assert_eq!(cli_source_key("pop3 Ann@Mail.Example:995"), ("Ann@mail.example:995".into(), "mail.example".into()));
        assert_eq!(cli_source_key("odd"), ("odd".into(), "odd".into()));
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(0), 100);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(10_000), 500);
        assert_eq!(cap(0), i64::MAX);
    }
}
