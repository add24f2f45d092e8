//! A job's schedule edited after creation (issue 17): `PUT` and `DELETE /jobs/{id}/schedule`.

use std::time::Duration;

use mailferry_model::JobState;
use mailferry_store::{ClaimLimits, Release};
use serde_json::{json, Value};

use crate::{job_body, TestApp};

fn scheduled(user: &str, schedule: Value) -> Value {
    let mut body = job_body(user);
    body["schedule"] = schedule;
    body
}

async fn put(app: &TestApp, id: i64, body: &Value) -> crate::Resp {
    let path = format!("/api/v1/jobs/{id}/schedule");
    app.send(app.req(reqwest::Method::PUT, &path, Some(&app.write)).json(body)).await
}

async fn delete(app: &TestApp, id: i64) -> crate::Resp {
    let path = format!("/api/v1/jobs/{id}/schedule");
    app.send(app.req(reqwest::Method::DELETE, &path, Some(&app.write))).await
}

#[tokio::test]
async fn schedules_are_changed_and_ended() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&scheduled("ann", json!({"every": "6h", "not_before": "2999-01-01T00:00:00Z"}))).await;

    // A waiting job: the new cadence and start, and the next run moved to the new start.
    let r = put(&app, id, &json!({"every": "1d", "not_before": "2998-01-01T00:00:00+01:00", "until": "2999-06-01T00:00:00Z"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.no_secrets();
    let job = r.json();
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["schedule"], json!({"every": "1d", "not_before": "2997-12-31T23:00:00.000Z", "until": "2999-06-01T00:00:00.000Z"}));
    assert_eq!(job["next_run_at"], "2997-12-31T23:00:00.000Z");
    assert_eq!(app.get(&format!("/api/v1/jobs/{id}"), &app.read).await.json()["schedule"]["every"], "1d");

    // Ended before its first pass: an ordinary queued job.
    let r = delete(&app, id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let job = r.json();
    assert_eq!((job["state"].clone(), job["schedule"].clone(), job["next_run_at"].clone()), (json!("queued"), Value::Null, Value::Null));

    // A finished job given a schedule waits for its next pass; ended, it is finished again.
    let limits = ClaimLimits { per_source_host: 4, per_target_host: 4 };
    let claimed = app.store.claim_job("w1", Duration::from_secs(60), limits).await.unwrap().expect("claimable");
    assert_eq!(claimed.job.id, id);
    let done = Release { state: JobState::Succeeded, error: None, not_before: None };
    assert!(app.store.release_job(id, "w1", &done).await.unwrap());
    let r = put(&app, id, &json!({"every": "6h"})).await;
    let job = r.json();
    assert_eq!((job["state"].clone(), job["schedule"].clone()), (json!("scheduled"), json!({"every": "6h"})), "{}", r.text);
    assert!(job["next_run_at"].is_string() && job["finished_at"].is_null(), "{job}");
    let job = delete(&app, id).await.json();
    assert_eq!((job["state"].clone(), job["schedule"].clone()), (json!("succeeded"), Value::Null), "{job}");
    assert!(job["finished_at"].is_string() && job["next_run_at"].is_null(), "{job}");
}

#[tokio::test]
async fn bad_schedules_unknown_jobs_and_conflicts() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("bob")).await;
    let r = put(&app, id, &json!({"every": "6 hours", "not_before": "soon"})).await;
    let p = r.problem(422, "/problems/validation");
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["schedule.every", "schedule.not_before"]);
    let p = put(&app, id, &json!({"every": "6h", "until": "2001-01-01T00:00:00Z"})).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["field"], "schedule.until", "{p}");
    assert_eq!(app.get(&format!("/api/v1/jobs/{id}"), &app.read).await.json()["schedule"], Value::Null, "unchanged");

    put(&app, 424242, &json!({"every": "6h"})).await.problem(404, "/problems/not-found");
    delete(&app, 424242).await.problem(404, "/problems/not-found");
    let path = format!("/api/v1/jobs/{id}/schedule");
    let r = app.send(app.req(reqwest::Method::PUT, &path, Some(&app.read)).json(&json!({"every": "6h"}))).await;
    assert_eq!(r.status, 403, "read scope: {}", r.text);

    // A CLI job (driven by its own process) and a job with a cutover: refused.
    let cli = app.store.ensure_job("cli-key", "pop3 carl@pop.example.com:995", "imap carl@imap.example.com").await.unwrap();
    put(&app, cli, &json!({"every": "6h"})).await.problem(409, "/problems/conflict");
    let cut = app.create_job(&scheduled("dora", json!({"every": "6h", "not_before": "2999-01-01T00:00:00Z"}))).await;
    let r = app.post_json(&format!("/api/v1/jobs/{cut}/cutover"), &app.write, &json!({"delete": "keep"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    put(&app, cut, &json!({"every": "1h"})).await.problem(409, "/problems/conflict");
    delete(&app, cut).await.problem(409, "/problems/conflict");
}
