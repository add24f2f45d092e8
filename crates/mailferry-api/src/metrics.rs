//! Prometheus metrics at `GET /metrics` (text format 0.0.4). No token needed by default,
//! like the probes: it carries counts and host names, never names of mailboxes or
//! messages; with `api.metrics_require_token` it needs a bearer token of any scope (401
//! otherwise), on the API listener and on a worker's `worker.metrics_listen` alike.
//!
//! Host names come from jobs any write-scope token can create, so `host` label values are
//! bounded ([`mailferry_model::HostLabels`]): the first `api.metrics_max_hosts` distinct
//! hosts keep their name, later ones are counted under `host="other"`.
//!
//! Two kinds of figures, kept apart on purpose:
//!
//! - **Cluster figures**, read from the database at scrape time ([`ClusterFigures`]): jobs
//!   by state, queue depth and readiness, age of the oldest queued job, expired leases,
//!   ledger rows by state, live sessions per host (leases), and each archive's blobs, bytes
//!   and dedup ratio. They are right however many worker processes share the database,
//!   so scrape them from one API process (they are the same from every one). They are
//!   computed at most once per `metrics_cache_ms` (default 1 s): an unauthenticated
//!   endpoint must not be a way to load the database.
//! - **Process figures**, from this process's `metrics` registry: HTTP requests and their
//!   latency by route template, failed and rate-limited authentications, and what the
//!   in-process workers did (messages and bytes by target kind and outcome, errors by class,
//!   active sessions per host, lease takeovers and losses). A worker-only process
//!   (`mailferry worker`) serves the same at `worker.metrics_listen` ([`process_app`]);
//!   sum them across instances in PromQL.
//!
//! The engine records through the `metrics` facade (counters in memory, no I/O); this
//! module installs the one global recorder that renders them.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mailferry_model::HostLabels;
use mailferry_store::{ClusterFigures, Store};

use crate::state::AppState;
pub use crate::recorder::{install, render_process, spawn_upkeep, ClusterCache, CONTENT_TYPE};
pub(crate) use crate::recorder::track;

/// Prometheus metrics: cluster figures from the database and archives, then this
/// process's own (HTTP, authentication, in-process workers). Public unless
/// `api.metrics_require_token` is set; then any valid bearer token (every scope) is needed.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "health", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "`api.metrics_require_token` is set and no valid bearer token was given", body = crate::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let cluster = {
        // Concurrent scrapes wait here and share one computation.
        let mut cache = state.metrics_cache.0.lock().await;
        let ttl = Duration::from_millis(state.config.metrics_cache_ms);
        match cache.as_ref() {
            Some((at, text)) if at.elapsed() < ttl => text.clone(),
            _ => {
                let text = cluster_text(&state).await;
                *cache = Some((Instant::now(), text.clone()));
                text
            }
        }
    };
    let mut body = cluster;
    body.push_str(&render_process(&install()));
    ([(header::CONTENT_TYPE, CONTENT_TYPE), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn cluster_text(state: &AppState) -> String {
    let mut t = Text::default();
    let figures = state.store.cluster_figures().await;
    t.family("mailferry_database_up", "gauge", "1 when the cluster figures below could be read from the database");
    t.sample("mailferry_database_up", &[], if figures.is_ok() { 1.0 } else { 0.0 });
    match figures {
        Ok(f) => write_cluster(&mut t, &f, &state.host_labels),
        Err(e) => tracing::warn!(error = %e, "reading cluster figures for /metrics failed"),
    }
    write_archives(&mut t, state).await;
    t.0
}

fn write_cluster(t: &mut Text, f: &ClusterFigures, hosts: &HostLabels) {
    t.family("mailferry_jobs", "gauge", "Jobs by state, across every worker (from the database)");
    for (state, n) in &f.jobs_by_state {
        t.sample("mailferry_jobs", &[("state", state.as_str())], *n as f64);
    }
    let queued = f.jobs_by_state.iter().find(|(s, _)| s.as_str() == "queued").map_or(0, |(_, n)| *n);
    t.family("mailferry_queue_depth", "gauge", "Queued jobs (including those waiting out a retry backoff)");
    t.sample("mailferry_queue_depth", &[], queued as f64);
    t.family("mailferry_queue_ready", "gauge", "Queued jobs a worker may claim now");
    t.sample("mailferry_queue_ready", &[], f.queue_ready as f64);
    t.family("mailferry_queue_oldest_age_seconds", "gauge", "Seconds the longest-waiting queued job has been queued (0 when none)");
    t.sample("mailferry_queue_oldest_age_seconds", &[], f.oldest_queued_age_secs);
    t.family("mailferry_leases_expired", "gauge", "Running jobs whose lease expired and no worker took over yet");
    t.sample("mailferry_leases_expired", &[], f.expired_leases as f64);
    t.family("mailferry_ledger_messages", "gauge", "Ledger rows (messages) by state over every job");
    for (state, n) in &f.ledger_by_state {
        t.sample("mailferry_ledger_messages", &[("state", state.as_str())], *n as f64);
    }
    t.family("mailferry_cluster_sessions", "gauge", "Live leases per host across every worker: what the per-host caps count");
    for (role, by_host) in [("source", &f.sessions_by_source_host), ("target", &f.sessions_by_target_host)] {
        // Hosts beyond the label limit are summed under `other`.
        let mut labelled: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for (host, n) in by_host {
            *labelled.entry(hosts.label(host)).or_default() += *n;
        }
        for (host, n) in &labelled {
            t.sample("mailferry_cluster_sessions", &[("role", role), ("host", host)], *n as f64);
        }
    }
}

async fn write_archives(t: &mut Text, state: &AppState) {
    let mut stats = Vec::new();
    for name in state.archives.names().await.unwrap_or_default() {
        let figures = match state.archives.get(&name).await {
            Ok(archive) => archive.stats().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match figures {
            Ok(s) => stats.push(s),
            Err(e) => tracing::warn!(archive = %name, error = %e, "archive figures for /metrics unavailable"),
        }
    }
    if stats.is_empty() {
        return;
    }
    type Pick = fn(&mailferry_archive::ArchiveStats) -> f64;
    let families: [(&str, &str, Pick); 5] = [
        ("mailferry_archive_blobs", "Distinct messages stored (blobs, not purged)", |s| s.messages as f64),
        ("mailferry_archive_occurrences", "Arrivals recorded (one per source message)", |s| s.occurrences as f64),
        ("mailferry_archive_stored_bytes", "Bytes in object storage (compressed, sealed)", |s| s.stored_bytes as f64),
        ("mailferry_archive_logical_bytes", "Bytes of every arrival before dedup and compression", |s| s.logical_bytes as f64),
        ("mailferry_archive_dedup_ratio", "Logical bytes / distinct bytes (1 = no duplicates)", |s| s.dedup_ratio),
    ];
    for (name, help, pick) in families {
        t.family(name, "gauge", help);
        for s in &stats {
            t.sample(name, &[("archive", &s.name)], pick(s));
        }
    }
}

/// Prometheus text exposition, by hand for the figures read at scrape time.
#[derive(Debug, Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A tiny app for worker-only processes: `/metrics` (this process's figures) and
/// `/healthz`. Without a token by default, like the API's `/metrics` (bind it to a private
/// address); with `token_store` (`api.metrics_require_token`), `/metrics` needs a bearer
/// token of any scope that `token_store` knows, else 401 problem+json.
pub fn process_app(token_store: Option<std::sync::Arc<dyn Store>>) -> Router {
    let handle = install();
    let metrics = get(move |req: Request| async move {
        if let Some(store) = &token_store {
            if let Err(e) = crate::auth::check_any_token(store.as_ref(), req.headers()).await {
                return e.into_response();
            }
        }
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], render_process(&handle)).into_response()
    });
    Router::new().route("/metrics", metrics).route("/healthz", get(|| async { "ok" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_sessions_are_labelled_by_at_most_the_limit_of_hosts_plus_other() {
        let hosts = HostLabels::new(2);
        let figures = ClusterFigures {
            sessions_by_source_host: vec![("a.example".into(), 1), ("b.example".into(), 2), ("c.example".into(), 3), ("d.example".into(), 4)],
            ..ClusterFigures::default()
        };
        let mut t = Text::default();
        write_cluster(&mut t, &figures, &hosts);
        let lines: Vec<&str> = t.0.lines().filter(|l| l.starts_with("mailferry_cluster_sessions{")).collect();
        assert_eq!(
            lines,
            [
                "mailferry_cluster_sessions{role=\"source\",host=\"a.example\"} 1",
                "mailferry_cluster_sessions{role=\"source\",host=\"b.example\"} 2",
                "mailferry_cluster_sessions{role=\"source\",host=\"other\"} 7",
            ]
        );
    }

    #[test]
    fn text_format() {
        let mut t = Text::default();
        t.family("m", "gauge", "help text");
        t.sample("m", &[("host", "a\"b\\c\nd"), ("role", "source")], 2.0);
        t.sample("m", &[], 0.5);
        assert_eq!(t.0, "# HELP m help text\n# TYPE m gauge\nm{host=\"a\\\"b\\\\c\\nd\",role=\"source\"} 2\nm 0.5\n");
    }
}
