//! DESIGN.md §2.9: jobs created over the API may not reach internal addresses (loopback,
//! private, link-local, metadata, NAT64), after DNS, unless the operator allows them; the
//! refusal is a problem naming `network.allow`. OAuth2 token endpoints are `https://`.

use std::sync::Arc;

use mailferry_api::ApiConfig;
use mailferry_model::netpolicy::Defaults;
use mailferry_model::NetworkPolicy;
use serde_json::{json, Value};

use crate::{job_body, TestApp, SRC_PASSWORD};

fn with_network(allow: &[&str], deny: &[&str]) -> ApiConfig {
    let network = NetworkPolicy::new(Defaults::Api, allow.iter().copied(), deny.iter().copied()).unwrap();
    ApiConfig { network: Arc::new(network), ..ApiConfig::default() }
}

fn source_at(host: &str) -> Value {
    let mut body = job_body("nina");
    body["source"]["host"] = host.into();
    body
}

fn refresh_grant(token_url: &str) -> Value {
    let mut body = job_body("olga");
    body["target"]["password"] = Value::Null;
    body["target"]["oauth2"] = json!({"refresh_token": "rt", "client_id": "c", "token_url": token_url});
    body
}

async fn job_count(app: &TestApp) -> usize {
    app.get("/api/v1/jobs", &app.read).await.json()["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn internal_addresses_are_refused_by_default_naming_network_allow() {
    let app = TestApp::spawn().await;
    for (host, address, kind) in [
        ("127.0.0.1", "127.0.0.1", "loopback"),
        ("10.0.0.1", "10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "127.0.0.1", "loopback"),
        ("[::1]", "::1", "loopback"),
        ("localhost", "127.0.0.1", "loopback"),
        ("169.254.169.254", "169.254.169.254", "metadata"),
        ("metadata.google.internal", "metadata.google.internal", "metadata"),
        ("100.64.0.7", "100.64.0.7", "carrier-grade NAT"),
        ("fd00::5", "fd00::5", "unique-local"),
        ("64:ff9b::a00:1", "64:ff9b::a00:1", "NAT64"),
    ] {
        let r = app.post_json("/api/v1/jobs", &app.write, &source_at(host)).await;
        let p = r.problem(422, "/problems/network-not-allowed");
        r.no_secrets();
        let e = &p["errors"][0];
        assert_eq!(e["field"], "source.host", "{host}: {p}");
        assert_eq!(e["code"], "network-not-allowed", "{host}: {p}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(kind) && msg.contains("jobs created over the API may not reach"), "{host}: {msg}");
        assert!(msg.contains(&format!("set network.allow = [\"{address}\"")), "{host}: {msg}");
        assert!(msg.contains("MAILFERRY_NETWORK__ALLOW="), "{host}: {msg}");
        assert!(p["detail"].as_str().unwrap().starts_with("source.host: "), "{p}");
    }
    let p = app.post_json("/api/v1/jobs", &app.write, &source_at("127.0.0.1")).await.problem(422, "/problems/network-not-allowed");
    assert_eq!(
        p["errors"][0]["message"],
        "127.0.0.1 is a loopback address, which jobs created over the API may not reach; \
         to allow it set network.allow = [\"127.0.0.1\"] (or MAILFERRY_NETWORK__ALLOW=127.0.0.1)"
    );

    // The target and the token endpoint too, each named by its field.
    let mut body = refresh_grant("https://192.168.1.10/token");
    body["target"]["host"] = "172.16.3.4".into();
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/network-not-allowed");
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["target.host", "target.oauth2.token_url"], "{p}");
    assert_eq!(job_count(&app).await, 0, "nothing was created");

    // Ordinary hosts are fine (public addresses; names that do not resolve here are left
    // to the worker's check at connect time).
    for host in ["192.0.2.10", "2001:db8::10", "pop.example.com"] {
        let r = app.post_json("/api/v1/jobs", &app.write, &source_at(host)).await;
        assert_eq!(r.status, 201, "{host}: {}", r.text);
    }
}

#[tokio::test]
async fn network_allow_opens_what_it_names() {
    let app = TestApp::spawn_with(with_network(&["127.0.0.1", "::1", "10.0.0.0/8"], &[])).await;
    for host in ["127.0.0.1", "::ffff:127.0.0.1", "localhost", "[::1]", "10.1.2.3"] {
        let r = app.post_json("/api/v1/jobs", &app.write, &source_at(host)).await;
        assert_eq!(r.status, 201, "{host}: {}", r.text);
    }
    let r = app.post_json("/api/v1/jobs", &app.write, &refresh_grant("https://127.0.0.1:8443/token")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // What is not named stays refused.
    for host in ["127.0.0.2", "192.168.0.1", "169.254.169.254"] {
        app.post_json("/api/v1/jobs", &app.write, &source_at(host)).await.problem(422, "/problems/network-not-allowed");
    }
}

#[tokio::test]
async fn network_deny_adds_to_the_defaults() {
    let app = TestApp::spawn_with(with_network(&["10.0.0.0/8"], &["192.0.2.0/24", "10.66.0.0/16"])).await;
    let p = app.post_json("/api/v1/jobs", &app.write, &source_at("192.0.2.5")).await.problem(422, "/problems/network-not-allowed");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("network.deny"), "{p}");
    let p = app.post_json("/api/v1/jobs", &app.write, &source_at("127.0.0.1")).await.problem(422, "/problems/network-not-allowed");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("loopback"), "the built-in list still applies: {p}");
    let p = app.post_json("/api/v1/jobs", &app.write, &source_at("10.66.1.1")).await.problem(422, "/problems/network-not-allowed");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("network.deny"), "deny wins over allow: {p}");
    let r = app.post_json("/api/v1/jobs", &app.write, &source_at("10.1.1.1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app.post_json("/api/v1/jobs", &app.write, &source_at("198.51.100.1")).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn token_url_must_be_https_unless_its_host_may_be_plaintext() {
    let app = TestApp::spawn().await;
    let p = app
        .post_json("/api/v1/jobs", &app.write, &refresh_grant("http://login.example.com/token"))
        .await
        .problem(422, "/problems/plaintext-not-allowed");
    assert_eq!(p["errors"][0]["field"], "target.oauth2.token_url");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("security.plaintext_allow"), "{p}");
    // Loopback is on the default plaintext allow-list, but not reachable by default.
    let p = app
        .post_json("/api/v1/jobs", &app.write, &refresh_grant("http://127.0.0.1:8080/token"))
        .await
        .problem(422, "/problems/network-not-allowed");
    assert_eq!(p["errors"][0]["field"], "target.oauth2.token_url");
    let r = app.post_json("/api/v1/jobs", &app.write, &refresh_grant("https://login.example.com/token")).await;
    assert_eq!(r.status, 201, "{}", r.text);

    let app = TestApp::spawn_with(ApiConfig { plaintext_allow: vec!["login.lan".into()], ..with_network(&["127.0.0.1"], &[]) }).await;
    let r = app.post_json("/api/v1/jobs", &app.write, &refresh_grant("http://login.lan/token")).await;
    assert_eq!(r.status, 201, "a host on security.plaintext_allow may use http://: {}", r.text);
    app.post_json("/api/v1/jobs", &app.write, &refresh_grant("http://127.0.0.1:8080/token"))
        .await
        .problem(422, "/problems/plaintext-not-allowed");
}

#[tokio::test]
async fn batch_rows_are_checked_with_row_numbers() {
    let app = TestApp::spawn().await;
    let csv = format!(
        "source_host,source_user,source_password,target_host,target_user,target_password\n\
         pop.example.com,a,{SRC_PASSWORD},imap.example.com,a,p\n\
         127.0.0.1,b,{SRC_PASSWORD},imap.example.com,b,p\n\
         pop.example.com,c,{SRC_PASSWORD},192.168.7.7,c,p\n"
    );
    let post = |path: &'static str, body: String| {
        let req = app.req(reqwest::Method::POST, path, Some(&app.write)).header("content-type", "text/csv").body(body);
        app.send(req)
    };
    let p = post("/api/v1/batches", csv.clone()).await.problem(422, "/problems/validation");
    let errors: Vec<(i64, &str, &str)> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["row"].as_i64().unwrap(), e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [(2, "source_host", "network-not-allowed"), (3, "target_host", "network-not-allowed")], "{p}");
    assert!(p["detail"].as_str().unwrap().starts_with("2 of 3 rows are invalid"), "{p}");
    assert_eq!(job_count(&app).await, 0);

    let r = post("/api/v1/batches?skip_invalid=true", csv).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["skipped"].as_array().unwrap().len(), 2);

    // JSON batches too.
    let body = json!({"jobs": [job_body("d"), source_at("10.0.0.1")]});
    let p = app.post_json("/api/v1/batches", &app.write, &body).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["row"], 2);
    assert_eq!(p["errors"][0]["field"], "source.host");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("network.allow = [\"10.0.0.1\"]"), "{p}");
}
