//! `/metrics` of a real `mailferry serve` while a real job drains the Dovecot lab: scraped
//! before, during and after, parsed, and checked to move as it should.

use std::time::{Duration, Instant};

use crate::common::server::*;
use crate::common::*;
use crate::common::prom::{scrape, Scrape};
use mailferry_tests::realistic;

async fn metrics_move_with_a_real_job(database_url: Option<&str>) {
    let lab = Lab::start();
    let msgs = realistic(400, 11);
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, database_url, &[], &[]);
    let api = server.client();

    let before = scrape(&server.base).await;
    assert_eq!(before.sum("mailferry_database_up", &[]), 1.0);
    assert_eq!(before.sum("mailferry_jobs", &[]), 0.0);
    assert_eq!(before.sum("mailferry_jobs", &[("state", "succeeded")]), 0.0);
    assert!(before.has("mailferry_queue_depth") && before.has("mailferry_ledger_messages"));
    let copied = |s: &Scrape| s.sum("mailferry_messages_total", &[("target", "imap"), ("outcome", "copied")]);
    let posts = |s: &Scrape| {
        s.sum("mailferry_http_requests_total", &[("method", "POST"), ("route", "/api/v1/jobs"), ("status", "201")])
    };
    assert_eq!(copied(&before), 0.0);

    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();

    // During: the job runs, its sessions are open, the ledger fills, the queue is empty.
    let deadline = Instant::now() + Duration::from_secs(120);
    let during = loop {
        let s = scrape(&server.base).await;
        let running = s.sum("mailferry_jobs", &[("state", "running")]);
        // Copies become verified once read back (issue 14): count both.
        let ledger_copied =
            s.sum("mailferry_ledger_messages", &[("state", "copied")]) + s.sum("mailferry_ledger_messages", &[("state", "verified")]);
        if running == 1.0 && ledger_copied > 0.0 && ledger_copied < 400.0 {
            break s;
        }
        let job = api.job(id).await;
        assert!(job["state"] != "succeeded", "the job finished before a scrape saw it running; scrape faster");
        assert!(Instant::now() < deadline, "never saw the job running: {job}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(during.sum("mailferry_queue_depth", &[]), 0.0, "the job left the queue");
    assert_eq!(during.sum("mailferry_cluster_sessions", &[("role", "source"), ("host", "127.0.0.1")]), 1.0);
    assert_eq!(during.sum("mailferry_cluster_sessions", &[("role", "target"), ("host", "127.0.0.1")]), 1.0);
    assert_eq!(during.sum("mailferry_sessions_active", &[("protocol", "pop3"), ("host", "127.0.0.1")]), 1.0);
    // The job appends through `worker.pipeline.append_sessions` (default 2) connections.
    assert_eq!(during.sum("mailferry_sessions_active", &[("protocol", "imap"), ("host", "127.0.0.1")]), 2.0);
    assert_eq!(during.sum("mailferry_jobs_claimed_total", &[("takeover", "false")]), 1.0);

    let job = api.wait_state(id, &["succeeded"], 180).await;
    assert_eq!(job["counts"]["copied"], 400);
    // The recorder and the cache settle within a second or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = scrape(&server.base).await;
        if s.sum("mailferry_jobs", &[("state", "succeeded")]) == 1.0 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(after.sum("mailferry_jobs", &[("state", "succeeded")]), 1.0, "jobs succeeded +1");
    assert_eq!(after.sum("mailferry_jobs", &[]), 1.0);
    assert_eq!(after.sum("mailferry_queue_depth", &[]), 0.0);
    assert_eq!(after.sum("mailferry_queue_oldest_age_seconds", &[]), 0.0);
    // Every copy was read back and matched (issue 14): verified, none merely copied.
    assert_eq!(after.sum("mailferry_ledger_messages", &[("state", "verified")]), 400.0);
    assert_eq!(after.sum("mailferry_ledger_messages", &[("state", "copied")]), 0.0);
    assert_eq!(copied(&after), 400.0, "copied messages = the mailbox's count");
    let bytes = after.sum("mailferry_message_bytes_total", &[("target", "imap"), ("outcome", "copied")]);
    let source_bytes: usize = msgs.iter().map(Vec::len).sum();
    assert!(bytes >= source_bytes as f64 * 0.9 && bytes > 0.0, "bytes {bytes} vs source {source_bytes}");
    assert_eq!(after.sum("mailferry_messages_total", &[("outcome", "failed")]), 0.0);
    assert_eq!(after.sum("mailferry_errors_total", &[]), 0.0);
    assert_eq!(after.sum("mailferry_sessions_active", &[]), 0.0, "every session closed");
    assert_eq!(after.sum("mailferry_cluster_sessions", &[]), 0.0);
    assert_eq!(after.sum("mailferry_jobs_finished_total", &[("state", "succeeded")]), 1.0);
    assert_eq!(after.sum("mailferry_lease_takeovers_total", &[]), 0.0);
    assert_eq!(posts(&after), posts(&before) + 1.0, "one job created over HTTP");
    let job_gets = after.sum("mailferry_http_requests_total", &[("method", "GET"), ("route", "/api/v1/jobs/{id}")]);
    assert!(job_gets >= 2.0, "the polls were counted by route template: {job_gets}");
    assert!(after.sum("mailferry_http_request_duration_seconds_count", &[("route", "/api/v1/jobs")]) >= 1.0);
    assert!(after.0.iter().all(|(_, labels, _)| labels.iter().all(|(_, v)| !v.contains(&format!("/jobs/{id}")))));

    // The same server audited the creation, with the socket peer as the client.
    let (status, audit, text) = api.get("/api/v1/audit").await;
    assert_eq!(status, 200, "{text}");
    let entry = &audit["items"][0];
    assert_eq!((entry["method"].as_str(), entry["route"].as_str()), (Some("POST"), Some("/api/v1/jobs")), "{audit}");
    assert_eq!(entry["target"], id.to_string());
    assert_eq!(entry["client"], "127.0.0.1", "serve passes the peer address: {audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_metrics_move_with_a_real_job() {
    metrics_move_with_a_real_job(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_metrics_move_with_a_real_job() {
    let pg = FreshPg::create();
    metrics_move_with_a_real_job(Some(&pg.url)).await;
}
