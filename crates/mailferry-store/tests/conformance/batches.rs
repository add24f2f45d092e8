//! The batch list (`GET /api/v1/batches`): newest first, cursor paged, each batch with the
//! same aggregates `get_batch` gives for it, told the same on both backends.

use std::sync::Arc;

use mailferry_model::{JobState, VerifyLevel};
use mailferry_store::{BatchFilter, ReadBackResult, Store};

use super::{archive, done, intent, spec, MINUTE, WIDE};

pub async fn batch_list(s: Arc<dyn Store>) {
    assert!(s.list_batches(&BatchFilter::default()).await.unwrap().is_empty(), "no batches yet");
    let mut ids = Vec::new();
    for (name, users) in [("wave 1", &["a1", "a2"][..]), ("wave 2", &["b1"][..]), ("wave 3", &["c1", "c2", "c3"][..])] {
        let specs: Vec<_> = users.iter().map(|u| spec(u, "h", archive("x"), &[])).collect();
        let (batch, _) = s.create_jobs(Some(name), &specs).await.unwrap();
        ids.push(batch.unwrap().id);
    }
    // A job of no batch counts nowhere.
    s.create_jobs(None, &[spec("loose", "h", archive("x"), &[])]).await.unwrap();

    // Wave 1 moves: one job running with a ledger (copied, verified, deleted, failed), the
    // other still queued.
    let a1 = s.claim_job("w", MINUTE, WIDE).await.unwrap().unwrap().job.id;
    let run = s.start_run(a1, false).await.unwrap();
    s.record_listed(a1, run, &[("1".into(), 10), ("2".into(), 20), ("3".into(), 30), ("4".into(), 40)]).await.unwrap();
    s.mark_copying(a1, run, &[intent("1", 100), intent("2", 200), intent("3", 300)]).await.unwrap();
    s.mark_copied(a1, run, &[done("1", 1), done("2", 2), done("3", 3)]).await.unwrap();
    let verified = ReadBackResult { uidl: "2".into(), readback_digest: Some("w-2".into()), level: VerifyLevel::Exact, error: None };
    s.record_readback(a1, run, &[verified]).await.unwrap();
    s.mark_source_deleted(a1, run, &["1".into()]).await.unwrap();
    s.mark_failed(a1, run, "4", "boom").await.unwrap();

    let all = s.list_batches(&BatchFilter::default()).await.unwrap();
    let listed: Vec<i64> = all.iter().map(|b| b.batch.id).collect();
    assert_eq!(listed, ids.iter().rev().copied().collect::<Vec<_>>(), "newest first");
    for b in &all {
        assert_eq!(Some(b), s.get_batch(b.batch.id).await.unwrap().as_ref(), "the list agrees with get_batch");
    }
    let wave1 = &all[2];
    assert_eq!(wave1.batch.name, "wave 1");
    assert_eq!((wave1.jobs, wave1.states.clone()), (2, vec![(JobState::Queued, 1), (JobState::Running, 1)]));
    let c = wave1.counts;
    assert_eq!((c.listed, c.copied, c.skipped, c.failed, c.deleted, c.bytes), (4, 3, 0, 1, 1, 600));
    assert_eq!((all[0].jobs, all[0].states.clone()), (3, vec![(JobState::Queued, 3)]));
    assert_eq!(all[0].counts, Default::default());

    // Pages of two, following the cursor (the last id seen).
    let page = |before, limit| {
        let s = s.clone();
        async move {
            let got = s.list_batches(&BatchFilter { before, limit }).await.unwrap();
            got.iter().map(|b| b.batch.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(None, 2).await, vec![ids[2], ids[1]]);
    assert_eq!(page(Some(ids[1]), 2).await, vec![ids[0]]);
    assert_eq!(page(Some(ids[0]), 2).await, Vec::<i64>::new());
    assert_eq!(page(Some(ids[2] + 1000), 1).await, vec![ids[2]], "a cursor past the newest starts at the newest");
}
