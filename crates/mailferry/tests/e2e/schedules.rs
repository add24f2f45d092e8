//! Schedules and cutover end to end (issue 17): a batch with a schedule runs delta passes
//! against the lab Dovecot at a test cadence (`every: "2s"`), mail seeded between passes
//! arrives in the next pass only, the schedule survives a restart of the service, and a
//! cutover's final pass deletes at the source exactly what was verified, as the batch
//! report shows per mailbox. On SQLite and PostgreSQL.

use std::time::{Duration, Instant};

use crate::common::server::*;
use crate::common::*;
use serde_json::{json, Value};

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n").into_bytes()).collect()
}

/// Poll the job until `done` holds (or panic after `secs`).
async fn wait_for(api: &Api, id: i64, secs: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job = api.job(id).await;
        if done(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id}: {what} not reached after {secs}s: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn copied(job: &Value) -> u64 {
    job["counts"]["copied"].as_u64().unwrap_or(0)
}

async fn scheduled_batch_runs_delta_passes_and_cuts_over(database_url: Option<&str>) {
    let lab = Lab::start();
    lab.dovecot.add_user("src2", SRC_PW);
    lab.dovecot.add_user("dst2", DST_PW);
    let first = small(5, "first");
    lab.dovecot.seed("src", &first);
    let second = small(3, "second");
    lab.dovecot.seed("src2", &second);
    let mut server = Server::start(&lab.dovecot, database_url, &[], &[]);
    let api = server.client();

    // The batch's schedule (every 2 s) for the first job; the second has its own (hourly).
    let mut hourly = job_body(&lab.dovecot, "src2", "dst2", "keep");
    hourly["schedule"] = json!({"every": "1h"});
    let body = json!({
        "name": "phased",
        "schedule": {"every": "2s", "until": "2999-01-01T00:00:00Z"},
        "jobs": [job_body(&lab.dovecot, "src", "dst", "keep"), hourly],
    });
    let (status, batch, text) = api.post("/api/v1/batches", &body).await;
    assert_eq!(status, 201, "{text}");
    let batch_id = batch["id"].as_i64().unwrap();
    let (fast, slow) = (batch["jobs"][0].as_i64().unwrap(), batch["jobs"][1].as_i64().unwrap());

    // Pre-stage: each job's first pass, then scheduled with its next run.
    let job = wait_for(&api, slow, 60, "first pass", |j| j["state"] == "scheduled").await;
    assert_eq!((copied(&job), job["runs"].as_i64()), (3, Some(1)));
    assert_eq!(job["schedule"]["every"], "1h");
    assert!(job["next_run_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{job}");
    let job = wait_for(&api, fast, 60, "first pass", |j| j["state"] == "scheduled" && copied(j) == 5).await;
    assert_eq!(job["schedule"], json!({"every": "2s", "until": "2999-01-01T00:00:00.000Z"}));
    assert_same_messages(&first, &lab.dst());
    assert_eq!(lab.src().len(), 5, "pre-stage passes keep the source");

    // A delta pass copies only what arrived since.
    let runs = job["runs"].as_i64().unwrap();
    let late = small(2, "late");
    lab.dovecot.seed("src", &late);
    let job = wait_for(&api, fast, 60, "delta pass", |j| copied(j) == 7 && j["state"] == "scheduled").await;
    assert!(job["runs"].as_i64().unwrap() > runs, "a new pass: {job}");
    let mut all: Vec<Vec<u8>> = first.iter().chain(&late).cloned().collect();
    assert_same_messages(&all, &lab.dst());

    // The schedule lives in the database: a restart between passes keeps it.
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "graceful exit: {status:?}");
    let later = small(1, "after-restart");
    lab.dovecot.seed("src", &later);
    server.restart();
    let api = server.client();
    let job = wait_for(&api, fast, 60, "pass after restart", |j| copied(j) == 8 && j["state"] == "scheduled").await;
    all.extend(later);
    assert_same_messages(&all, &lab.dst());
    assert_eq!(job["counts"]["deleted"], 0);

    // One more message for the hourly job: only its final pass can copy it.
    let last = small(1, "last");
    lab.dovecot.seed("src2", &last);

    // Bad requests change nothing.
    let (status, _, text) = api.post(&format!("/api/v1/batches/{batch_id}/cutover"), &json!({"delete": "now"})).await;
    assert_eq!(status, 422, "{text}");
    let (status, _, _) = api.post("/api/v1/batches/999999/cutover", &json!({"delete": "keep"})).await;
    assert_eq!(status, 404);

    // Cutover: one final pass now, deleting at the source what was verified.
    let (status, cut, text) = api.post(&format!("/api/v1/batches/{batch_id}/cutover"), &json!({"delete": "after-verified"})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(cut["jobs"], json!([fast, slow]), "{cut}");
    assert_eq!(cut["refused"], json!([]));
    for id in [fast, slow] {
        let job = api.wait_state(id, &["succeeded", "partial", "failed"], 120).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["cutover"]["delete"], "after-verified");
        assert!(job["cutover"]["started_at"].is_string(), "{job}");
        assert!(job["next_run_at"].is_null(), "the schedule is over: {job}");
    }
    assert!(lab.src().is_empty(), "the final pass deleted the verified copies' originals");
    assert!(lab.dovecot.messages("src2").is_empty());
    assert_same_messages(&all, &lab.dst());
    let both: Vec<Vec<u8>> = second.iter().chain(&last).cloned().collect();
    assert_same_messages(&both, &lab.dovecot.messages("dst2"));

    // The schedule ended: no pass runs after the final one.
    let runs = api.job(fast).await["runs"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = api.job(fast).await;
    assert_eq!((job["state"].as_str(), &job["runs"]), (Some("succeeded"), &runs));

    // The batch report: per mailbox, what the final pass copied and deleted.
    let r = api
        .http
        .get(format!("{}/api/v1/batches/{batch_id}/report", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    let csv = r.text().await.unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column: {csv}"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    let cell = |row: usize, name: &str| rows[row][col(name)].to_owned();
    assert_eq!((cell(0, "job_id"), cell(0, "cutover_delete")), (fast.to_string(), "after-verified".into()));
    assert_eq!((cell(0, "cutover_copied"), cell(0, "cutover_deleted")), ("0".into(), "8".into()), "{csv}");
    assert_eq!((cell(1, "cutover_copied"), cell(1, "cutover_deleted")), ("1".into(), "4".into()), "{csv}");
    assert!(!cell(1, "cutover_started_at").is_empty());

    // Job events show each pass: scheduled between them, the final state at the end.
    let events = api.events(fast, 30).await;
    let states: Vec<&str> = events.iter().filter(|(e, _)| e == "state").filter_map(|(_, d)| d["state"].as_str()).collect();
    assert_eq!(&states[..3], ["queued", "running", "scheduled"], "{states:?}");
    assert_eq!(states.last(), Some(&"succeeded"), "{states:?}");
    assert!(states.iter().filter(|s| **s == "scheduled").count() >= 3, "a scheduled state after each delta pass: {states:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_scheduled_batch_runs_delta_passes_and_cuts_over() {
    scheduled_batch_runs_delta_passes_and_cuts_over(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scheduled_batch_runs_delta_passes_and_cuts_over() {
    let pg = FreshPg::create();
    scheduled_batch_runs_delta_passes_and_cuts_over(Some(&pg.url)).await;
}

/// A job without a schedule can be cut over once finished (the final pass as a rerun), and
/// a cutover that would delete unverified copies is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_cut_over_as_a_rerun() {
    let lab = Lab::start();
    let msgs = small(4, "m");
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();
    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    assert!(job["schedule"].is_null() && job["next_run_at"].is_null(), "{job}");
    api.wait_state(id, &["succeeded"], 60).await;
    assert_eq!(lab.src().len(), 4);

    let mut body = job_body(&lab.dovecot, "src", "dst", "keep");
    body["schedule"] = json!({"every": "6 hours", "not_before": "soon"});
    let (status, problem, _) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = problem["errors"].as_array().unwrap().iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["schedule.every", "schedule.not_before"], "{problem}");

    let (status, job, text) = api.post(&format!("/api/v1/jobs/{id}/cutover"), &json!({"delete": "after-verified"})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!((job["state"].as_str(), job["cutover"]["delete"].as_str()), (Some("queued"), Some("after-verified")));
    let job = api.wait_state(id, &["succeeded"], 60).await;
    assert_eq!((job["runs"].as_i64(), job["counts"]["deleted"].as_u64()), (Some(2), Some(4)));
    assert!(lab.src().is_empty());
    assert_same_messages(&msgs, &lab.dst());
}
