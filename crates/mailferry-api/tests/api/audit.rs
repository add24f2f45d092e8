//! The audit log: what is recorded (and what is not), who and from where, and
//! `GET /api/v1/audit` with its filters and cursor pages.

use std::collections::HashSet;

use mailferry_api::ApiConfig;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{job_body, TestApp, DST_PASSWORD, SRC_PASSWORD};

async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/v1/audit{query}"), &app.admin).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["items"].as_array().unwrap().clone()
}

async fn token_id(app: &TestApp, name: &str) -> i64 {
    let tokens = app.get("/api/v1/tokens", &app.admin).await.json();
    tokens["items"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["id"].as_i64().unwrap()
}

#[tokio::test]
async fn state_changing_calls_are_recorded_with_who_what_and_where() {
    let app = TestApp::spawn().await;
    let write_id = token_id(&app, "write").await;
    let admin_id = token_id(&app, "admin").await;

    let job = app.create_job(&job_body("auditee")).await;
    assert_eq!(app.post(&format!("/api/v1/jobs/{job}/cancel"), &app.write).await.status, 200);
    assert_eq!(app.post(&format!("/api/v1/jobs/{job}/cancel"), &app.write).await.status, 409);
    // Refused by scope: recorded (a named token tried it).
    app.post_json("/api/v1/tokens", &app.write, &json!({"name": "x", "scope": "admin"})).await.problem(403, "/problems/forbidden");
    // Not recorded: reads, and calls without a valid token.
    assert_eq!(app.get("/api/v1/jobs", &app.write).await.status, 200);
    app.post_json("/api/v1/jobs", "mf_wrong", &job_body("x")).await.problem(401, "/problems/unauthorized");
    app.send(app.req(Method::POST, "/api/v1/jobs", None).json(&job_body("x"))).await.problem(401, "/problems/unauthorized");
    let created = app.post_json("/api/v1/tokens", &app.admin, &json!({"name": "ci", "scope": "read"})).await.json();
    let new_id = created["id"].as_i64().unwrap();
    let del = app.send(app.req(Method::DELETE, &format!("/api/v1/tokens/{new_id}"), Some(&app.admin))).await;
    assert_eq!(del.status, 204);

    let items = audit(&app, "").await;
    let summary: Vec<(String, String, Option<String>, u64, i64)> = items
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap().to_owned(),
                e["route"].as_str().unwrap().to_owned(),
                e["target"].as_str().map(str::to_owned),
                e["status"].as_u64().unwrap(),
                e["token_id"].as_i64().unwrap(),
            )
        })
        .collect();
    let s = |v: &str| v.to_owned();
    assert_eq!(
        summary,
        vec![
            (s("DELETE"), s("/api/v1/tokens/{id}"), Some(new_id.to_string()), 204, admin_id),
            (s("POST"), s("/api/v1/tokens"), Some(new_id.to_string()), 201, admin_id),
            (s("POST"), s("/api/v1/tokens"), None, 403, write_id),
            (s("POST"), s("/api/v1/jobs/{id}/cancel"), Some(job.to_string()), 409, write_id),
            (s("POST"), s("/api/v1/jobs/{id}/cancel"), Some(job.to_string()), 200, write_id),
            (s("POST"), s("/api/v1/jobs"), Some(job.to_string()), 201, write_id),
        ],
        "newest first: {items:?}"
    );
    for e in &items {
        assert_eq!(e["client"], "127.0.0.1", "the socket peer: {e}");
        assert!(chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).is_ok());
        let name = if e["token_id"] == admin_id { "admin" } else { "write" };
        assert_eq!(e["token_name"], name);
    }
    let text = serde_json::to_string(&items).unwrap();
    for secret in [SRC_PASSWORD, DST_PASSWORD, &app.write, &app.admin, created["token"].as_str().unwrap()] {
        assert!(!text.contains(secret), "the audit log holds no secret and no body");
    }
}

#[tokio::test]
async fn only_admins_read_it_with_filters_and_cursor_pages() {
    let app = TestApp::spawn().await;
    let write_id = token_id(&app, "write").await;
    for i in 0..5 {
        app.create_job(&job_body(&format!("u{i}"))).await;
    }
    let r = app.send(app.req(Method::DELETE, "/api/v1/tokens/999", Some(&app.admin))).await;
    r.problem(404, "/problems/not-found");
    app.get("/api/v1/audit", &app.write).await.problem(403, "/problems/forbidden");
    app.get("/api/v1/audit", &app.read).await.problem(403, "/problems/forbidden");
    assert_eq!(audit(&app, "").await.len(), 6);

    // Cursor pages of two cover everything once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/v1/audit?limit=2&cursor={c}"),
            None => "/api/v1/audit?limit=2".to_owned(),
        };
        let page = app.get(&q, &app.admin).await.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 6);

    assert_eq!(audit(&app, "?method=delete").await.len(), 1, "methods compare case-insensitively");
    assert_eq!(audit(&app, &format!("?token={write_id}")).await.len(), 5);
    assert_eq!(audit(&app, &format!("?token={write_id}&method=DELETE")).await.len(), 0);
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(audit(&app, &format!("?since={}&until={}", at(now - hour), at(now + hour))).await.len(), 6);
    assert_eq!(audit(&app, &format!("?since={}", at(now + hour))).await.len(), 0);
    assert_eq!(audit(&app, &format!("?until={}", at(now - hour))).await.len(), 0);

    let bad = app.get("/api/v1/audit?since=yesterday&method=GET&cursor=x", &app.admin).await;
    let body = bad.problem(422, "/problems/validation");
    let fields: Vec<&str> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["since", "method", "cursor"]);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let app = TestApp::spawn().await;
    let post = |app: &TestApp| {
        app.req(Method::POST, "/api/v1/jobs", Some(&app.write)).header("x-forwarded-for", "203.0.113.5, 198.51.100.7").json(&job_body("p"))
    };
    assert_eq!(app.send(post(&app)).await.status, 201);
    assert_eq!(audit(&app, "").await[0]["client"], "127.0.0.1", "no trusted proxy: the header is ignored");

    let app = TestApp::spawn_with(ApiConfig { trusted_proxies: vec!["127.0.0.0/8".into()], ..ApiConfig::default() }).await;
    assert_eq!(app.send(post(&app)).await.status, 201);
    assert_eq!(audit(&app, "").await[0]["client"], "198.51.100.7", "the nearest hop the proxy saw, not what the client claimed");
}
