//! Schedules on the worker's side (issue 17): which delete policy a claimed pass runs with,
//! and how a pass of a scheduled job is handed back (to `scheduled` until its next run).

use std::time::Duration;

use mailferry_model::{DeletePolicy, JobState};
use mailferry_store::{JobRecord, Release};

/// The delete policy of a cutover's final pass, when this claim is that pass.
pub(crate) fn final_pass(job: &JobRecord) -> Option<DeletePolicy> {
    job.cutover.as_ref().filter(|c| c.started_at.is_some()).map(|c| c.delete)
}

/// A scheduled job whose pass succeeded (or partly) waits for its next pass, due `every`
/// after this one started, unless that is past `until` or this was the final pass of a
/// cutover: then the pass's state ends the schedule (issue 17). Other outcomes as they are.
pub(crate) fn next_pass(job: &JobRecord, outcome: Release, now: chrono::DateTime<chrono::Utc>) -> Release {
    let Some(schedule) = job.spec.as_ref().and_then(|s| s.schedule) else { return outcome };
    if !matches!(outcome.state, JobState::Succeeded | JobState::Partial) || final_pass(job).is_some() {
        return outcome;
    }
    let started = job.started_at.as_deref().and_then(|t| mailferry_model::schedule::parse_time(t).ok()).unwrap_or(now);
    match schedule.next_run(started) {
        Some(next) => {
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            Release { state: JobState::Scheduled, not_before: Some(wait), ..outcome }
        }
        None => outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_model::schedule::parse_time;
    use mailferry_store::Cutover;

    fn job(schedule: Option<&str>, cutover: Option<Cutover>) -> JobRecord {
        let spec = serde_json::json!({
            "source": {"host": "h", "port": 110, "security": "none", "username": "u", "password": "v1:AAAA"},
            "target": {"protocol": "archive", "archive": "a"},
            "schedule": schedule.map(|s| serde_json::from_str::<serde_json::Value>(s).unwrap()),
        });
        JobRecord {
            id: 1,
            state: JobState::Running,
            spec: Some(serde_json::from_value(spec).unwrap()),
            source: String::new(),
            target: String::new(),
            batch_id: None,
            labels: Default::default(),
            created_at: String::new(),
            updated_at: String::new(),
            started_at: Some("2024-05-01T10:00:00.000Z".into()),
            finished_at: None,
            last_error: None,
            runs: 1,
            cancel_requested: false,
            pause_requested: false,
            lease_owner: None,
            lease_expires_at: None,
            trace_parent: None,
            task: None,
            next_run_at: None,
            cutover,
        }
    }

    fn ended(state: JobState) -> Release {
        Release { state, error: Some("e".into()), not_before: None }
    }

    #[test]
    fn scheduled_passes_wait_for_the_next_run() {
        let now = parse_time("2024-05-01T10:30:00Z").unwrap();
        let every_hour = Some(r#"{"every": "1h", "until": "2024-05-01T12:00:00Z"}"#);
        // Due an hour after the pass started: half an hour from now.
        let r = next_pass(&job(every_hour, None), ended(JobState::Partial), now);
        assert_eq!((r.state, r.not_before, r.error.as_deref()), (JobState::Scheduled, Some(Duration::from_secs(1800)), Some("e")));
        // A pass that overran its cadence: the next one at once.
        let late = parse_time("2024-05-01T11:30:00Z").unwrap();
        assert_eq!(next_pass(&job(every_hour, None), ended(JobState::Succeeded), late).not_before, Some(Duration::ZERO));
        // Past `until`, failed passes, stops and unscheduled jobs keep their state.
        let r = next_pass(&job(Some(r#"{"every": "3h", "until": "2024-05-01T12:00:00Z"}"#), None), ended(JobState::Succeeded), now);
        assert_eq!((r.state, r.not_before), (JobState::Succeeded, None));
        for state in [JobState::Failed, JobState::Cancelled, JobState::Paused, JobState::Queued] {
            assert_eq!(next_pass(&job(every_hour, None), ended(state), now).state, state);
        }
        assert_eq!(next_pass(&job(None, None), ended(JobState::Succeeded), now).state, JobState::Succeeded);
    }

    #[test]
    fn the_final_pass_ends_the_schedule_with_its_policy() {
        let now = parse_time("2024-05-01T10:30:00Z").unwrap();
        let every = Some(r#"{"every": "1h"}"#);
        let to_come = Cutover { delete: DeletePolicy::AfterVerified, started_at: None };
        let started = Cutover { started_at: Some("2024-05-01T10:00:00.000Z".into()), ..to_come.clone() };
        assert_eq!(final_pass(&job(every, Some(to_come.clone()))), None);
        assert_eq!(final_pass(&job(every, Some(started.clone()))), Some(DeletePolicy::AfterVerified));
        assert_eq!(next_pass(&job(every, Some(started)), ended(JobState::Succeeded), now).state, JobState::Succeeded);
        // Requested during this pass: the store queues the final pass on release.
        assert_eq!(next_pass(&job(every, Some(to_come)), ended(JobState::Succeeded), now).state, JobState::Scheduled);
    }
}
