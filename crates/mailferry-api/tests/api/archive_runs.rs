//! Archive verify and export runs are work any write-scope token can start, so they are
//! limited: at most `archive_max_concurrent_runs` per archive queued or running at once,
//! counted over the job queue every process shares (429 `/problems/limit-reached` with
//! `Retry-After` beyond), and export files are deleted `archive_export_ttl_secs` after they
//! were written (download: 410). The runs are queued jobs: a worker runs them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailferry_api::ApiConfig;
use mailferry_archive::{Archive, Occurrence};
use mailferry_engine::{Worker, WorkerConfig};
use mailferry_model::ArchiveTask;
use mailferry_store::{ClaimLimits, ControlAction, TaskQueued};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::TestApp;

fn archive_dir(app: &TestApp, name: &str) -> PathBuf {
    app.archives.root().join(name)
}

/// Creates archive `name` with `messages` messages, as a job would (through the app's
/// archives: one instance per archive and process).
async fn seed(app: &TestApp, name: &str, messages: usize) -> Arc<Archive> {
    let archive = app.archives.get(name).await.unwrap();
    for i in 0..messages {
        let occurrence = Occurrence {
            source_host: "pop.example.com".into(),
            account: "alice".into(),
            uidl: format!("u{i}"),
            job_id: None,
            run_id: None,
            retrieved_at: chrono::Utc::now(),
        };
        let bytes = format!("From: a@example.com\r\nSubject: message {i}\r\n\r\nbody {i}\r\n").into_bytes();
        archive.put(bytes, occurrence).await.unwrap();
    }
    archive
}

/// A worker running the app's queued jobs (archive runs among them) until the test ends.
fn start_worker(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let config = WorkerConfig {
        id: "archive-runs-test".into(),
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(20),
        limits: ClaimLimits { per_source_host: 8, per_target_host: 8 },
        engine: Default::default(),
        plaintext_allowed: Arc::new(|_| true),
        extra_roots_pem: None,
        network: Arc::new(mailferry_model::NetworkPolicy::default()),
        archives: Arc::clone(&app.archives),
    };
    let worker = Worker::new(Arc::clone(&app.store), app.sealer.clone(), config);
    tokio::spawn(worker.run(CancellationToken::new()))
}

/// Polls a run until it is no longer `running`.
async fn wait_run(app: &TestApp, path: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let r = app.get(path, &app.read).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let run = r.json();
        if run["state"] != "running" {
            return run;
        }
        assert!(Instant::now() < until, "run still running: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn export_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("exports"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn concurrent_runs_per_archive_are_capped_across_processes_with_429_and_retry_after() {
    let app = TestApp::spawn_with(ApiConfig { archive_max_concurrent_runs: 2, ..ApiConfig::default() }).await;
    let a = seed(&app, "legal", 3).await;
    // Two runs another API process queued (no worker runs yet).
    let other = [a.run_started("verify", |_| None).await.unwrap(), a.run_started("export", |_| None).await.unwrap()];
    let tasks = [
        ArchiveTask::Verify { archive: "legal".into(), run: other[0], who: "other".into() },
        ArchiveTask::Export {
            archive: "legal".into(),
            run: other[1],
            who: "other".into(),
            query: json!({}),
            format: "mbox".into(),
            file: archive_dir(&app, "legal").join("x.mbox").display().to_string(),
        },
    ];
    let mut jobs = Vec::new();
    for t in &tasks {
        match app.store.enqueue_task(t, 2, None).await.unwrap() {
            TaskQueued::Queued(job) => jobs.push(job.id),
            TaskQueued::Busy(b) => panic!("busy: {b:?}"),
        }
    }

    let r = app.post_json("/api/v1/archives/legal/verify", &app.write, &json!({})).await;
    let p = r.problem(429, "/problems/limit-reached");
    assert_eq!(r.header("retry-after"), Some("15"), "{}", r.text);
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("[archive] max_concurrent_runs"), "{detail}");
    assert!(
        detail.contains(&format!("/api/v1/archives/legal/verify/{}", other[0]))
            && detail.contains(&format!("/api/v1/archives/legal/exports/{}", other[1])),
        "names the runs in progress: {detail}"
    );
    let r = app.post_json("/api/v1/archives/legal/exports", &app.write, &json!({"format": "mbox"})).await;
    r.problem(429, "/problems/limit-reached");
    assert!(export_files(&archive_dir(&app, "legal")).is_empty(), "a refused export writes nothing");
    // Another archive has its own places.
    seed(&app, "other", 1).await;
    let r = app.post_json("/api/v1/archives/other/verify", &app.write, &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);

    // One of the other process's runs is cancelled: a place is free again; a worker runs
    // what is queued.
    app.store.control(jobs[0], ControlAction::Cancel).await.unwrap();
    let _worker = start_worker(&app);
    let r = app.post_json("/api/v1/archives/legal/verify", &app.write, &json!({})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = wait_run(&app, r.header("location").unwrap()).await;
    assert_eq!(run["state"], "done", "{run}");
    // Finished runs give their place back.
    let r = app.post_json("/api/v1/archives/legal/exports", &app.write, &json!({"format": "mbox"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = wait_run(&app, r.header("location").unwrap()).await;
    assert_eq!((run["state"].as_str(), run["result"]["messages"].as_u64()), (Some("done"), Some(3)), "{run}");
}

#[tokio::test]
async fn export_files_are_deleted_after_their_ttl_and_their_download_answers_410() {
    let ttl = Duration::from_secs(2);
    let app = TestApp::spawn_with(ApiConfig { archive_export_ttl_secs: ttl.as_secs(), ..ApiConfig::default() }).await;
    seed(&app, "legal", 3).await;
    let dir = archive_dir(&app, "legal");
    let _worker = start_worker(&app);

    // Downloaded while fresh, then expired: 410, and the file and its manifest are gone.
    let r = app.post_json("/api/v1/archives/legal/exports", &app.write, &json!({"format": "mbox"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = wait_run(&app, r.header("location").unwrap()).await;
    assert_eq!(run["state"], "done", "{run}");
    let finished: chrono::DateTime<chrono::Utc> = run["finished_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = run["result"]["expires_at"].as_str().expect("expires_at").parse().unwrap();
    assert_eq!(expires - finished, chrono::Duration::seconds(2), "{run}");
    let download = run["result"]["download"].as_str().unwrap().to_owned();
    let r = app.get(&download, &app.read).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(export_files(&dir).len(), 2, "the mbox and its .sha256: {:?}", export_files(&dir));
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let r = app.get(&download, &app.read).await;
    let p = r.problem(410, "/problems/gone");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("expired") && detail.contains("export_ttl_secs") && detail.contains("2 s"), "{detail}");
    assert!(export_files(&dir).is_empty(), "deleted: {:?}", export_files(&dir));

    // Never downloaded: the sweeper deletes it on its own.
    let r = app.post_json("/api/v1/archives/legal/exports", &app.write, &json!({"format": "eml-zip"})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let run = wait_run(&app, r.header("location").unwrap()).await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(export_files(&dir).len(), 1, "{:?}", export_files(&dir));
    let until = Instant::now() + ttl * 3;
    while !export_files(&dir).is_empty() {
        assert!(Instant::now() < until, "the sweeper left {:?}", export_files(&dir));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = app.get(run["result"]["download"].as_str().unwrap(), &app.read).await;
    r.problem(410, "/problems/gone");
    // The run itself is still reported.
    let r = app.get(&format!("/api/v1/archives/legal/exports/{}", run["id"]), &app.read).await;
    assert_eq!((r.status, r.json()["state"].as_str()), (200, Some("done")), "{}", r.text);
}
