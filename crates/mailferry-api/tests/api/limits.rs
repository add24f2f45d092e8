//! Failed authentications are limited per client address: 429 problem+json with
//! Retry-After, the token not even checked; successes and token-less requests do not count.

use std::time::Duration;

use mailferry_api::ApiConfig;
use reqwest::Method;

use crate::TestApp;

fn limited(n: u32, window_secs: u64) -> ApiConfig {
    ApiConfig {
        auth_failure_limit: n,
        auth_failure_window_secs: window_secs,
        trusted_proxies: vec!["127.0.0.1".into()],
        ..ApiConfig::default()
    }
}

async fn get_as(app: &TestApp, token: Option<&str>, client: &str) -> crate::Resp {
    app.send(app.req(Method::GET, "/api/v1/jobs", token).header("x-forwarded-for", client)).await
}

#[tokio::test]
async fn too_many_bad_tokens_are_answered_429_without_checking_the_token() {
    let app = TestApp::spawn_with(limited(3, 60)).await;
    let bad = "198.51.100.7";
    for _ in 0..3 {
        get_as(&app, Some("mf_guess"), bad).await.problem(401, "/problems/unauthorized");
    }
    let r = get_as(&app, Some("mf_guess"), bad).await;
    let body = r.problem(429, "/problems/too-many-requests");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(body["detail"].as_str().unwrap().contains("try again"));
    // Even the right token is not looked at now.
    get_as(&app, Some(&app.read), bad).await.problem(429, "/problems/too-many-requests");
    app.send(app.req(Method::POST, "/api/v1/jobs", Some(&app.write)).header("x-forwarded-for", bad)).await.problem(429, "/problems/too-many-requests");

    // Other addresses, the probes and the metrics are not affected.
    assert_eq!(get_as(&app, Some(&app.read), "198.51.100.8").await.status, 200);
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = app.send(app.req(Method::GET, path, None).header("x-forwarded-for", bad)).await;
        assert_eq!(r.status, 200, "{path}");
    }
    // The 429s were not audited (nobody authenticated).
    let audit = app.get("/api/v1/audit", &app.admin).await.json();
    assert_eq!(audit["items"].as_array().unwrap().len(), 0, "{audit}");
}

#[tokio::test]
async fn successes_and_missing_tokens_do_not_count() {
    let app = TestApp::spawn_with(limited(2, 60)).await;
    let c = "192.0.2.44";
    for _ in 0..10 {
        assert_eq!(get_as(&app, Some(&app.read), c).await.status, 200);
        get_as(&app, None, c).await.problem(401, "/problems/unauthorized");
    }
    get_as(&app, Some("mf_guess"), c).await.problem(401, "/problems/unauthorized");
    assert_eq!(get_as(&app, Some(&app.read), c).await.status, 200, "one failure is under the limit");
    get_as(&app, Some("mf_guess"), c).await.problem(401, "/problems/unauthorized");
    get_as(&app, Some(&app.read), c).await.problem(429, "/problems/too-many-requests");
}

#[tokio::test]
async fn the_block_lifts_when_the_window_passes() {
    let app = TestApp::spawn_with(limited(2, 1)).await;
    let c = "192.0.2.45";
    for _ in 0..2 {
        get_as(&app, Some("mf_guess"), c).await.problem(401, "/problems/unauthorized");
    }
    let r = get_as(&app, Some(&app.read), c).await;
    r.problem(429, "/problems/too-many-requests");
    assert_eq!(r.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_as(&app, Some(&app.read), c).await.status, 200);
}

#[tokio::test]
async fn without_a_trusted_proxy_the_socket_address_is_limited() {
    let app = TestApp::spawn_with(ApiConfig { auth_failure_limit: 1, ..ApiConfig::default() }).await;
    get_as(&app, Some("mf_guess"), "192.0.2.1").await.problem(401, "/problems/unauthorized");
    // A forged X-Forwarded-For does not escape the limit: the header is not believed.
    get_as(&app, Some(&app.read), "192.0.2.2").await.problem(429, "/problems/too-many-requests");
}
