//! One run per mailbox (DESIGN.md §2 invariant 8): a run whose claim on its source mailbox
//! is taken over stops between messages, deletes nothing, and its ledger writes are refused.

use std::time::Duration;

use mailferry_engine::{run_job, EngineError, Progress};
use mailferry_model::DeletePolicy;
use mailferry_store::{ClaimAttempt, ClaimHolder, Store};
use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lying::{config, job, messages, setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_claim_is_taken_over_stops_without_deleting() {
    let s = setup().await;
    let msgs = messages(400, "fence");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = FakeScript { pipelining: true, ..Default::default() };
    let fake = FakePop3::start(cfg);
    let drain = job(&s, fake.port(), DeletePolicy::AfterVerified);
    let mut config = config();
    // Small batches and a short lease, so the takeover lands mid-run and is noticed fast.
    config.batch_messages = 4;
    config.claim.lease = Duration::from_millis(600);

    let (tx, mut rx) = watch::channel(Progress::default());
    let store = s.store.clone();
    let run = tokio::spawn(async move { run_job(store, &drain, &config, Some(tx), CancellationToken::new()).await });
    // Once copies are landing, another run takes the mailbox over (as one whose holder
    // looked dead would).
    rx.wait_for(|p| p.copied >= 8).await.unwrap();
    let key = format!("u@127.0.0.1:{}", fake.port());
    let intruder = ClaimHolder { holder: "intruder".into(), host: "elsewhere".into(), pid: 1 };
    let current = match s.store.claim_source(&key, &intruder, Duration::from_secs(60), None).await.unwrap() {
        ClaimAttempt::Held(h) => h.generation,
        ClaimAttempt::Claimed(_) => panic!("the running run holds the mailbox"),
    };
    assert!(matches!(
        s.store.claim_source(&key, &intruder, Duration::from_secs(60), Some(current)).await.unwrap(),
        ClaimAttempt::Claimed(_)
    ));

    let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the fenced run stops").unwrap();
    let err = result.expect_err("a fenced run does not report success");
    assert!(matches!(err, EngineError::ClaimLost { .. } | EngineError::Store(mailferry_store::StoreError::Fenced(_))), "{err}");
    assert_eq!(fake.remaining().len(), msgs.len(), "nothing was deleted at the source");
    let at_dest = s.dovecot.messages("dst").len();
    assert!(at_dest < msgs.len(), "the run stopped before the end ({at_dest} copied)");
    // Every copy at the destination is one the ledger knows of (copied or in doubt): the
    // next holder resolves the in-doubt ones against the destination, as after a crash.
    let ledger = s.store.ledger(1).await.unwrap();
    let known = ledger.iter().filter(|e| e.state.is_copied() || e.state == mailferry_model::LedgerState::Copying).count();
    assert!(known >= at_dest, "{known} ledger rows for {at_dest} copies");
}
