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
