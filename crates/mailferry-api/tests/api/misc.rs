//! Probes, docs, the OpenAPI document, and problem+json on routing errors.

use crate::TestApp;

#[tokio::test]
async fn probes_docs_and_openapi_are_reachable() {
    let app = TestApp::spawn().await;
    let r = app.send(app.req(reqwest::Method::GET, "/healthz", None)).await;
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
    assert_eq!(app.send(app.req(reqwest::Method::GET, "/readyz", None)).await.status, 200);

    // The document and the docs need no token (issue 16); the API itself still does.
    let get = |path: &str| app.send(app.req(reqwest::Method::GET, path, None));
    let r = get("/api/openapi.json").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in ["/api/v1/jobs", "/api/v1/jobs/{id}/events", "/api/v1/batches", "/api/v1/tokens/{id}", "/healthz"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    // Bearer auth declared, globally: what Swagger UI's "Authorize" offers and sends.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));

    // Followed to /api/docs/, whose relative asset paths resolve under it.
    assert_eq!(get("/api/docs").await.status, 200, "redirected to /api/docs/");
    let r = get("/api/docs/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"));
    assert!(!r.text.contains("<script>") && !r.text.contains("style="), "nothing inline for the CSP to refuse: {}", r.text);
    for asset in ["swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        assert!(r.text.contains(asset), "{asset} in {}", r.text);
        let a = get(&format!("/api/docs/{asset}")).await;
        assert_eq!(a.status, 200, "{asset}");
        assert!(a.text.len() > 100, "{asset} is served whole");
    }
    // The page loads our document, with no online validator (an image from swagger.io).
    let init = get("/api/docs/swagger-initializer.js").await.text;
    assert!(init.contains("\"/api/openapi.json\""), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    app.send(app.req(reqwest::Method::GET, "/api/v1/jobs", None)).await.problem(401, "/problems/unauthorized");
    app.send(app.req(reqwest::Method::POST, "/api/openapi.json", None)).await.problem(401, "/problems/unauthorized");
}

#[tokio::test]
async fn routing_errors_are_problems() {
    let app = TestApp::spawn().await;
    app.get("/api/v1/nothing", &app.read).await.problem(404, "/problems/not-found");
    let r = app.send(app.req(reqwest::Method::DELETE, "/api/v1/jobs", Some(&app.admin))).await;
    r.problem(405, "/problems/method-not-allowed");
    assert!(r.header("allow").is_some());
    app.get("/api/v1/jobs/abc", &app.read).await.problem(400, "/problems/bad-request");
    let key = app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.write)).header("idempotency-key", "");
    app.send(key).await.problem(400, "/problems/bad-request");
}

#[test]
fn openapi_json_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/openapi.json");
    let current = serde_json::to_string_pretty(&mailferry_api::openapi()).unwrap() + "\n";
    if std::env::var("MAILFERRY_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &current).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == current,
        "openapi/openapi.json is stale: run `MAILFERRY_BLESS=1 cargo test -p mailferry-api openapi_json_is_current` and commit it"
    );
}
