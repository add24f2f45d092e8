//! The service end to end: a real `mailferry serve` (and `mailferry worker` processes),
//! real Dovecot, SQLite and PostgreSQL. Jobs are created and driven over HTTP only.

use std::time::{Duration, Instant};

use crate::common::server::*;
use crate::common::*;
use mailferry_tests::realistic;
use serde_json::json;

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\n.body {i}\r\n").into_bytes()).collect()
}

async fn job_runs_to_succeeded_and_reruns_incrementally(database_url: Option<&str>) {
    let lab = Lab::start();
    let msgs = small(30, "m");
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, database_url, &[], &[]);
    let api = server.client();

    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let events = api.events(id, 60).await;
    let last_state = events.iter().rev().find_map(|(_, d)| d["state"].as_str().map(str::to_owned));
    assert_eq!(last_state.as_deref(), Some("succeeded"), "SSE ends on the terminal state: {events:?}");
    assert!(events.iter().any(|(e, _)| e == "progress"), "progress events: {events:?}");
    let states: Vec<&str> = events.iter().filter(|(e, _)| e == "state").filter_map(|(_, d)| d["state"].as_str()).collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "every state change, in order, from the job_events table");

    let job = api.job(id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["counts"]["listed"], 30);
    assert_eq!(job["counts"]["copied"], 30);
    assert_same_messages(&msgs, &lab.dst());

    let r = api
        .http
        .get(format!("{}/api/v1/jobs/{id}/report", api.base))
        .bearer_auth(&api.token)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    let csv = r.text().await.unwrap();
    assert_eq!(csv.lines().count(), 31, "header + one row per message: {csv}");

    // Delta pass: only the new mail is copied.
    let more = small(2, "late");
    lab.dovecot.seed("src", &more);
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/rerun"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let job = api.wait_state(id, &["succeeded"], 60).await;
    assert_eq!(job["counts"]["copied"], 32);
    assert_eq!(job["runs"], 2);
    let all: Vec<Vec<u8>> = msgs.into_iter().chain(more).collect();
    assert_same_messages(&all, &lab.dst());

    // Secrets never leave: not in any response, not in any log.
    for path in [format!("/api/v1/jobs/{id}"), "/api/v1/jobs".into(), format!("/api/v1/jobs/{id}/report"), format!("/api/v1/jobs/{id}/messages")] {
        let (_, _, body) = api.get(&path).await;
        assert!(!body.contains(SRC_PW) && !body.contains(DST_PW), "{path} leaks a password");
    }
    let logs = server.logs();
    assert!(logs.len() > 100);
    assert!(!logs.contains(SRC_PW) && !logs.contains(DST_PW), "a password reached the logs");
    assert!(!logs.contains(&server.token), "the API token reached the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_job_over_http_runs_to_succeeded_and_reruns_incrementally() {
    job_runs_to_succeeded_and_reruns_incrementally(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_over_http_runs_to_succeeded_and_reruns_incrementally() {
    let pg = FreshPg::create();
    job_runs_to_succeeded_and_reruns_incrementally(Some(&pg.url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_job_and_deletes_nothing() {
    let lab = Lab::start();
    let msgs = realistic(1500, 5);
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();
    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "after-verified")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api.job(id).await;
        if job["counts"]["copied"].as_u64().unwrap_or(0) > 0 || job["state"] != "queued" && job["state"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let job = api.wait_state(id, &["cancelled"], 60).await;
    let copied = job["counts"]["copied"].as_u64().unwrap();
    assert!(copied < 1500, "cancelled before the end: {job}");
    assert_eq!(lab.dst().len() as u64, copied, "the ledger tells the truth");
    assert_eq!(lab.src().len(), 1500, "a cancelled run deletes nothing");
    assert_eq!(job["counts"]["deleted"], 0);

    // A cancelled job can be rerun; it finishes exactly once.
    let (status, _, _) = api.post(&format!("/api/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409, "cancel of a cancelled job is a conflict");
    api.post(&format!("/api/v1/jobs/{id}/rerun"), &json!({})).await;
    let job = api.wait_state(id, &["succeeded"], 180).await;
    assert_eq!(job["counts"]["copied"], 1500);
    assert_eq!(lab.src().len(), 0, "after-verified deleted what was copied");
    assert_same_messages(&msgs, &lab.dst());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_twenty_jobs_without_overlap_or_duplicates() {
    let pg = FreshPg::create();
    let lab = Lab::start();
    let mut sources = Vec::new();
    for i in 0..20 {
        lab.dovecot.add_user(&format!("s{i}"), SRC_PW);
        lab.dovecot.add_user(&format!("d{i}"), DST_PW);
        let msgs = small(12, &format!("u{i}-"));
        lab.dovecot.seed(&format!("s{i}"), &msgs);
        sources.push(msgs);
    }
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &[("MAILFERRY_WORKER__CONCURRENCY", "3")], &["--no-workers"]);
    let api = server.client();
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, &format!("s{i}"), &format!("d{i}"), "keep")).await;
        assert_eq!(status, 201, "{text}");
        ids.push(job["id"].as_i64().unwrap());
    }
    server.spawn_worker(&[("MAILFERRY_WORKER__CONCURRENCY", "3")]);
    server.spawn_worker(&[("MAILFERRY_WORKER__CONCURRENCY", "3")]);
    for id in &ids {
        api.wait_state(*id, &["succeeded"], 120).await;
    }
    for (i, msgs) in sources.iter().enumerate() {
        assert_same_messages(msgs, &lab.dovecot.messages(&format!("d{i}")));
    }
    // Each job ran once, and no two runs of one job overlapped in time.
    let overlaps = psql(
        &pg.url,
        "SELECT count(*) FROM runs a JOIN runs b ON a.job_id = b.job_id AND a.id < b.id
         WHERE b.started_at < COALESCE(a.finished_at, now())",
    );
    assert_eq!(overlaps, "0");
    for n in 0..2 {
        let log = server.worker_log(n);
        assert!(log.contains("job finished"), "worker {n} ran jobs too: {}", &log[..log.len().min(2000)]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_job_is_resumed_by_another_exactly_once() {
    let pg = FreshPg::create();
    let lab = Lab::start();
    let msgs = realistic(600, 9);
    lab.dovecot.seed("src", &msgs);
    let lease = [("MAILFERRY_WORKER__LEASE_SECS", "3")];
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &lease, &["--no-workers"]);
    let api = server.client();
    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "after-verified")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();

    let first = server.spawn_worker(&lease);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = api.job(id).await;
        if job["counts"]["copied"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(job["state"] == "queued" || job["state"] == "running", "{job}");
        assert!(Instant::now() < deadline, "no progress: {job}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill_worker(first);
    let at_kill = lab.dst().len();
    assert!(at_kill < msgs.len(), "killed mid-job ({at_kill} copied)");
    server.spawn_worker(&lease);
    let job = api.wait_state(id, &["succeeded"], 180).await;
    assert_same_messages(&msgs, &lab.dst());
    assert_eq!(lab.src().len(), 0);
    assert_eq!(job["counts"]["copied"], 600);
    assert_eq!(job["runs"], 1, "a takeover continues the run's pass, it is not a new pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_host_cap_holds_across_workers() {
    let pg = FreshPg::create();
    let lab = Lab::start();
    for i in 0..8 {
        lab.dovecot.add_user(&format!("s{i}"), SRC_PW);
        lab.dovecot.add_user(&format!("d{i}"), DST_PW);
        lab.dovecot.seed(&format!("s{i}"), &realistic(80, i));
    }
    let env = [("MAILFERRY_WORKER__PER_HOST_LIMIT", "2"), ("MAILFERRY_WORKER__CONCURRENCY", "4")];
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &env, &["--no-workers"]);
    let api = server.client();
    let mut ids = Vec::new();
    for i in 0..8 {
        let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, &format!("s{i}"), &format!("d{i}"), "keep")).await;
        assert_eq!(status, 201, "{text}");
        ids.push(job["id"].as_i64().unwrap());
    }
    server.spawn_worker(&env);
    server.spawn_worker(&env);
    // Count live POP3 sessions at the server side while the jobs run.
    let mut max_pop3 = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let who = lab.dovecot.doveadm(&["who", "-1"]);
        let text = String::from_utf8_lossy(&who.stdout);
        let pop3 = text.lines().filter(|l| l.contains("pop3")).count();
        max_pop3 = max_pop3.max(pop3);
        let mut done = 0;
        for id in &ids {
            if api.job(*id).await["state"] == "succeeded" {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(max_pop3 >= 1, "sessions were observed");
    assert!(max_pop3 <= 2, "at most 2 sessions per host, saw {max_pop3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_between_messages() {
    let lab = Lab::start();
    let msgs = realistic(1500, 6);
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();
    let (_, job, _) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    let id = job["id"].as_i64().unwrap();
    while api.job(id).await["counts"]["copied"].as_u64().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/pause"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let paused = api.wait_state(id, &["paused"], 60).await;
    let copied = paused["counts"]["copied"].as_u64().unwrap();
    assert!(copied < 1500, "paused before the end: {paused}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(lab.dst().len() as u64, copied, "nothing moves while paused");
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/resume"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    api.wait_state(id, &["succeeded"], 180).await;
    assert_same_messages(&msgs, &lab.dst());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_a_restart_finishes_exactly_once() {
    let lab = Lab::start();
    let msgs = realistic(1500, 7);
    lab.dovecot.seed("src", &msgs);
    let mut server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();
    let (_, job, _) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "after-verified")).await;
    let id = job["id"].as_i64().unwrap();
    while api.job(id).await["counts"]["copied"].as_u64().unwrap_or(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(lab.dst().len() < msgs.len(), "stopped mid-job");

    let released = server.logs().lines().any(|l| l.contains("job finished") && l.contains("\"state\":\"queued\""));
    assert!(released, "the worker handed the job back as queued on SIGTERM");

    server.restart();
    let api = server.client();
    let job = api.wait_state(id, &["succeeded"], 180).await;
    assert_eq!(job["counts"]["copied"], 1500);
    assert_same_messages(&msgs, &lab.dst());
    assert_eq!(lab.src().len(), 0);

    // The embedded default's secret key is private to its owner.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.data.path().join("secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
