//! Source claims and fencing (DESIGN.md §2 invariant 8): one holder per source mailbox, a
//! generation that rises with every claim, and ledger writes of a superseded run refused.

use std::sync::Arc;
use std::time::Duration;

use mailferry_model::LedgerState;
use mailferry_store::{ClaimAttempt, ClaimHolder, CopyDone, SourceClaim, Store, StoreError};

fn who(name: &str, pid: u32) -> ClaimHolder {
    ClaimHolder { holder: format!("{name} (pid {pid} on h1)"), host: "h1".into(), pid }
}

fn claimed(a: ClaimAttempt) -> SourceClaim {
    match a {
        ClaimAttempt::Claimed(c) => c,
        ClaimAttempt::Held(h) => panic!("expected a claim, the mailbox is held by {h}"),
    }
}

pub async fn source_claims_and_fencing(store: Arc<dyn Store>) {
    let key = "alice@pop.example:110";
    let lease = Duration::from_secs(60);
    let a = claimed(store.claim_source(key, &who("first", 10), lease, None).await.unwrap());

    // A second claimant is told who holds the mailbox, and since when.
    match store.claim_source(key, &who("second", 11), lease, None).await.unwrap() {
        ClaimAttempt::Held(h) => {
            assert_eq!((h.holder.as_str(), h.host.as_str(), h.pid, h.generation), ("first (pid 10 on h1)", "h1", 10, a.generation));
            assert!(h.since.ends_with('Z') && h.expires_at > h.since, "{h:?}");
        }
        other => panic!("the second claim must be refused: {other:?}"),
    }
    // Other mailboxes are independent.
    claimed(store.claim_source("bob@pop.example:110", &who("second", 11), lease, None).await.unwrap());
    assert!(store.renew_source(&a, lease).await.unwrap());

    // Run A writes under its claim.
    let job = store.ensure_job("k", "pop3 alice@pop.example:110", "imap x@y:143/INBOX").await.unwrap();
    let run_a = store.start_run(job, false).await.unwrap();
    store.fence_run(run_a, &a).await.unwrap();
    store.record_listed(job, run_a, &[("u1".into(), 10), ("u2".into(), 20)]).await.unwrap();

    // A taker-over naming the holder's generation (a dead holder) gets a newer generation…
    let b = claimed(store.claim_source(key, &who("second", 11), lease, Some(a.generation)).await.unwrap());
    assert!(b.generation > a.generation);
    // …and run A is fenced off: every ledger write fails and changes nothing.
    let done = CopyDone { uidl: "u1".into(), dest_uid: Some(1), dest_uidvalidity: None, found_at_destination: false };
    let err = store.mark_copied(job, run_a, std::slice::from_ref(&done)).await.unwrap_err();
    assert!(matches!(err, StoreError::Fenced(_)), "{err}");
    assert!(matches!(store.mark_failed(job, run_a, "u2", "x").await.unwrap_err(), StoreError::Fenced(_)));
    assert!(matches!(store.record_listed(job, run_a, &[("u3".into(), 1)]).await.unwrap_err(), StoreError::Fenced(_)));
    assert!(!store.renew_source(&a, lease).await.unwrap(), "a superseded claim cannot be renewed");
    let ledger = store.ledger(job).await.unwrap();
    assert_eq!(ledger.len(), 2, "nothing written by the fenced run");
    assert!(ledger.iter().all(|e| e.state == LedgerState::Listed));
    assert_eq!(ledger.iter().find(|e| e.uidl == "u2").unwrap().list_size, Some(20));

    // Run B writes; releasing its claim lets the next run in at once (no waiting for expiry).
    let run_b = store.start_run(job, false).await.unwrap();
    store.fence_run(run_b, &b).await.unwrap();
    store.mark_copied(job, run_b, &[done]).await.unwrap();
    store.release_source(&a).await.unwrap(); // a stale release changes nothing
    assert!(matches!(store.claim_source(key, &who("third", 12), lease, None).await.unwrap(), ClaimAttempt::Held(_)));
    store.release_source(&b).await.unwrap();
    let c = claimed(store.claim_source(key, &who("third", 12), lease, None).await.unwrap());
    assert!(c.generation > b.generation, "generations never go back, even after a release");

    // An expired claim is claimable without naming it.
    let short = claimed(store.claim_source("carol@pop.example:110", &who("x", 1), Duration::from_millis(1), None).await.unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let next = claimed(store.claim_source("carol@pop.example:110", &who("y", 2), lease, None).await.unwrap());
    assert_eq!(next.generation, short.generation + 1);

    // A reused UIDL: the old row is kept under another name, the UIDL gets a fresh row.
    let run_c = store.start_run(job, false).await.unwrap();
    store.fence_run(run_c, &c).await.unwrap();
    store.supersede_reused(job, run_c, "u1", "UIDL u1 now names other bytes").await.unwrap();
    store.record_listed(job, run_c, &[("u1".into(), 99)]).await.unwrap();
    let ledger = store.ledger(job).await.unwrap();
    let old = ledger.iter().find(|e| e.uidl == mailferry_store::superseded_name("u1", run_c)).expect("old row kept");
    assert_eq!(old.state, LedgerState::Copied);
    let new = ledger.iter().find(|e| e.uidl == "u1").unwrap();
    assert_eq!((new.state, new.list_size), (LedgerState::Listed, Some(99)));
}

/// `ledger_where`: what a run reads instead of the whole ledger.
pub async fn ledger_queries(store: Arc<dyn Store>) {
    use mailferry_store::{CopyIntent, LedgerQuery};
    let job = store.ensure_job("q", "pop3 q@h:110", "imap q@h:143/INBOX").await.unwrap();
    assert!(store.ledger_where(job, LedgerQuery::AnyOne).await.unwrap().is_empty());
    let run = store.start_run(job, false).await.unwrap();
    let uidls: Vec<String> = (0..1200).map(|i| format!("u{i}")).collect();
    store.record_listed(job, run, &uidls.iter().map(|u| (u.clone(), 5)).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(store.ledger_where(job, LedgerQuery::AnyOne).await.unwrap().len(), 1);
    let intent = |u: &str, digest: &str| CopyIntent {
        uidl: u.into(),
        size: 5,
        digest: digest.into(),
        wire_digest: digest.into(),
        wire_size: 5,
        normalized: false,
        message_id: None,
        internal_date: None,
        internal_date_source: "retrieved",
    };
    store.mark_copying(job, run, &[intent("u1", "d-twin"), intent("u2", "d-twin"), intent("u3", "d-other")]).await.unwrap();
    let done = |u: &str| CopyDone { uidl: u.into(), dest_uid: None, dest_uidvalidity: None, found_at_destination: false };
    store.mark_copied(job, run, &[done("u1"), done("u3")]).await.unwrap();

    let some = store.ledger_where(job, LedgerQuery::Uidls(&uidls[..3])).await.unwrap();
    let mut got: Vec<&str> = some.iter().map(|e| e.uidl.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["u0", "u1", "u2"]);
    assert!(store.ledger_where(job, LedgerQuery::Uidls(&[])).await.unwrap().is_empty());
    assert!(store.ledger_where(job, LedgerQuery::Uidls(&["nope".to_string()])).await.unwrap().is_empty());
    let doubt = store.ledger_where(job, LedgerQuery::InDoubt).await.unwrap();
    assert_eq!(doubt.iter().map(|e| e.uidl.as_str()).collect::<Vec<_>>(), ["u2"]);
    let twins = store.ledger_where(job, LedgerQuery::CopiedWithDigests(&["d-twin".to_string()])).await.unwrap();
    assert_eq!(twins.iter().map(|e| (e.uidl.as_str(), e.state)).collect::<Vec<_>>(), [("u1", LedgerState::Copied)]);
}

/// Read-back results (issue 14): a match makes a copied row `verified`; a mismatch keeps it
/// `copied`, with the error reported as a failure of the run; only copied rows change.
pub async fn readback_story(store: Arc<dyn Store>) {
    use mailferry_model::VerifyLevel;
    use mailferry_store::{CopyIntent, ReadBackResult};
    let job = store.ensure_job("r", "pop3 r@h:110", "imap r@h:143/INBOX").await.unwrap();
    let run = store.start_run(job, false).await.unwrap();
    let uidls = ["a", "b", "c"];
    store.record_listed(job, run, &uidls.iter().map(|u| (u.to_string(), 5)).collect::<Vec<_>>()).await.unwrap();
    let intent = |u: &str| CopyIntent {
        uidl: u.into(),
        size: 5,
        digest: format!("d-{u}"),
        wire_digest: format!("d-{u}"),
        wire_size: 5,
        normalized: false,
        message_id: None,
        internal_date: None,
        internal_date_source: "retrieved",
    };
    store.mark_copying(job, run, &[intent("a"), intent("b")]).await.unwrap();
    let done = |u: &str| CopyDone { uidl: u.into(), dest_uid: Some(1), dest_uidvalidity: Some(9), found_at_destination: false };
    store.mark_copied(job, run, &[done("a"), done("b")]).await.unwrap();
    let result = |u: &str, error: Option<&str>| ReadBackResult {
        uidl: u.into(),
        readback_digest: Some(format!("read-{u}")),
        level: VerifyLevel::Exact,
        error: error.map(str::to_owned),
    };
    store
        .record_readback(job, run, &[result("a", None), result("b", Some("digest mismatch")), result("c", None)])
        .await
        .unwrap();
    let state = |l: &[mailferry_store::LedgerEntry], u: &str| l.iter().find(|e| e.uidl == u).unwrap().state;
    let ledger = store.ledger(job).await.unwrap();
    assert_eq!(state(&ledger, "a"), LedgerState::Verified);
    assert_eq!(state(&ledger, "b"), LedgerState::Copied, "a mismatch stays copied");
    assert_eq!(state(&ledger, "c"), LedgerState::Listed, "never copied, never verified");
    let counts = store.run_counts(job, run).await.unwrap();
    assert_eq!(counts.failed, vec![("b".to_string(), "digest mismatch".to_string())]);
    assert_eq!(counts.copied, 2);
    // Verified rows may be deleted; the job's counts treat them as copied.
    store.mark_source_deleted(job, run, &["a".to_string()]).await.unwrap();
    assert_eq!(state(&store.ledger(job).await.unwrap(), "a"), LedgerState::SourceDeleted);
    let jc = store.job_counts(job).await.unwrap();
    assert_eq!((jc.copied, jc.deleted), (2, 1));
}
