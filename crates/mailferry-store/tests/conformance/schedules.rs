//! Schedules and cutover in the queue (issue 17): a scheduled job waits in `scheduled`
//! until its next run, is claimed like a queued job once it has come (a new pass on the
//! same job), and a cutover makes one final pass, after the running one if need be.

use std::sync::Arc;
use std::time::Duration;

use mailferry_model::{DeletePolicy, JobState, Schedule};
use mailferry_store::{ControlAction, ControlOutcome, Cutover, CutoverCounts, Release, Store};

use crate::{archive, done, intent, is_rfc3339, spec, MINUTE, WIDE};

fn scheduled(every: &str, not_before: Option<&str>) -> Schedule {
    let text = serde_json::json!({ "every": every, "not_before": not_before });
    serde_json::from_value(text).unwrap()
}

fn to_scheduled(after: Duration) -> Release {
    Release { state: JobState::Scheduled, error: None, not_before: Some(after) }
}

async fn control(s: &Arc<dyn Store>, id: i64, action: ControlAction) -> mailferry_store::JobRecord {
    match s.control(id, action).await.unwrap() {
        ControlOutcome::Done(job) => job,
        other => panic!("{action:?} on job {id}: {other:?}"),
    }
}

/// One message copied (and, with `delete`, deleted at the source) by a pass of `job`.
async fn copy(s: &Arc<dyn Store>, job: i64, uidl: &str, delete: bool) {
    let run = s.start_run(job, false).await.unwrap();
    s.record_listed(job, run, &[(uidl.into(), 10)]).await.unwrap();
    s.mark_copying(job, run, &[intent(uidl, 10)]).await.unwrap();
    s.mark_copied(job, run, &[done(uidl, 1)]).await.unwrap();
    if delete {
        s.mark_source_deleted(job, run, &[uidl.into()]).await.unwrap();
    }
}

pub async fn schedules_and_cutover(s: Arc<dyn Store>) {
    let mut now_spec = spec("now", "h1", archive("x"), &[]);
    now_spec.schedule = Some(scheduled("2s", None));
    let mut later_spec = spec("later", "h2", archive("x"), &[]);
    later_spec.schedule = Some(scheduled("6h", Some("2999-01-01T00:00:00Z")));
    let mut ended_spec = spec("ended", "h3", archive("x"), &[]);
    ended_spec.schedule = Some(scheduled("1d", Some("2999-01-01T00:00:00Z")));
    let (_, jobs) = s.create_jobs(None, &[now_spec.clone(), later_spec, ended_spec]).await.unwrap();
    let (now, later, ended) = (jobs[0].id, jobs[1].id, jobs[2].id);
    // The schedule is stored with the spec; a start in the future shows as scheduled.
    assert_eq!(jobs[0].spec.as_ref().unwrap().schedule, now_spec.schedule);
    assert_eq!((jobs[0].state, jobs[0].next_run_at.as_deref()), (JobState::Queued, None));
    assert_eq!((jobs[1].state, jobs[1].next_run_at.as_deref()), (JobState::Scheduled, Some("2999-01-01T00:00:00.000Z")));
    assert_eq!(jobs[1].cutover, None);

    // Only the job whose time has come is claimed.
    let c = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.runs, c.job.cutover.clone()), (now, 1, None));
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none(), "scheduled jobs wait for their time");
    copy(&s, now, "m1", false).await;

    // A pass ends: scheduled until the next run, not finished, not claimable before it.
    assert!(s.release_job(now, "w1", &to_scheduled(Duration::from_millis(600))).await.unwrap());
    let j = s.get_job(now).await.unwrap().unwrap();
    assert_eq!((j.state, j.lease_owner.as_deref(), j.finished_at.as_deref()), (JobState::Scheduled, None, None));
    assert!(j.next_run_at.as_deref().is_some_and(is_rfc3339), "{:?}", j.next_run_at);
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none());
    let events = s.job_events(now, 0, 100).await.unwrap();
    let states: Vec<JobState> = events.iter().map(|e| e.state).collect();
    assert_eq!(states, [JobState::Queued, JobState::Running, JobState::Scheduled]);
    // A rerun is for finished jobs; a scheduled one runs when its time comes.
    assert_eq!(s.control(now, ControlAction::Rerun).await.unwrap(), ControlOutcome::Conflict(JobState::Scheduled));

    // The next run: a new pass of the same job.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let c = s.claim_job("w2", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.runs, c.takeover, c.job.next_run_at.as_deref()), (now, 2, false, None));

    // A cutover during a pass: that pass ends, and the final one comes next, not the schedule.
    let j = control(&s, now, ControlAction::Cutover(DeletePolicy::AfterVerified)).await;
    assert_eq!(j.state, JobState::Running);
    assert_eq!(j.cutover, Some(Cutover { delete: DeletePolicy::AfterVerified, started_at: None }));
    assert!(s.release_job(now, "w2", &to_scheduled(Duration::from_secs(3600))).await.unwrap());
    let j = s.get_job(now).await.unwrap().unwrap();
    assert_eq!((j.state, j.next_run_at.as_deref(), j.finished_at.as_deref()), (JobState::Queued, None, None));
    assert_eq!(s.cutover_counts(now).await.unwrap(), None, "the final pass has not started");
    // Copies of earlier passes are not the final pass's.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = s.claim_job("w3", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.runs), (now, 3));
    let started = c.job.cutover.as_ref().and_then(|c| c.started_at.clone());
    assert!(started.as_deref().is_some_and(is_rfc3339), "{:?}", c.job.cutover);
    assert_eq!(
        s.control(now, ControlAction::Cutover(DeletePolicy::Keep)).await.unwrap(),
        ControlOutcome::Conflict(JobState::Running),
        "the final pass is running"
    );
    copy(&s, now, "m2", true).await;
    {
        let run = s.start_run(now, false).await.unwrap();
        s.mark_source_deleted(now, run, &["m1".into()]).await.unwrap();
    }
    assert_eq!(s.cutover_counts(now).await.unwrap(), Some(CutoverCounts { copied: 1, deleted: 2 }));
    assert!(s.release_job(now, "w3", &Release { state: JobState::Succeeded, error: None, not_before: None }).await.unwrap());
    let j = s.get_job(now).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert!(j.finished_at.is_some());
    assert_eq!(j.cutover.map(|c| c.delete), Some(DeletePolicy::AfterVerified));

    // Pause and resume a schedule: paused, then queued for a pass at once.
    assert_eq!(control(&s, later, ControlAction::Pause).await.state, JobState::Paused);
    let j = control(&s, later, ControlAction::Resume).await;
    assert_eq!((j.state, j.next_run_at), (JobState::Queued, None));
    let c = s.claim_job("w4", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(c.job.id, later);
    assert!(s.release_job(later, "w4", &to_scheduled(Duration::from_secs(3600))).await.unwrap());

    // A cutover of a scheduled job runs the final pass at once.
    let j = control(&s, later, ControlAction::Cutover(DeletePolicy::AfterDays(3))).await;
    assert_eq!((j.state, j.next_run_at.as_deref()), (JobState::Queued, None));
    let c = s.claim_job("w5", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(c.job.id, later);
    assert_eq!(c.job.cutover.map(|c| (c.delete, c.started_at.is_some())), Some((DeletePolicy::AfterDays(3), true)));
    assert_eq!(s.cutover_counts(later).await.unwrap(), Some(CutoverCounts::default()));

    // Cancel ends a schedule; a cutover of the cancelled job is one final pass, as a rerun.
    let j = control(&s, ended, ControlAction::Cancel).await;
    assert_eq!(j.state, JobState::Cancelled);
    assert!(j.finished_at.is_some());
    let j = control(&s, ended, ControlAction::Cutover(DeletePolicy::Keep)).await;
    assert_eq!((j.state, j.finished_at.as_deref(), j.next_run_at.as_deref()), (JobState::Queued, None, None));
    assert_eq!(j.cutover, Some(Cutover { delete: DeletePolicy::Keep, started_at: None }));
}

/// A schedule changed or ended after the job was created (`set_schedule`): the spec keeps
/// the new one, and a job waiting for its next pass has that run moved to match.
pub async fn schedules_are_edited(s: Arc<dyn Store>) {
    let mut first = spec("edit", "h1", archive("x"), &[]);
    first.schedule = Some(scheduled("6h", Some("2999-01-01T00:00:00Z")));
    let (_, jobs) = s.create_jobs(None, &[first]).await.unwrap();
    let id = jobs[0].id;
    let set = |schedule: Option<Schedule>| {
        let s = s.clone();
        async move {
            match s.set_schedule(id, schedule).await.unwrap() {
                ControlOutcome::Done(job) => job,
                other => panic!("set_schedule({schedule:?}) on job {id}: {other:?}"),
            }
        }
    };

    // A later start moves the next run; the spec holds the new schedule.
    let later = scheduled("1d", Some("2998-01-01T00:00:00Z"));
    let j = set(Some(later)).await;
    assert_eq!((j.state, j.next_run_at.as_deref()), (JobState::Scheduled, Some("2998-01-01T00:00:00.000Z")));
    assert_eq!(s.get_job(id).await.unwrap().unwrap().spec.unwrap().schedule, Some(later));
    assert!(s.claim_job("w1", MINUTE, WIDE).await.unwrap().is_none());
    // No start: due now, claimed as the first pass.
    let j = set(Some(scheduled("1h", None))).await;
    assert!(j.next_run_at.as_deref().is_some_and(is_rfc3339), "{:?}", j.next_run_at);
    let c = s.claim_job("w1", MINUTE, WIDE).await.unwrap().expect("due now");
    assert_eq!((c.job.id, c.job.runs), (id, 1));
    // While it runs: the state and lease are the pass's; only the spec changes.
    let j = set(Some(scheduled("2s", None))).await;
    assert_eq!((j.state, j.lease_owner.as_deref()), (JobState::Running, Some("w1")));
    assert!(s.release_job(id, "w1", &to_scheduled(Duration::from_secs(3600))).await.unwrap());
    // Waiting an hour after a pass: every 2s makes it due 2s after that pass started.
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none());
    let j = set(Some(scheduled("2s", None))).await;
    assert_eq!(j.state, JobState::Scheduled);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = s.claim_job("w2", MINUTE, WIDE).await.unwrap().expect("due after the new cadence");
    assert_eq!((c.job.id, c.job.runs), (id, 2));
    assert!(s.release_job(id, "w2", &to_scheduled(Duration::from_secs(3600))).await.unwrap());

    // Ended while waiting: finished in the state of its last pass, as a passed until does.
    let j = set(None).await;
    assert_eq!((j.state, j.next_run_at.as_deref()), (JobState::Succeeded, None));
    assert!(j.finished_at.is_some());
    assert_eq!(j.spec.unwrap().schedule, None);
    // A finished job given a schedule waits again, unfinished.
    let j = set(Some(scheduled("6h", Some("2999-01-01T00:00:00Z")))).await;
    assert_eq!((j.state, j.next_run_at.as_deref(), j.finished_at.as_deref()), (JobState::Scheduled, Some("2999-01-01T00:00:00.000Z"), None));
    // Paused: stays paused.
    assert_eq!(control(&s, id, ControlAction::Pause).await.state, JobState::Paused);
    assert_eq!(set(Some(scheduled("1d", None))).await.state, JobState::Paused);
    let states: Vec<JobState> = s.job_events(id, 0, 100).await.unwrap().iter().map(|e| e.state).collect();
    assert_eq!(states.iter().filter(|s| **s == JobState::Succeeded).count(), 1, "{states:?}");

    // Unknown, CLI and cut-over jobs.
    assert_eq!(s.set_schedule(424_242, None).await.unwrap(), ControlOutcome::NotFound);
    let cli = s.ensure_job("cli-edit", "pop3 cli@h9:110", "archive x").await.unwrap();
    assert!(matches!(s.set_schedule(cli, None).await.unwrap(), ControlOutcome::Conflict(_)));
    control(&s, id, ControlAction::Cutover(DeletePolicy::Keep)).await;
    assert_eq!(s.set_schedule(id, None).await.unwrap(), ControlOutcome::Conflict(JobState::Queued));
}
