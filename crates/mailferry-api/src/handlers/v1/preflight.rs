//! `?preflight=true` on `POST /jobs` and `POST /batches` (issue 17): the same bodies,
//! validated the same way, then each mailbox checked by the engine's preflight
//! (`mailferry_engine::preflight`) instead of created. Nothing is stored; no password is
//! logged or returned (the report carries user names, hosts and server texts only).

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailferry_engine::preflight::{job_of_spec, Preflight, SpecEnv, Throughput};
use mailferry_model::preflight::{BatchPreflight, Reason, ReasonCode};
use mailferry_model::{HostList, JobSpec, JobState};
use mailferry_store::JobFilter;

use crate::error::{ApiResult, FieldError};
use crate::report::{csv_response, write_record};
use crate::state::AppState;

pub use crate::state::PreflightSettings;

/// The client asked for CSV (`Accept: text/csv`).
pub(crate) fn wants_csv(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/csv")))
}

fn env(state: &AppState) -> SpecEnv {
    // The API's plaintext allow-list, as job creation checks it.
    let allow = Arc::new(HostList::parse(state.config.plaintext_allow.iter().map(String::as_str)).unwrap_or_default());
    SpecEnv {
        sealer: state.sealer.clone(),
        extra_roots_pem: state.preflight.extra_roots_pem.clone(),
        plaintext_allowed: Arc::new(move |host: &str| allow.contains(host)),
        network: Arc::clone(&state.config.network),
        archives: Arc::clone(&state.archives),
    }
}

/// Jobs looked at for the measured throughput: the latest this many finished in one run.
const MEASURED_JOBS: usize = 50;

/// This installation's throughput, from the latest jobs that succeeded in one run (a rerun's
/// `started_at` is its last run's, its bytes all runs'): bytes copied over their run time,
/// when they moved at least 1 MiB in at least 1 s together; else `None` (the default).
async fn measured(state: &AppState) -> ApiResult<Option<f64>> {
    let mut filter = JobFilter { state: Some(JobState::Succeeded), limit: 500, ..JobFilter::default() };
    let mut latest = Vec::new();
    // Oldest first, a page at a time: keep the tail.
    loop {
        let page = state.store.list_jobs(&filter).await?;
        let full = page.len() == filter.limit as usize;
        filter.after = page.last().map(|j| j.id);
        latest.extend(page.into_iter().filter(|j| j.runs == 1));
        if latest.len() > MEASURED_JOBS {
            latest.drain(..latest.len() - MEASURED_JOBS);
        }
        if !full {
            break;
        }
    }
    let (mut bytes, mut secs) = (0u64, 0f64);
    for job in &latest {
        let (Some(from), Some(to)) = (job.started_at.as_deref().and_then(when), job.finished_at.as_deref().and_then(when)) else {
            continue;
        };
        let took = (to - from).num_milliseconds() as f64 / 1000.0;
        if took > 0.0 {
            bytes += state.store.job_counts(job.id).await?.bytes;
            secs += took;
        }
    }
    Ok((bytes >= 1 << 20 && secs >= 1.0).then(|| bytes as f64 / secs))
}

/// A stored time: RFC 3339, or SQLite's `YYYY-MM-DD HH:MM:SS[.fff]` in UTC.
fn when(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).ok().or_else(|| {
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok().map(|t| t.and_utc())
    })
}

/// The preflight with this installation's measured throughput when there is one.
async fn runner(state: &AppState) -> ApiResult<Preflight> {
    let mut run = state.preflight.run.clone();
    if let Some(bytes_per_sec) = measured(state).await? {
        // The measured figure already holds the per-message round trips.
        run.throughput = Throughput { bytes_per_sec, secs_per_message: 0.0, ..run.throughput };
    }
    Ok(run)
}

/// `POST /jobs?preflight=true`: one mailbox's report, 200.
pub(crate) async fn job(state: &AppState, spec: &JobSpec) -> ApiResult<Response> {
    let report = match job_of_spec(spec, &env(state)).await {
        Ok(job) => runner(state).await?.mailbox(&job).await,
        Err(reason) => mailferry_engine::preflight::blocked(reason),
    };
    tracing::info!(source.host = %spec.source.host, verdict = report.verdict.as_str(), "job preflight");
    Ok(Json(report).into_response())
}

/// `POST /batches?preflight=true`: every valid row checked, the invalid rows (with
/// `skip_invalid=true`) reported blocked with `invalid-row`; JSON, or CSV when asked.
pub(crate) async fn batch(state: &AppState, specs: Vec<(usize, JobSpec)>, invalid: &[FieldError], csv: bool) -> ApiResult<Response> {
    let env = env(state);
    let mut rows: Vec<(usize, Result<_, Reason>)> = Vec::with_capacity(specs.len());
    for (row, spec) in &specs {
        rows.push((*row, job_of_spec(spec, &env).await));
    }
    let mut bad: Vec<usize> = invalid.iter().filter_map(|e| e.row).collect();
    bad.dedup();
    for row in bad {
        let detail: Vec<String> = invalid.iter().filter(|e| e.row == Some(row)).map(|e| format!("{}: {}", e.field, e.message)).collect();
        rows.push((row, Err(Reason { code: ReasonCode::InvalidRow, detail: detail.join("; ") })));
    }
    let report = runner(state).await?.batch(rows).await;
    let t = &report.totals;
    tracing::info!(ready = t.ready, warning = t.warning, blocked = t.blocked, "batch preflight");
    if csv {
        batch_csv(&report)
    } else {
        Ok(Json(report).into_response())
    }
}

/// A batch file's row: its 1-based number, and its spec or its problems.
pub type CsvRowSpec = (usize, Result<JobSpec, Vec<FieldError>>);

/// `mailferry preflight --batch FILE.csv`: the file's rows validated as `POST /batches`
/// validates them (our columns, imapsync's; servers in every row), each a spec or its
/// problems.
pub fn specs_from_csv(
    bytes: &[u8],
    config: &crate::ApiConfig,
    sealer: &mailferry_model::Sealer,
) -> ApiResult<Vec<CsvRowSpec>> {
    let rows = super::batches::csv::parse_csv(bytes)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| (i + 1, row.and_then(|body| crate::spec::validate(body, config, sealer))))
        .collect())
}

/// The CSV columns of a batch preflight, one row per mailbox (then a `totals` row).
pub const CSV_COLUMNS: [&str; 11] = [
    "row", "verdict", "reasons", "source", "target", "messages", "bytes", "largest_bytes", "over_append_limit",
    "over_max_message_bytes", "estimate_secs",
];

fn batch_csv(report: &BatchPreflight) -> ApiResult<Response> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    write_record(&mut w, CSV_COLUMNS)?;
    for r in &report.rows {
        let p = &r.preflight;
        let reasons: Vec<String> = p.reasons.iter().map(|x| format!("{}: {}", x.code.as_str(), x.detail)).collect();
        write_record(&mut w, [
            r.row.to_string(),
            p.verdict.as_str().to_owned(),
            reasons.join(" | "),
            p.source.endpoint.clone(),
            p.target.endpoint.clone(),
            p.source.messages.to_string(),
            p.source.bytes.to_string(),
            p.source.largest.first().map(|m| m.bytes.to_string()).unwrap_or_default(),
            p.target.over_append_limit.to_string(),
            p.target.over_max_message_bytes.to_string(),
            p.estimate_secs.to_string(),
        ])?;
    }
    let t = &report.totals;
    let summary = format!("ready={} warning={} blocked={}", t.ready, t.warning, t.blocked);
    write_record(&mut w, [
        "totals".to_owned(), String::new(), summary, String::new(), String::new(), t.messages.to_string(), t.bytes.to_string(),
        String::new(), String::new(), String::new(), t.estimate_secs.to_string(),
    ])?;
    let body = w.into_inner().map_err(|e| crate::error::ApiError::Internal(format!("writing CSV: {e}")))?;
    Ok(csv_response(body, "preflight.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailferry_model::preflight::{MailboxPreflight, PreflightRow, PreflightTotals, SourceFacts, TargetFacts, Verdict};

    #[test]
    fn stored_times_parse_both_ways() {
        let a = when("2026-12-07 22:00:01").unwrap();
        let b = when("2026-12-07T22:00:03.5Z").unwrap();
        assert_eq!((b - a).num_milliseconds(), 2500);
        assert!(when("yesterday").is_none());
    }

    #[test]
    fn csv_cells_are_defused_and_totals_close_it() {
        let reason = Reason { code: ReasonCode::SourceError, detail: "=HYPERLINK(\"x\")".into() };
        let row = PreflightRow {
            row: 1,
            preflight: MailboxPreflight {
                verdict: Verdict::Blocked,
                reasons: vec![reason],
                source: SourceFacts { endpoint: "=cmd".into(), ..Default::default() },
                target: TargetFacts::default(),
                estimate_secs: 0,
            },
        };
        let report = BatchPreflight { rows: vec![row], totals: PreflightTotals { blocked: 1, ..Default::default() } };
        let Ok(resp) = batch_csv(&report) else { panic!("csv") };
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        let body = futures::executor::block_on(axum::body::to_bytes(resp.into_body(), 1 << 20)).unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("1,blocked,\"source-error: =HYPERLINK"), "{text}");
        assert!(lines[1].contains("'=cmd"), "a cell starting with = is defused: {text}");
        assert!(lines[2].starts_with("totals,,ready=0 warning=0 blocked=1"), "{text}");
    }
}
