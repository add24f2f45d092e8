//! Editing a job's schedule (issue 17): what `JobQueue::set_schedule` does to the row.
//!
//! The schedule lives in the stored spec; the queue keeps only the next run (`not_before`
//! of a `scheduled` job). A new schedule on a job waiting for its next pass moves that run
//! to `max(not_before, last pass start + every, now)`, the time the worker itself would have
//! picked had the schedule been this one all along (never in the past, so the view shows
//! "due now" as now). A succeeded or partial job given a schedule waits for
//! `not_before` (or runs at once). Ending a schedule ends a waiting job as an `until` that
//! passed does: in the state of its last pass; a job that never ran becomes an ordinary
//! queued job. Other states keep theirs: a running pass, a paused or a queued job carry
//! on, and the stored schedule applies when their pass ends.

use chrono::{DateTime, Utc};
use mailferry_model::schedule::{fmt_time, parse_time};
use mailferry_model::{JobState, Schedule};

use crate::common::Finished;
use crate::service::JobRecord;
use crate::{Result, StoreError};

/// The row change of a schedule edit (guarded by the state it was planned from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchedulePlan {
    /// The stored spec (JSON) with its schedule replaced.
    pub spec: String,
    pub state: JobState,
    /// `Some(t)` sets the next run (`Some(None)` clears it); `None` keeps it.
    pub not_before: Option<Option<String>>,
    pub finished: Finished,
}

/// The plan, or `None` (a conflict) for jobs whose schedule cannot change: CLI jobs and
/// archive runs (no spec), and jobs with a cutover (requested or made: the final pass ends
/// the schedule).
pub(crate) fn plan_schedule(job: &JobRecord, schedule: Option<Schedule>, now: DateTime<Utc>) -> Result<Option<SchedulePlan>> {
    let Some(mut spec) = job.spec.clone() else { return Ok(None) };
    if job.task.is_some() || job.cutover.is_some() {
        return Ok(None);
    }
    spec.schedule = schedule;
    let spec = serde_json::to_string(&spec).map_err(|e| StoreError::BadSpec(e.to_string()))?;
    let keep = SchedulePlan { spec, state: job.state, not_before: None, finished: Finished::Keep };
    // The state of the last pass: only succeeded and partial passes wait for the next one,
    // and a partial pass leaves its error.
    let last_pass = if job.last_error.is_some() { JobState::Partial } else { JobState::Succeeded };
    let ended = |plan: SchedulePlan| SchedulePlan { state: last_pass, not_before: Some(None), finished: Finished::Now, ..plan };
    let started = job.started_at.as_deref().and_then(|t| parse_time(t).ok()).filter(|_| job.runs > 0);
    Ok(Some(match (job.state, schedule) {
        (JobState::Scheduled, None) if started.is_some() => ended(keep),
        (JobState::Scheduled, None) => SchedulePlan { state: JobState::Queued, not_before: Some(None), ..keep },
        (JobState::Scheduled, Some(s)) => {
            let next = match started {
                Some(started) => s.next_run(started),
                None => Some(now),
            };
            match next.map(|n| n.max(s.not_before.unwrap_or(n)).max(now)) {
                Some(n) if s.until.is_none_or(|u| n <= u) => SchedulePlan { not_before: Some(Some(fmt_time(n))), ..keep },
                _ => ended(keep),
            }
        }
        (JobState::Succeeded | JobState::Partial, Some(s)) => {
            let next = s.not_before.unwrap_or(now).max(now);
            SchedulePlan { state: JobState::Scheduled, not_before: Some(Some(fmt_time(next))), finished: Finished::Clear, ..keep }
        }
        _ => keep,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, runs: i64, last_error: Option<&str>) -> JobRecord {
        let spec = serde_json::json!({
            "source": {"host": "h", "port": 110, "security": "none", "username": "u", "password": "v1:AAAA"},
            "target": {"protocol": "archive", "archive": "a"},
        });
        JobRecord {
            id: 1,
            state,
            spec: Some(serde_json::from_value(spec).unwrap()),
            source: String::new(),
            target: String::new(),
            batch_id: None,
            labels: Default::default(),
            created_at: String::new(),
            updated_at: String::new(),
            started_at: (runs > 0).then(|| "2024-05-01T10:00:00.000Z".into()),
            finished_at: None,
            last_error: last_error.map(Into::into),
            runs,
            cancel_requested: false,
            pause_requested: false,
            lease_owner: None,
            lease_expires_at: None,
            trace_parent: None,
            task: None,
            next_run_at: None,
            cutover: None,
        }
    }

    fn every(e: &str, not_before: Option<&str>, until: Option<&str>) -> Option<Schedule> {
        serde_json::from_value(serde_json::json!({"every": e, "not_before": not_before, "until": until})).unwrap()
    }

    fn at(t: &str) -> DateTime<Utc> {
        parse_time(t).unwrap()
    }

    #[test]
    fn next_runs_and_ends() {
        let now = at("2024-05-01T11:00:00Z");
        let plan = |j: &JobRecord, s| plan_schedule(j, s, now).unwrap().unwrap();
        let waiting = job(JobState::Scheduled, 1, None);
        // Last pass at 10:00: every 6h → 16:00; every 30m → due (now); a later start wins.
        assert_eq!(plan(&waiting, every("6h", None, None)).not_before, Some(Some("2024-05-01T16:00:00.000Z".into())));
        assert_eq!(plan(&waiting, every("30m", None, None)).not_before, Some(Some("2024-05-01T11:00:00.000Z".into())));
        let later = every("1h", Some("2024-05-02T00:00:00Z"), None);
        assert_eq!(plan(&waiting, later).not_before, Some(Some("2024-05-02T00:00:00.000Z".into())));
        // The next run past until, or no schedule: ended in the last pass's state.
        let p = plan(&waiting, every("6h", None, Some("2024-05-01T12:00:00Z")));
        assert_eq!((p.state, p.not_before, p.finished), (JobState::Succeeded, Some(None), Finished::Now));
        assert_eq!(plan(&job(JobState::Scheduled, 2, Some("1 failed")), None).state, JobState::Partial);
        assert_eq!(plan(&job(JobState::Scheduled, 0, None), None).state, JobState::Queued);
        // A finished job gets its schedule: waiting from now.
        let p = plan(&job(JobState::Succeeded, 1, None), every("6h", None, None));
        assert_eq!((p.state, p.not_before, p.finished), (JobState::Scheduled, Some(Some("2024-05-01T11:00:00.000Z".into())), Finished::Clear));
        // Running and paused jobs keep their state; the spec carries the schedule.
        let p = plan(&job(JobState::Running, 1, None), every("2h", None, None));
        assert_eq!((p.state, p.not_before), (JobState::Running, None));
        assert!(p.spec.contains("\"every\":\"2h\""), "{}", p.spec);
        // No spec, or a cutover: refused.
        let mut cli = job(JobState::Succeeded, 1, None);
        cli.spec = None;
        assert_eq!(plan_schedule(&cli, None, now).unwrap(), None);
    }
}
