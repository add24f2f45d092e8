//! Receipts: the rows they are built from, and storing / reading them back, told the same
//! on both backends (one SQL text, issue 14/15).

use std::sync::Arc;

use mailferry_model::VerifyLevel;
use mailferry_store::{CopyDone, CopyIntent, ReadBackResult, Store, StoredReceipt};

pub async fn receipt_story(store: Arc<dyn Store>) {
    let job = store.ensure_job("rc", "pop3 rc@h:110", "imap rc@h:143/INBOX").await.unwrap();
    let run = store.start_run(job, false).await.unwrap();
    // 1,205 rows: three pages of 500 plus a short one; UIDLs in byte order.
    let listed: Vec<(String, u64)> = (0..1205).map(|i| (format!("u{i:05}"), 10 + i as u64)).collect();
    store.record_listed(job, run, &listed).await.unwrap();
    let intent = |u: &str| CopyIntent {
        uidl: u.into(),
        size: 11,
        digest: format!("d-{u}"),
        wire_digest: format!("w-{u}"),
        wire_size: 12,
        normalized: true,
        message_id: None,
        internal_date: None,
        internal_date_source: "retrieved",
    };
    store.mark_copying(job, run, &[intent("u00001"), intent("u00002")]).await.unwrap();
    let done = |u: &str, uid| CopyDone { uidl: u.into(), dest_uid: Some(uid), dest_uidvalidity: Some(77), found_at_destination: false };
    store.mark_copied(job, run, &[done("u00001", 5), done("u00002", 6)]).await.unwrap();
    store
        .record_readback(job, run, &[ReadBackResult { uidl: "u00001".into(), readback_digest: Some("r1".into()), level: VerifyLevel::Exact, error: None }])
        .await
        .unwrap();
    store.mark_source_deleted(job, run, &["u00001".to_string()]).await.unwrap();
    store.mark_skipped(job, run, "u00003", "too large").await.unwrap();

    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.receipt_rows(job, &after, 500).await.unwrap();
        assert!(page.len() <= 500);
        let Some(last) = page.last() else { break };
        after = last.uidl.clone();
        all.extend(page);
    }
    assert_eq!(all.len(), 1205);
    assert!(all.windows(2).all(|w| w[0].uidl < w[1].uidl), "byte order, no repeats");
    let row = |u: &str| all.iter().find(|r| r.uidl == u).unwrap().clone();
    let deleted = row("u00001");
    assert_eq!(deleted.state, "source-deleted");
    assert_eq!((deleted.dest_uid, deleted.dest_uidvalidity), (Some(5), Some(77)));
    assert_eq!(deleted.digest.as_deref(), Some("d-u00001"));
    assert_eq!(deleted.wire_digest.as_deref(), Some("w-u00001"));
    assert_eq!(deleted.readback_digest.as_deref(), Some("r1"));
    assert_eq!(deleted.verify_level.as_deref(), Some("exact"));
    // Times are RFC 3339 UTC with milliseconds on both backends.
    for t in [&deleted.verified_at, &deleted.copied_at, &deleted.deleted_at] {
        let t = t.as_deref().expect("time set");
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.', "{t}");
    }
    assert_eq!(row("u00002").state, "copied");
    assert_eq!(row("u00002").deleted_at, None);
    assert_eq!(row("u00003").reason.as_deref(), Some("too large"));
    assert_eq!(row("u00004").size, 14);

    // No receipt yet; then one per run, the latest served without ?run.
    assert_eq!(store.receipt(job, None).await.unwrap(), None);
    let lines: Vec<String> = (0..3).map(|i| format!("{{\"leaf\":\"{i}\"}}")).collect();
    store.save_receipt_lines(run, 0, &lines[..2]).await.unwrap();
    store.save_receipt_lines(run, 2, &lines[2..]).await.unwrap();
    let first = StoredReceipt {
        run,
        job,
        entries_run: run,
        header: "{\"run\":1}".into(),
        signature: "sig".into(),
        public_key: "pk".into(),
    };
    store.save_receipt(&first).await.unwrap();
    assert_eq!(store.receipt(job, None).await.unwrap().as_ref(), Some(&first));
    let page = store.receipt_lines(run, -1, 2).await.unwrap();
    assert_eq!(page, vec![(0, lines[0].clone()), (1, lines[1].clone())]);
    assert_eq!(store.receipt_lines(run, 1, 2).await.unwrap(), vec![(2, lines[2].clone())]);
    store.finish_run(run, "succeeded", None, "{}").await.unwrap();

    // A second run that changed nothing points at the first run's entries; its own lines go.
    let run2 = store.start_run(job, false).await.unwrap();
    store.save_receipt_lines(run2, 0, &lines).await.unwrap();
    let second = StoredReceipt { run: run2, entries_run: run, header: "{\"run\":2}".into(), ..first.clone() };
    store.save_receipt(&second).await.unwrap();
    assert_eq!(store.receipt(job, None).await.unwrap().as_ref(), Some(&second));
    assert_eq!(store.receipt(job, Some(run)).await.unwrap().as_ref(), Some(&first));
    assert!(store.receipt_lines(run2, -1, 10).await.unwrap().is_empty());
    assert_eq!(store.receipt_lines(run, -1, 10).await.unwrap().len(), 3);
    // Another job's receipt is not this job's.
    let other = store.ensure_job("rc2", "pop3 rc2@h:110", "imap rc2@h:143/INBOX").await.unwrap();
    assert_eq!(store.receipt(other, Some(run)).await.unwrap(), None);
}
