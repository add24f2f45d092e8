//! DESIGN.md §2.9 through the real binary: a `mailferry serve` without `network.allow`
//! refuses a job aimed at the loopback lab with a problem naming the key; a worker without
//! the allowance refuses at connect time even when the API accepted the job (its check,
//! after DNS, is the authoritative one); `mailferry migrate`, the admin's own shell, reaches
//! the loopback lab with no allowance at all.

use crate::common::server::*;
use crate::common::*;

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n").into_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_loopback_by_default_and_migrate_does_not() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &small(3, "n"));
    // No allowance: the default an operator gets.
    let server = Server::start(&lab.dovecot, None, &[(LAB_NETWORK_ALLOW.0, "")], &[]);
    let api = server.client();
    let (status, problem, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(problem["type"], "/problems/network-not-allowed", "{text}");
    let fields: Vec<&str> = problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["source.host", "target.host"], "{text}");
    assert_eq!(
        problem["errors"][0]["message"],
        "127.0.0.1 is a loopback address, which jobs created over the API may not reach; \
         to allow it set network.allow = [\"127.0.0.1\"] (or MAILFERRY_NETWORK__ALLOW=127.0.0.1)"
    );
    let (_, jobs, _) = api.get("/api/v1/jobs").await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0, "nothing was created");

    // The admin's own shell: the hosts it names are reachable without any allowance.
    let run = lab.migrate(&[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(lab.dst().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_the_allowance_refuses_at_connect_time() {
    let pg = FreshPg::create();
    let lab = Lab::start();
    lab.dovecot.seed("src", &small(3, "w"));
    // The API allows the lab (LAB_NETWORK_ALLOW); the worker's own config does not, as if
    // the name had resolved elsewhere by the time the job ran.
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &[], &["--no-workers"]);
    let api = server.client();
    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "after-verified")).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    server.spawn_worker(&[(LAB_NETWORK_ALLOW.0, "")]);
    let job = api.wait_state(id, &["failed", "succeeded"], 60).await;
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("loopback") && error.contains("network.allow = [\"127.0.0.1\"]"), "{job}");
    assert_eq!(job["counts"]["copied"], 0, "{job}");
    assert_eq!(lab.dst().len(), 0, "nothing reached the destination");
    assert_eq!(lab.src().len(), 3, "nothing was deleted");
}
