//! Bearer tokens, scopes, the token API and Idempotency-Key.

use serde_json::json;

use crate::{job_body, TestApp};

#[tokio::test]
async fn tokens_are_required_and_scoped() {
    let app = TestApp::spawn().await;
    let r = app.send(app.req(reqwest::Method::GET, "/api/v1/jobs", None)).await;
    r.problem(401, "/problems/unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    app.get("/api/v1/jobs", "mf_not-a-token").await.problem(401, "/problems/unauthorized");
    let r = app.send(app.req(reqwest::Method::GET, "/api/v1/jobs", None).header("authorization", format!("Basic {}", app.admin))).await;
    r.problem(401, "/problems/unauthorized");

    app.post_json("/api/v1/jobs", &app.read, &job_body("x")).await.problem(403, "/problems/forbidden");
    app.get("/api/v1/tokens", &app.write).await.problem(403, "/problems/forbidden");
    assert_eq!(app.get("/api/v1/jobs", &app.read).await.status, 200);
    // An unknown route still needs a token.
    app.send(app.req(reqwest::Method::GET, "/nope", None)).await.problem(401, "/problems/unauthorized");
}

#[tokio::test]
async fn admins_manage_tokens() {
    let app = TestApp::spawn().await;
    let r = app.post_json("/api/v1/tokens", &app.admin, &json!({"name": "ci", "scope": "write"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("mf_"));
    assert_eq!(created["scope"], "write");

    assert_eq!(app.post_json("/api/v1/jobs", &token, &job_body("x")).await.status, 201);
    let list = app.get("/api/v1/tokens", &app.admin).await;
    assert_eq!(list.status, 200);
    assert!(!list.text.contains(&token) && !list.text.contains(&app.admin), "tokens are never listed");
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 4);

    app.post_json("/api/v1/tokens", &app.admin, &json!({"name": "x", "scope": "root"})).await.problem(422, "/problems/validation");
    app.post_json("/api/v1/tokens", &app.admin, &json!({"name": " ", "scope": "read"})).await.problem(422, "/problems/validation");

    let id = created["id"].as_i64().unwrap();
    let del = app.send(app.req(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&app.admin))).await;
    assert_eq!(del.status, 204);
    app.get("/api/v1/jobs", &token).await.problem(401, "/problems/unauthorized");
    let del = app.send(app.req(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(&app.admin))).await;
    del.problem(404, "/problems/not-found");
}

#[tokio::test]
async fn idempotency_key_replays_and_refuses_reuse() {
    let app = TestApp::spawn().await;
    let post = |body: serde_json::Value, key: &str| {
        app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.write)).header("idempotency-key", key).json(&body)
    };
    let first = app.send(post(job_body("ida"), "key-1")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = app.send(post(job_body("ida"), "key-1")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    let list = app.get("/api/v1/jobs", &app.read).await.json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "created once");

    app.send(post(job_body("other"), "key-1")).await.problem(422, "/problems/idempotency-key-reused");
    // Another token has its own keys.
    let other = app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.admin)).header("idempotency-key", "key-1").json(&job_body("ida"));
    assert_eq!(app.send(other).await.status, 201);

    // A refused request is replayed as refused.
    let mut bad = job_body("x");
    bad["source"]["host"] = "".into();
    app.send(post(bad.clone(), "key-2")).await.problem(422, "/problems/validation");
    let r = app.send(post(bad, "key-2")).await;
    r.problem(422, "/problems/validation");
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    let control = app.req(reqwest::Method::POST, "/api/v1/jobs/1/pause", Some(&app.write)).header("idempotency-key", "k3");
    assert_eq!(app.send(control).await.json()["state"], "paused");
    let control = app.req(reqwest::Method::POST, "/api/v1/jobs/1/pause", Some(&app.write)).header("idempotency-key", "k3");
    let r = app.send(control).await;
    assert_eq!((r.status, r.header("idempotent-replayed")), (200, Some("true")), "a replay, not a 409");
}
