//! `/metrics`: public, Prometheus text format, cluster figures from this app's database,
//! HTTP figures by route template.

use mailferry_api::ApiConfig;
use reqwest::Method;

use crate::{job_body, TestApp};

/// The value of the sample of `name` carrying every label in `labels`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match key.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (key, ""),
        };
        let all = labels.iter().all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        (metric == name && all).then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(app: &TestApp) -> String {
    let r = app.send(app.req(Method::GET, "/metrics", None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    r.text
}

#[tokio::test]
async fn metrics_are_public_and_count_jobs_and_requests_by_route() {
    let app = TestApp::spawn_with(ApiConfig { metrics_cache_ms: 0, ..ApiConfig::default() }).await;
    let before = scrape(&app).await;
    assert_eq!(sample(&before, "mailferry_database_up", &[]), Some(1.0));
    assert_eq!(sample(&before, "mailferry_jobs", &[("state", "queued")]), Some(0.0));
    assert_eq!(sample(&before, "mailferry_ledger_messages", &[("state", "copied")]), Some(0.0));
    assert_eq!(sample(&before, "mailferry_queue_oldest_age_seconds", &[]), Some(0.0));
    let created = |t: &str| sample(t, "mailferry_http_requests_total", &[("method", "POST"), ("route", "/api/v1/jobs"), ("status", "201")]);

    let a = app.create_job(&job_body("m1")).await;
    app.create_job(&job_body("m2")).await;
    app.post(&format!("/api/v1/jobs/{a}/pause"), &app.write).await;
    assert_eq!(app.get(&format!("/api/v1/jobs/{a}"), &app.read).await.status, 200);
    let after = scrape(&app).await;
    assert_eq!(sample(&after, "mailferry_jobs", &[("state", "queued")]), Some(1.0));
    assert_eq!(sample(&after, "mailferry_jobs", &[("state", "paused")]), Some(1.0));
    assert_eq!(sample(&after, "mailferry_queue_depth", &[]), Some(1.0));
    assert_eq!(sample(&after, "mailferry_queue_ready", &[]), Some(1.0));
    assert!(sample(&after, "mailferry_queue_oldest_age_seconds", &[]).unwrap() >= 0.0);
    // The recorder is per process and tests share it: at least this test's two creations.
    assert!(created(&after).unwrap() >= created(&before).unwrap_or(0.0) + 2.0, "{after}");
    assert!(sample(&after, "mailferry_http_requests_total", &[("route", "/api/v1/jobs/{id}"), ("method", "GET")]).is_some());
    assert!(!after.contains(&format!("route=\"/api/v1/jobs/{a}\"")), "route templates, never raw paths");
    assert!(sample(&after, "mailferry_http_request_duration_seconds_bucket", &[("route", "/api/v1/jobs/{id}"), ("le", "+Inf")]).unwrap() >= 1.0);
    assert!(after.contains("# TYPE mailferry_http_request_duration_seconds histogram"));
    assert!(!after.contains(&app.read) && !after.contains("m1"), "no tokens, no mailbox names");

    // Unknown paths do not create label values.
    app.get(&format!("/nope/{}", 12345), &app.read).await;
    let later = scrape(&app).await;
    assert!(!later.contains("12345"));
    assert!(sample(&later, "mailferry_http_requests_total", &[("route", "unmatched")]).is_some(), "{later}");
}

#[tokio::test]
async fn host_labels_are_bounded_to_the_first_hosts_then_other() {
    use mailferry_store::ClaimLimits;
    let n = 3;
    let app = TestApp::spawn_with(ApiConfig { metrics_cache_ms: 0, metrics_max_hosts: n, ..ApiConfig::default() }).await;
    // N + 5 running jobs (leases), each on its own source and target host: host names
    // are the callers' to choose.
    for i in 0..n + 5 {
        let mut body = job_body(&format!("u{i}"));
        body["source"]["host"] = format!("pop{i}.example.com").into();
        body["target"]["host"] = format!("imap{i}.example.com").into();
        app.create_job(&body).await;
    }
    let limits = ClaimLimits { per_source_host: 4, per_target_host: 4 };
    for _ in 0..n + 5 {
        app.store.claim_job("w1", std::time::Duration::from_secs(60), limits).await.unwrap().expect("claimable");
    }
    let text = scrape(&app).await;
    for role in ["source", "target"] {
        let samples: Vec<(String, f64)> = text
            .lines()
            .filter(|l| l.starts_with(&format!("mailferry_cluster_sessions{{role=\"{role}\",")))
            .map(|l| {
                let host = l.split("host=\"").nth(1).and_then(|h| h.split('"').next()).unwrap().to_owned();
                (host, l.rsplit_once(' ').unwrap().1.parse().unwrap())
            })
            .collect();
        let hosts: std::collections::BTreeSet<&str> = samples.iter().map(|(h, _)| h.as_str()).collect();
        assert!(hosts.len() <= n + 1, "{role}: {hosts:?}");
        assert!(hosts.contains("other"), "{role}: {hosts:?}");
        assert_eq!(samples.iter().map(|(_, v)| v).sum::<f64>(), (n + 5) as f64, "every lease still counted: {samples:?}");
    }
}

#[tokio::test]
async fn metrics_need_a_token_of_any_scope_when_configured() {
    let app = TestApp::spawn_with(ApiConfig { metrics_require_token: true, ..ApiConfig::default() }).await;
    let r = app.send(app.req(Method::GET, "/metrics", None)).await;
    r.problem(401, "/problems/unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"mailferry\""));
    app.send(app.req(Method::GET, "/metrics", Some("mf_not-a-token"))).await.problem(401, "/problems/unauthorized");
    for token in [&app.read, &app.write, &app.admin] {
        let r = app.send(app.req(Method::GET, "/metrics", Some(token))).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.contains("mailferry_database_up 1"), "{}", r.text);
    }
    // The probes stay public.
    assert_eq!(app.send(app.req(Method::GET, "/healthz", None)).await.status, 200);
}

/// A worker's `worker.metrics_listen` app checks tokens against the database when told to.
#[tokio::test]
async fn the_worker_metrics_listener_honours_the_token_setting() {
    let app = TestApp::spawn().await;
    let serve = |router: axum::Router| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    };
    let guarded = serve(mailferry_api::metrics::process_app(Some(app.store.clone()))).await;
    let open = serve(mailferry_api::metrics::process_app(None)).await;
    let get = |url: String, token: Option<&str>| {
        let req = app.http.get(url);
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        app.send(req)
    };
    get(format!("{guarded}/metrics"), None).await.problem(401, "/problems/unauthorized");
    get(format!("{guarded}/metrics"), Some("mf_not-a-token")).await.problem(401, "/problems/unauthorized");
    let r = get(format!("{guarded}/metrics"), Some(&app.read)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(get(format!("{guarded}/healthz"), None).await.status, 200, "the probe stays public");
    assert_eq!(get(format!("{open}/metrics"), None).await.status, 200);
}
