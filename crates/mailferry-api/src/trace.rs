//! One span per API request (method, matched route, status, latency), continuing the
//! caller's trace when the request carries a W3C `traceparent` (W3C Trace Context §3.2),
//! and the context a new job remembers so its worker continues the same trace.
//!
//! The span names the route *template* (`/api/v1/jobs/{id}`), never the raw path or query,
//! and records no header or body: requests carry tokens and mailbox passwords.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The middleware (outermost layer): the request span, its remote parent, the log line.
pub async fn track(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        latency_ms = Empty,
        otel.status_code = Empty,
    );
    // A malformed `traceparent` starts a new trace (W3C Trace Context §4.3), as if absent.
    let well_formed = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).is_some_and(mailferry_model::trace::well_formed);
    let remote = if well_formed { TraceContextPropagator::new().extract(&Headers(req.headers())) } else { opentelemetry::Context::new() };
    if remote.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer; `remote` is still attached below, so
        // a job created by this request remembers the caller's context either way.
        let _ = span.set_parent(remote.clone());
    }
    let start = Instant::now();
    let response = next.run(req).with_context(remote).instrument(span.clone()).await;
    let latency = start.elapsed();
    let status = response.status();
    span.record("http.response.status_code", status.as_u16()).record("latency_ms", latency.as_secs_f64() * 1000.0);
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    let _entered = span.enter();
    if status.is_client_error() || status.is_server_error() || !(method == Method::GET || method == Method::HEAD) {
        tracing::info!(status = status.as_u16(), latency_ms = latency.as_millis() as u64, "request");
    } else {
        tracing::debug!(status = status.as_u16(), latency_ms = latency.as_millis() as u64, "request");
    }
    response
}

/// The `traceparent` a job created by the current request should continue: the request's
/// own span when spans are exported here, else the caller's context (so a worker process
/// that exports spans still joins the caller's trace), else none.
pub fn current_trace_parent() -> Option<String> {
    let own = tracing::Span::current().context();
    mailferry_model::trace::traceparent(&own)
        .or_else(|| mailferry_model::trace::traceparent(&opentelemetry::Context::current()))
}

/// Request headers as the propagator's carrier.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    /// What a job created by a request with these headers would store, with no
    /// OpenTelemetry layer installed (an API process that does not export spans).
    async fn stored_for(traceparent: Option<&str>) -> Option<String> {
        let app = Router::new()
            .route("/jobs", post(|| async { super::current_trace_parent().unwrap_or_default() }))
            .layer(axum::middleware::from_fn(super::track));
        let mut req = Request::post("/jobs");
        if let Some(tp) = traceparent {
            req = req.header("traceparent", tp);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        Some(String::from_utf8(body.to_vec()).unwrap()).filter(|s| !s.is_empty())
    }

    #[tokio::test]
    async fn without_span_export_the_callers_context_is_kept_for_the_worker() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(stored_for(Some(tp)).await.as_deref(), Some(tp));
        assert_eq!(stored_for(None).await, None);
        // Malformed values start a new trace (W3C Trace Context §4.3): nothing to continue.
        assert_eq!(stored_for(Some("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01")).await, None);
        assert_eq!(stored_for(Some("garbage")).await, None);
    }
}
