//! This process's `metrics` recorder (Prometheus): installed once, kept up, rendered; the
//! HTTP request counters; and the cache of the cluster part of the page. Below the
//! application state, which holds the cache and installs the recorder; the `/metrics`
//! handlers in [`crate::metrics`] stand above both.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The media type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const HTTP_REQUESTS: &str = "mailferry_http_requests_total";
const HTTP_DURATION: &str = "mailferry_http_request_duration_seconds";
/// Seconds; API calls are mostly a few milliseconds, uploads and reports longer.
const HTTP_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The process's recorder, installed once as the global `metrics` recorder. If another
/// recorder was installed first, figures recorded through the facade go there and this
/// page shows only the cluster figures (logged once).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &HTTP_BUCKETS)
                .expect("non-empty buckets")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed: /metrics shows cluster figures only");
            }
            describe();
            handle
        })
        .clone()
}

/// Histograms are kept as raw samples until upkeep folds them in: run it every few
/// seconds for the life of the process (also done before every render).
pub fn spawn_upkeep() {
    static STARTED: OnceLock<()> = OnceLock::new();
    if STARTED.set(()).is_ok() {
        let handle = install();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered by this process, by method, route template and status");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "Time to the response head, by method and route template");
    describe_counter!("mailferry_http_auth_failures_total", "Requests with an invalid bearer token");
    describe_counter!("mailferry_http_auth_rate_limited_total", "Requests refused with 429: too many failed authentications from the client");
    describe_counter!("mailferry_messages_total", "Messages handled by this process's workers, by target kind (imap|archive) and outcome (copied, including copies found at the destination|skipped|failed)");
    describe_counter!("mailferry_message_bytes_total", "Wire bytes of the messages this process's workers appended, by target kind and outcome");
    describe_counter!("mailferry_errors_total", "Failed job attempts by error class (retryable|fatal) and side (source|destination|archive|store|spool|other)");
    describe_gauge!("mailferry_sessions_active", "Mail sessions this process holds open, by protocol and host");
    describe_counter!("mailferry_jobs_claimed_total", "Jobs this process claimed (takeover: whether from an expired lease)");
    describe_counter!("mailferry_lease_takeovers_total", "Jobs this process took over after another worker's lease expired");
    describe_counter!("mailferry_leases_lost_total", "Jobs this process stopped because its lease expired and another worker took it");
    describe_counter!("mailferry_jobs_finished_total", "Jobs this process handed back, by resulting state");
}

/// The figures of this process only (what `mailferry worker` serves at `worker.metrics_listen`).
pub fn render_process(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// Middleware: count every request and time it, labelled by the matched route template
/// (`/api/v1/jobs/{id}`), never the raw path, so label values stay few.
pub(crate) async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route).record(start.elapsed().as_secs_f64());
    response
}

/// The cache of the cluster part of the page.
#[derive(Debug, Default)]
pub struct ClusterCache(pub(crate) tokio::sync::Mutex<Option<(Instant, String)>>);

