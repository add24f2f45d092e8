//! `worker.metrics_listen`: a worker-only process (`mailferry worker`, sharing PostgreSQL
//! with a `serve --no-workers`) serves its own `/metrics` and `/healthz`. A real job from
//! the Dovecot lab runs on that worker, and its claim and message counters move on the
//! worker's page, not the API's; SIGTERM stops the listener with the worker.

use std::time::{Duration, Instant};

use crate::common::server::*;
use crate::common::*;
use crate::common::prom::{scrape, Scrape};
use mailferry_tests::realistic;

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_own_metrics_and_stops_them_on_sigterm() {
    let lab = Lab::start();
    let msgs = realistic(25, 17);
    lab.dovecot.seed("src", &msgs);
    let pg = FreshPg::create();
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &[], &["--no-workers"]);
    let api = server.client();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let worker = server.spawn_worker(&[("MAILFERRY_WORKER__METRICS_LISTEN", listen.as_str())]);

    // The listener comes up with the worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.text().await.unwrap(), "ok");
            break;
        }
        assert!(Instant::now() < deadline, "the worker never listened on {listen}; log:\n{}", server.worker_log(worker));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.worker_log(worker).contains(&format!("http://{listen}/metrics")), "{}", server.worker_log(worker));

    let claims = |s: &Scrape| s.sum("mailferry_jobs_claimed_total", &[]);
    let copied = |s: &Scrape| s.sum("mailferry_messages_total", &[("target", "imap"), ("outcome", "copied")]);
    let before = scrape(&base).await;
    assert_eq!(claims(&before), 0.0);
    assert_eq!(copied(&before), 0.0);
    // This process's figures only: the cluster figures come from the API's /metrics.
    assert!(!before.has("mailferry_database_up") && !before.has("mailferry_jobs"), "cluster figures on a worker page");

    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let job = api.wait_state(id, &["succeeded"], 120).await;
    assert_eq!(job["counts"]["copied"], 25, "{job}");

    let after = scrape(&base).await;
    assert_eq!(claims(&after), 1.0, "the worker claimed the job");
    assert_eq!(after.sum("mailferry_jobs_claimed_total", &[("takeover", "false")]), 1.0);
    assert_eq!(copied(&after), 25.0, "copied messages = the mailbox's count");
    let bytes = after.sum("mailferry_message_bytes_total", &[("target", "imap"), ("outcome", "copied")]);
    let source_bytes: usize = msgs.iter().map(Vec::len).sum();
    assert!(bytes >= source_bytes as f64 * 0.9, "bytes {bytes} vs source {source_bytes}");
    assert_eq!(after.sum("mailferry_messages_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(after.sum("mailferry_jobs_finished_total", &[("state", "succeeded")]), 1.0);
    assert_eq!(after.sum("mailferry_sessions_active", &[]), 0.0, "every session closed");

    // The API process ran no worker: its process counters stayed put, its cluster figures
    // saw the job.
    let api_page = scrape(&server.base).await;
    assert_eq!(claims(&api_page), 0.0);
    assert_eq!(copied(&api_page), 0.0);
    // Read back and matched (issue 14): verified.
    assert_eq!(api_page.sum("mailferry_ledger_messages", &[("state", "verified")]), 25.0);

    // SIGTERM: the worker drains, exits 0, and its listener is gone.
    let status = server.terminate_worker(worker, Duration::from_secs(30));
    assert!(status.success(), "worker exit {status:?}; log:\n{}", server.worker_log(worker));
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "the listener outlived the worker");
}
