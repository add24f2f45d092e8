//! One run per mailbox (DESIGN.md §2 invariant 8): a run whose claim on its source mailbox
//! is taken over stops between messages, deletes nothing, and its ledger writes are refused.

use std::time::Duration;

use mailferry_engine::{run_job, EngineError, Progress};
use mailferry_model::DeletePolicy;
use mailferry_store::{ClaimAttempt, ClaimHolder, Store};
use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lying::{config, job, messages, setup, Setup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_claim_is_taken_over_stops_without_deleting() {
    let s = setup().await;
    let (run, fake, msgs) = a_run_under_way(&s, "fence").await;
    // Once copies are landing, another run takes the mailbox over (as one whose holder
    // looked dead would).
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

/// Issue 13, "a run that cannot renew before expiry stops between messages without DELE":
/// the store refuses every renewal of the claim (nobody took it over; the database just says
/// no). The run stops before its lease could run out, sends no DELE, drains its pipelined
/// RETRs and QUITs, and the run is recorded `failed` saying the claim was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_renew_its_claim_stops_without_deleting() {
    let s = setup().await;
    let (run, fake, msgs) = a_run_under_way(&s, "renew").await;
    // From now on the store refuses to renew (or release) any source claim.
    let url = format!("sqlite://{}", s.state_path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query("CREATE TRIGGER refuse_renewal BEFORE UPDATE ON source_claims BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        .execute(&mut conn)
        .await
        .unwrap();
    let refused_at = std::time::Instant::now();

    let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the run stops").unwrap();
    let stopped_after = refused_at.elapsed();
    let err = result.expect_err("a run that lost its claim does not report success");
    assert!(matches!(err, EngineError::ClaimLost { .. }), "{err}");
    let commands = fake.commands();
    assert!(!commands.iter().any(|c| c.starts_with("DELE")), "no DELE: {commands:?}");
    assert_eq!(commands.last().map(String::as_str), Some("QUIT"), "the session ends with QUIT");
    assert_eq!(fake.remaining().len(), msgs.len(), "nothing was deleted at the source");
    let at_dest = s.dovecot.messages("dst").len();
    assert!(at_dest < msgs.len(), "the run stopped before the end ({at_dest} copied)");
    assert!(stopped_after < Duration::from_secs(10), "stopped soon after renewals failed ({stopped_after:?})");
    let (outcome, error): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT outcome, error FROM runs ORDER BY id DESC LIMIT 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(outcome.as_deref(), Some("failed"));
    assert!(error.as_deref().is_some_and(|e| e.contains("claim")), "{error:?}");
}

type RunHandle = tokio::task::JoinHandle<Result<mailferry_engine::RunReport, EngineError>>;

/// A 400-message run with `after-verified` from a pipelining scripted server, in small
/// batches under a short lease (so what the test does to its claim lands mid-run and is
/// noticed fast), returned once 8 copies have landed.
async fn a_run_under_way(s: &Setup, tag: &str) -> (RunHandle, FakePop3, Vec<Vec<u8>>) {
    let msgs = messages(400, tag);
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = FakeScript { pipelining: true, ..Default::default() };
    let fake = FakePop3::start(cfg);
    let drain = job(s, fake.port(), DeletePolicy::AfterVerified);
    let mut config = config();
    config.batch_messages = 4;
    config.claim.lease = Duration::from_millis(600);
    let (tx, mut rx) = watch::channel(Progress::default());
    let store = s.store.clone();
    let run = tokio::spawn(async move { run_job(store, &drain, &config, Some(tx), CancellationToken::new()).await });
    rx.wait_for(|p| p.copied >= 8).await.unwrap();
    (run, fake, msgs)
}
