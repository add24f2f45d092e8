//! The dashboard (DESIGN.md §7): `web/index.html` at `/` and `web/assets/*` at
//! `/assets/*`, embedded in the binary so `mailferry serve` needs no files beside it; and
//! the interactive API docs: the vendored Swagger UI at `/api/docs/` reading
//! `/api/openapi.json`.
//!
//! These routes need no token: the page holds no data and signs in by itself (the token
//! stays in the tab's session storage and goes out as a bearer header on API calls); the
//! OpenAPI document describes the API, not its data, and Swagger UI sends the token the
//! reader gives its "Authorize" dialog with each "Try it out".
//! Every response of the router, these included, carries the security headers of
//! [`security_headers`]: a CSP that allows only same-origin scripts, styles and
//! connections, no framing, no MIME sniffing, no referrer.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_embed::RustEmbed;
use sha2::{Digest, Sha256};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::error::ApiError;

/// `web/assets`, embedded at compile time (also in debug builds: `debug-embed`).
#[derive(RustEmbed)]
#[folder = "../../web/assets"]
struct Assets;

/// The page itself. Kept out of [`Assets`] so that `web/` can hold the browser tests and
/// their `node_modules` without embedding them.
const INDEX_HTML: &[u8] = include_bytes!("../../../web/index.html");

/// Prefix of the embedded assets' URLs.
pub const ASSETS_PREFIX: &str = "/assets/";

/// The strict policy the dashboard is written for: nothing inline, nothing remote.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Where Swagger UI is served (`/api/docs` redirects to `/api/docs/`, whose relative asset
/// paths need the slash).
pub const DOCS_PATH: &str = "/api/docs";

/// Whether `path` is served to `GET` without a token: the page and its assets, the OpenAPI
/// document and Swagger UI's files.
pub fn is_public(path: &str) -> bool {
    let docs = path.strip_prefix(DOCS_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    path == "/" || path.starts_with(ASSETS_PREFIX) || path == OPENAPI_PATH || docs
}

/// Swagger UI at [`DOCS_PATH`] and `api` at [`OPENAPI_PATH`]. The UI's files are the
/// vendored copy built into the binary (no CDN), and its configuration keeps it inside the
/// page's CSP: no online validator badge (an image from swagger.io), no "Explore" box
/// loading other documents.
pub fn docs<S: Clone + Send + Sync + 'static>(api: utoipa::openapi::OpenApi) -> Router<S> {
    let config = Config::new([OPENAPI_PATH])
        .validator_url("none")
        .use_base_layout()
        .display_request_duration(true)
        .filter(true);
    SwaggerUi::new(DOCS_PATH).url(OPENAPI_PATH, api).config(config).into()
}

/// `/` and `/assets/{*path}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    let etag = etag(&Sha256::digest(INDEX_HTML).into());
    file(&headers, INDEX_HTML.to_vec(), "text/html; charset=utf-8", &etag)
}

async fn asset(req: Request) -> Response {
    let path = req.uri().path().strip_prefix(ASSETS_PREFIX).unwrap_or_default();
    match Assets::get(path) {
        Some(f) => file(req.headers(), f.data.into_owned(), content_type(path), &etag(&f.metadata.sha256_hash())),
        None => ApiError::NotFound(format!("there is no asset {path:?}")).into_response(),
    }
}

fn etag(hash: &[u8; 32]) -> String {
    format!("\"{}\"", hex::encode(&hash[..16]))
}

/// A static file; `no-cache` (revalidate with the ETag) because the names carry no hash.
fn file(req: &HeaderMap, body: Vec<u8>, content_type: &'static str, etag: &str) -> Response {
    let fresh = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { Body::from(body).into_response() };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    response
}

/// The media type of an asset, from its extension (what `nosniff` makes browsers trust).
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Add the security headers to every response (pages, API answers, errors alike).
pub async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_assets_are_embedded() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        assert!(html.contains("/assets/app.js"));
        assert!(!html.contains("<script>") && !html.contains("style="), "no inline script or style");
        for name in ["app.js", "app.css"] {
            assert!(Assets::get(name).is_some(), "{name} is embedded");
        }
        assert!(Assets::iter().all(|p| content_type(&p) != "application/octet-stream"), "every asset has a known type");
    }

    #[test]
    fn public_paths() {
        assert!(is_public("/") && is_public("/assets/app.js"));
        for docs in ["/api/openapi.json", "/api/docs", "/api/docs/", "/api/docs/swagger-ui.css"] {
            assert!(is_public(docs), "{docs}");
        }
        assert!(!is_public("/api/v1/jobs") && !is_public("/assets") && !is_public("/index.html"));
        assert!(!is_public("/api/docsx") && !is_public("/api/openapi.jsonx") && !is_public("/api/v1/openapi.json"));
    }
}
