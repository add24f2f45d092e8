//! Archive runs in the job queue (issue 15: one job system): queued under a per-archive
//! limit checked in the same transaction, claimable like migration jobs, cancellable but
//! never paused or rerun, found by archive and run, and not listed with migration jobs.

use std::sync::Arc;
use std::time::Duration;

use mailferry_model::{ArchiveTask, JobState};
use mailferry_store::{ClaimLimits, ControlAction, ControlOutcome, JobFilter, Release, Store, TaskQueued};

fn verify(archive: &str, run: i64) -> ArchiveTask {
    ArchiveTask::Verify { archive: archive.into(), run, who: "api-token:1:admin".into() }
}

fn queued(q: TaskQueued) -> mailferry_store::JobRecord {
    match q {
        TaskQueued::Queued(job) => *job,
        TaskQueued::Busy(runs) => panic!("refused: busy with {runs:?}"),
    }
}

pub async fn archive_runs_are_queued_jobs(store: Arc<dyn Store>) {
    let limits = ClaimLimits { per_source_host: 0, per_target_host: 0 };
    let first = queued(store.enqueue_task(&verify("legal", 1), 2, None).await.unwrap());
    assert_eq!((first.state, first.spec.as_ref(), first.task.as_ref()), (JobState::Queued, None, Some(&verify("legal", 1))));
    let export = ArchiveTask::Export {
        archive: "legal".into(),
        run: 2,
        who: "w".into(),
        query: serde_json::json!({"account": "bob"}),
        format: "mbox".into(),
        file: "/tmp/x.mbox".into(),
    };
    queued(store.enqueue_task(&export, 2, None).await.unwrap());
    // The third run on "legal" is over the limit: told which runs are active.
    match store.enqueue_task(&verify("legal", 3), 2, None).await.unwrap() {
        TaskQueued::Busy(runs) => assert_eq!(runs, vec![verify("legal", 1), export.clone()]),
        TaskQueued::Queued(j) => panic!("over the limit, queued {j:?}"),
    }
    // Another archive has its own places.
    let other = queued(store.enqueue_task(&verify("other", 1), 2, None).await.unwrap());

    // Not migration jobs: not listed; found by archive and run.
    assert!(store.list_jobs(&JobFilter::default()).await.unwrap().is_empty());
    assert_eq!(store.task_job("legal", 1).await.unwrap().map(|j| j.id), Some(first.id));
    assert_eq!(store.task_job("other", 1).await.unwrap().map(|j| j.id), Some(other.id));
    assert!(store.task_job("legal", 9).await.unwrap().is_none());

    // Pause and rerun do not apply; cancel does.
    for action in [ControlAction::Pause, ControlAction::Rerun, ControlAction::Resume] {
        assert!(matches!(store.control(other.id, action).await.unwrap(), ControlOutcome::Conflict(JobState::Queued)), "{action:?}");
    }
    match store.control(other.id, ControlAction::Cancel).await.unwrap() {
        ControlOutcome::Done(j) => assert_eq!(j.state, JobState::Cancelled),
        o => panic!("{o:?}"),
    }

    // Claimed like any job, in id order, with a lease; a finished run frees its place.
    let claimed = store.claim_job("w1#1", Duration::from_secs(60), limits).await.unwrap().expect("claimable");
    assert_eq!((claimed.job.id, claimed.job.task.as_ref()), (first.id, Some(&verify("legal", 1))));
    let done = Release { state: JobState::Succeeded, error: None, not_before: None };
    assert!(store.release_job(first.id, "w1#1", &done).await.unwrap());
    queued(store.enqueue_task(&verify("legal", 3), 2, None).await.unwrap());
}
