//! The whole application: routes, OpenAPI document, docs UI and the middleware stack.
//!
//! Layers, outermost first: the request's trace span (`trace.rs`); request metrics (count and latency by route template); the security headers (CSP, `nosniff`, no referrer, no
//! framing) on every response; problem+json for any error response that is not one
//! already (axum's 405, unknown static files); the body limit; the audit log of
//! state-changing calls; bearer authentication (all but the probes, `/metrics` unless
//! `api.metrics_require_token`, the dashboard's page and assets, the OpenAPI document and
//! Swagger UI) with the
//! failed-authentication limit; `Idempotency-Key`
//! handling; then the routes.

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, map_response};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, FieldError, Problem, PROBLEM_JSON};
use crate::handlers::{health, v1};
use crate::idempotency::{self, Idempotency};
use crate::state::AppState;
use crate::{audit, auth, metrics, views, web};

pub use crate::web::{DOCS_PATH, OPENAPI_PATH};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mailferry",
        description = "Drain POP3 mailboxes into IMAP or a compliance archive, exactly once. Every route except /healthz, /readyz, /metrics (unless the server sets api.metrics_require_token: then any scope), this document \
                       (GET /api/openapi.json), its interactive docs (GET /api/docs/) and the web dashboard's page and assets (GET / and /assets/*) needs `Authorization: Bearer <token>` (scopes: read for GET, write for other methods, \
                       admin for /tokens, /audit and for archive holds and retention). Too many invalid tokens from one address are answered 429 with Retry-After. \
                       Every state-changing call made with a valid token is recorded in the audit log. Errors are RFC 9457 application/problem+json with a stable `type`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "One mailbox drain each: create, watch, control, report"),
        (name = "batches", description = "Many jobs at once, from CSV or JSON"),
        (name = "receipts", description = "Signed migration receipts: per run, every source message and where it went, with a Merkle root and an Ed25519 signature anyone can check offline"),
        (name = "archives", description = "Compliance archives: search, exact bytes, provenance, verify, export; holds and retention (admin scope)"),
        (name = "tokens", description = "API tokens (admin scope)"),
        (name = "audit", description = "The audit log of state-changing calls (admin scope)"),
        (name = "health", description = "Probes and Prometheus metrics (no token needed, unless api.metrics_require_token for /metrics)"),
    ),
    components(schemas(Problem, FieldError, views::Counts))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("mf_ token")
            .description(Some("A token from `mailferry token create` or POST /api/v1/tokens"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(crate::metrics::scrape))
        .nest("/api/v1", v1::router())
}

/// The OpenAPI 3.1 document of the API (what `/api/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router().into_openapi();
    crate::contract::complete(&mut doc);
    doc
}

/// The whole HTTP application: `/api/v1/*`, `/healthz`, `/readyz`, `/api/openapi.json`,
/// the offline docs at `/api/docs`, and the dashboard at `/` and `/assets/*`.
pub fn app(state: AppState) -> Router {
    let (routes, mut api) = api_router().split_for_parts();
    crate::contract::complete(&mut api);
    routes
        .merge(web::docs(api))
        .merge(web::router())
        .fallback(not_found)
        .layer(from_fn_with_state(Idempotency::new(state.clone()), idempotency::middleware))
        .layer(from_fn_with_state(state.clone(), auth::require_token))
        .layer(from_fn_with_state(state.clone(), audit::record))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(map_response(problemize))
        .layer(map_response(web::security_headers))
        .layer(from_fn(metrics::track))
        .layer(axum::middleware::from_fn(crate::trace::track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// Turn any error response that is not problem+json yet into one, keeping its headers
/// (`Allow` on a 405).
async fn problemize(response: Response) -> Response {
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024).await.ok().and_then(|b| String::from_utf8(b.to_vec()).ok()).unwrap_or_default();
    let error = match status {
        StatusCode::BAD_REQUEST => ApiError::BadRequest(text),
        StatusCode::NOT_FOUND => ApiError::NotFound(if text.is_empty() { "no such route".into() } else { text }),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            ApiError::MethodNotAllowed(format!("this route does not accept that method; allowed: {allow}"))
        }
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(0),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(text),
        s if s.is_server_error() => ApiError::Internal(format!("{s}: {text}")),
        _ => ApiError::BadRequest(text),
    };
    let mut problem = error.to_problem();
    problem.status = status.as_u16();
    if let ApiError::PayloadTooLarge(_) = error {
        problem.detail = "the request body is too large".into();
    }
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "request failed");
    }
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(serde_json::to_vec(&problem).unwrap_or_default())).into_response()
}
