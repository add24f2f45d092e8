//! Archive verify and export runs are queued jobs (issue 15: one job system): the API only
//! records and queues them; a worker process claims them under a lease like a migration
//! job. So a run waits for a worker, can be cancelled through its job, streams its state
//! changes, and finishes on whichever worker takes it.

use std::time::Duration;

use serde_json::json;

use crate::common::server::{job_body, Server};
use crate::common::{Lab, SRC_PW};

#[tokio::test(flavor = "multi_thread")]
async fn archive_runs_wait_for_a_worker_cancel_through_their_job_and_stream_their_states() {
    let lab = Lab::start();
    lab.dovecot.add_user("alice", SRC_PW);
    lab.dovecot.seed("alice", &[b"Subject: one\r\n\r\nfirst\r\n".to_vec(), b"Subject: two\r\n\r\nsecond\r\n".to_vec()]);
    // An API process without workers, and a worker process beside it.
    let mut server = Server::start(&lab.dovecot, None, &[], &["--no-workers"]);
    let api = server.client();
    let worker = server.spawn_worker(&[]);
    let mut body = job_body(&lab.dovecot, "alice", "dst", "keep");
    body["target"] = json!({"protocol": "archive", "archive": "legal"});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let job = api.wait_state(job["id"].as_i64().unwrap(), &["succeeded", "failed", "partial"], 90).await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}", server.logs());
    assert!(server.terminate_worker(worker, Duration::from_secs(20)).success());

    // No worker: the run is queued, shown as running with its job, and the API process
    // does not run it.
    let (status, run, text) = api.post("/api/v1/archives/legal/verify", &json!({})).await;
    assert_eq!(status, 202, "{text}");
    let (run_id, job_id) = (run["id"].as_u64().unwrap(), run["job_id"].as_i64().expect("the run's job"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, run, _) = api.get(&format!("/api/v1/archives/legal/verify/{run_id}")).await;
    assert_eq!((run["state"].as_str(), run["job_id"].as_i64()), (Some("running"), Some(job_id)), "{run}");
    assert_eq!(api.job(job_id).await["state"], "queued");
    // Archive runs are not migration jobs: not in the job list.
    let (_, list, _) = api.get("/api/v1/jobs").await;
    assert!(list["items"].as_array().unwrap().iter().all(|j| j["id"] != job_id), "{list}");

    // Cancelled through its job: the run is failed with the reason.
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{job_id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let (_, run, _) = api.get(&format!("/api/v1/archives/legal/verify/{run_id}")).await;
    assert_eq!(run["state"], "failed", "{run}");
    // Pausing or rerunning an archive run does not apply.
    let (status, _, _) = api.post(&format!("/api/v1/jobs/{job_id}/rerun"), &json!({})).await;
    assert_eq!(status, 409);

    // The next run waits too, until a worker starts: then it is claimed and finishes, and
    // its job's events tell every state change.
    let (status, run, text) = api.post("/api/v1/archives/legal/verify", &json!({})).await;
    assert_eq!(status, 202, "{text}");
    let (run_id, job_id) = (run["id"].as_u64().unwrap(), run["job_id"].as_i64().unwrap());
    let worker = server.spawn_worker(&[]);
    let run = api.wait_run(&format!("/api/v1/archives/legal/verify/{run_id}")).await;
    assert_eq!(run["state"], "done", "{run}\n{}", server.logs());
    assert_eq!((run["report"]["ok"].as_bool(), run["report"]["blobs_checked"].as_u64()), (Some(true), Some(2)), "{run}");
    assert_eq!(run["progress"], json!({"done": 2, "total": 2}));
    let events = api.events(job_id, 30).await;
    let states: Vec<&str> = events.iter().filter(|(e, _)| e == "state").filter_map(|(_, d)| d["state"].as_str()).collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "{events:?}");
    assert!(server.worker_log(worker).contains("archive run finished"), "the worker ran it:\n{}", server.worker_log(worker));
    assert!(!server.logs().replace(&server.worker_log(worker), "").contains("archive run finished"), "only the worker ran it");
}
