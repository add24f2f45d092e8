//! Hostile server bytes through the whole engine: no panic, no hang past the timeouts, and
//! a stop requested while pipelined RETRs are in flight ends `cancelled`, not `failed`.

use std::time::Duration;

use mailferry_engine::{run_job, Outcome, Progress};
use mailferry_model::DeletePolicy;
use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript, ANY_CONN};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::lying::{config, job, messages, setup};

/// Issue 13 defect 1: a CAPA line led by Unicode whitespace panicked the parser (the CLI
/// exited 101, a service job stayed `running` forever).
#[tokio::test]
async fn a_capa_line_led_by_unicode_whitespace_does_not_panic_the_run() {
    let s = setup().await;
    let msgs = messages(3, "capa");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    let capa = "+OK\r\n\u{3000}\u{3000}\u{3000}\u{3000}\u{3000}IMPLEMENTATION odd\r\nUIDL\r\nUSER\r\n.\r\n";
    cfg.script = FakeScript { garbage_after_command: Some((ANY_CONN, "CAPA".into(), capa.into())), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::Keep), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied), (Outcome::Succeeded, 3));
}

/// Issue 13 defect 7: a cancel (or pause, or SIGTERM) while pipelined RETRs are in flight
/// made QUIT read a RETR response and the job end `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_with_retrs_in_flight_ends_cancelled_and_deletes_nothing() {
    let s = setup().await;
    let msgs = messages(300, "stop");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = FakeScript { pipelining: true, ..Default::default() };
    let fake = FakePop3::start(cfg);
    let mut config = config();
    config.batch_messages = 2;
    let (tx, mut rx) = watch::channel(Progress::default());
    let cancel = CancellationToken::new();
    let drain = job(&s, fake.port(), DeletePolicy::AfterVerified);
    let store = s.store.clone();
    let stop = cancel.clone();
    let run = tokio::spawn(async move { run_job(store, &drain, &config, Some(tx), stop).await });
    rx.wait_for(|p| p.copied >= 4).await.unwrap();
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run stops").unwrap().unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled, "{report:?}");
    assert_eq!(fake.remaining().len(), msgs.len(), "a cancelled run deletes nothing");
    assert!(fake.commands().iter().any(|c| c == "QUIT"), "the session ended with QUIT");
}
