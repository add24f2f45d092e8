//! The dashboard's page and assets: served without a token with their content types, and
//! the security headers on every response (pages, API answers and errors alike).

use crate::TestApp;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[track_caller]
fn assert_security_headers(r: &crate::Resp, what: &str) {
    assert_eq!(r.header("content-security-policy"), Some(CSP), "{what}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{what}");
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
}

#[tokio::test]
async fn the_dashboard_is_served_without_a_token() {
    let app = TestApp::spawn().await;
    let r = app.send(app.req(reqwest::Method::GET, "/", None)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text.contains(r#"<script type="module" src="/assets/app.js">"#), "{}", r.text);
    assert!(!r.text.contains("<script>") && !r.text.contains("style="), "no inline script or style");
    assert_security_headers(&r, "/");

    for (path, ty) in [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/views/jobs.js", "text/javascript; charset=utf-8"),
        ("/assets/app.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = app.send(app.req(reqwest::Method::GET, path, None)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ty), "{path}");
        assert_security_headers(&r, path);
        // Revalidation: the same ETag answers 304.
        let etag = r.header("etag").expect("an ETag").to_owned();
        let again = app.send(app.req(reqwest::Method::GET, path, None).header("if-none-match", &etag)).await;
        assert_eq!(again.status, 304, "{path}");
    }

    let r = app.send(app.req(reqwest::Method::GET, "/assets/nope.js", None)).await;
    r.problem(404, "/problems/not-found");
    assert_security_headers(&r, "missing asset");
    let r = app.send(app.req(reqwest::Method::GET, "/assets/../Cargo.toml", None)).await;
    assert!(matches!(r.status, 400 | 401 | 404), "no file outside web/assets: {}", r.status);
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let ok = app.get("/api/v1/jobs", &app.read).await;
    assert_eq!(ok.status, 200);
    assert_security_headers(&ok, "API answer");
    let unauthorized = app.send(app.req(reqwest::Method::GET, "/api/v1/jobs", None)).await;
    unauthorized.problem(401, "/problems/unauthorized");
    assert_security_headers(&unauthorized, "401");
    let probe = app.send(app.req(reqwest::Method::GET, "/healthz", None)).await;
    assert_security_headers(&probe, "probe");
    let docs = app.get("/api/docs/", &app.read).await;
    assert_security_headers(&docs, "docs");
    // Only the page and its assets are public: other paths still need a token.
    app.send(app.req(reqwest::Method::GET, "/index.html", None)).await.problem(401, "/problems/unauthorized");
    app.send(app.req(reqwest::Method::POST, "/", None)).await.problem(401, "/problems/unauthorized");
}
