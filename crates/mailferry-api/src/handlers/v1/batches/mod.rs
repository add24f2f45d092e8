//! `/api/v1/batches`: many jobs at once from a CSV file (the admin's spreadsheet) or JSON,
//! all-or-nothing unless `?skip_invalid=true`; the list of batches with their progress, one
//! batch's progress, and its per-job report.
//!
//! The CSV columns (ours, imapsync's, Microsoft 365's) and the batch's servers given once
//! are in [`csv`]; every row is then validated as `POST /jobs` validates a body
//! ([`crate::spec::validate`]).

pub(super) mod csv;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailferry_model::JobSpec;
use mailferry_store::{BatchFilter, JobFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{is_json, json_error, media_type, ApiPath, ApiQuery};
use crate::report::{csv_response, write_record};
use crate::spec::{validate, JobBody};
use crate::state::AppState;
use crate::views::{BatchView, Counts};

pub(crate) use self::csv::parse_csv;
use self::csv::{parse_csv_with, CsvBatch, Defaults};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get)).routes(routes!(report))
}

/// Most jobs one batch may hold.
const MAX_BATCH_JOBS: usize = 10_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// Create the valid rows and report the invalid ones instead of refusing the batch.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Batch name for CSV uploads (JSON bodies carry `name`).
    pub name: Option<String>,
    /// CSV only: the POP3 server of every row that leaves `source_host` empty, given once
    /// for the batch (as a Microsoft 365 migration file needs): `pop3s://host[:port]`
    /// (implicit TLS, default port 995) or `pop3://host[:port]` (STLS, default 110). No
    /// user name or password: those are the rows'.
    #[param(example = "pop3s://pop.example.com:995")]
    pub source: Option<String>,
    /// CSV only: the target of every row that leaves it empty, given once for the batch:
    /// `imaps://host[:port][/folder]` (implicit TLS, default 993), `imap://host[:port][/folder]`
    /// (STARTTLS, default 143), or `archive:NAME` (a compliance archive on this server).
    #[param(example = "imaps://imap.example.com:993")]
    pub target: Option<String>,
    /// Check every mailbox instead of creating the batch (issue 17): 200 with
    /// `{rows: [{row, verdict, reasons, source, target, estimate_secs}], totals}`, or the
    /// same as CSV with `Accept: text/csv`. With `skip_invalid=true` invalid rows are
    /// reported `blocked` (`invalid-row`). Nothing is created.
    #[serde(default)]
    pub preflight: bool,
}

/// A JSON batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub name: Option<String>,
    /// Job bodies, as for `POST /jobs`; errors are reported per row (1-based).
    #[schema(value_type = Vec<JobBody>, min_items = 1, max_items = 10_000)]
    pub jobs: Vec<serde_json::Value>,
    /// Delta passes for every job without a `schedule` of its own (issue 17). CSV batches
    /// give it per row: columns `schedule_every` (or `every`), `schedule_not_before`
    /// (`not_before`) and `schedule_until` (`until`), as in a job body's `schedule`.
    pub schedule: Option<mailferry_model::ScheduleText>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreated {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// Ids of the jobs created, in row order.
    pub jobs: Vec<i64>,
    /// Rows left out with `skip_invalid=true`, with their problems.
    pub skipped: Vec<FieldError>,
}

/// Create a batch of jobs from `text/csv` or `application/json`.
///
/// Every row is validated as `POST /jobs` is, the network policy included; when any row is
/// invalid nothing is created (422 listing each problem with its row number and column)
/// unless `skip_invalid=true`.
///
/// **CSV.** One header row, then one mailbox per row; `,` or `;` between cells (detected
/// from the header); column names are case-insensitive (spaces and dashes read as `_`). An
/// unknown column refuses the batch (422 naming it). Three spellings, which may be mixed:
///
/// - ours: `source_host`, `source_port`, `source_security`, `source_user`,
///   `source_password`, `source_auth`, `source_tls_pin`; `target_kind` (`imap` or
///   `archive`), `target_archive` (archive name), `target_host`, `target_port`,
///   `target_security`, `target_user`, `target_password`, `target_folder`, `target_flags`
///   (space-separated IMAP flags, e.g. `\Seen $Migrated`), `target_auth`,
///   `target_tls_pin`; `delete` (`keep`, `after-verified`, `after-days:N`), `verify`,
///   `dry_run` (`true`/`false`, `yes`/`no`, `1`/`0`), `max_message_bytes` (bytes, or with
///   `K`, `M`, `G`: `25M`), `labels` (`key=value;key=value`). Every value means what the
///   same field of a JSON job body means, and is checked the same way.
/// - imapsync's: `host1`, `port1`, `user1`, `password1`, `host2`, `port2`, `user2`,
///   `password2`, `folder2`.
/// - Microsoft 365's IMAP migration file: `EmailAddress` (the destination mailbox:
///   `target_user`), `UserName` and `Password` (the source login: `source_user`,
///   `source_password`). The servers are not in that file: give them once for the batch
///   with `source=pop3s://host:port` and `target=imaps://host:port` (then add a
///   `target_password` column) or `target=archive:NAME` (each job then carries the label
///   `mailbox=<EmailAddress>`).
///
/// Required: `source_user`, `source_password`, `source_host` (unless `source` is given) and,
/// for IMAP targets, `target_host` (unless `target` is given), `target_user`,
/// `target_password`; an archive target needs only its name.
#[utoipa::path(post, operation_id = "create_batch", path = "/batches", tag = "batches",
    params(CreateQuery, ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe POST")),
    request_body(content(
        (BatchBody = "application/json"),
        (String = "text/csv", example = "source_host,source_user,source_password,target_host,target_user,target_password\npop.example.com,alice,secret1,imap.example.com,alice,secret2\n"),
    )),
    responses(
        (status = 201, description = "Created", body = BatchCreated, headers(("Location" = String, description = "URL of the batch"))),
        (status = 200, description = "With `preflight=true`: every mailbox checked, nothing created (`Accept: text/csv` for CSV)", content(
            (mailferry_model::preflight::BatchPreflight = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rows (`errors[].row`, `errors[].field` the column) and nothing created; or an unknown or missing column, or a bad `source` / `target`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(State(state): State<AppState>, ApiQuery(q): ApiQuery<CreateQuery>, req: Request) -> ApiResult<Response> {
    let media = media_type(req.headers()).unwrap_or_default();
    let csv = matches!(media.as_str(), "text/csv" | "application/csv" | "text/comma-separated-values");
    if !csv && !is_json(&media) {
        return Err(ApiError::UnsupportedMediaType("a batch is text/csv or application/json".into()));
    }
    let defaults = Defaults::parse(q.source.as_deref(), q.target.as_deref())
        .map_err(|errors| ApiError::Validation { detail: "the batch's source or target is invalid".into(), errors })?;
    if !csv && (defaults.source.is_some() || defaults.target.is_some()) {
        let field = if defaults.source.is_some() { "source" } else { "target" };
        let e = FieldError::invalid(field, "source and target are given once for CSV batches; each JSON job carries its own");
        return Err(ApiError::Validation { detail: "source and target apply to CSV batches".into(), errors: vec![e] });
    }
    let accept_csv = super::preflight::wants_csv(req.headers());
    let limit = state.config.max_batch_bytes;
    let bytes = crate::extract::read_body(req.into_body(), limit).await?;
    let (name, rows, csv_names, batch_schedule) = if csv {
        let mut batch = parse_csv_with(&bytes, &defaults)?;
        (q.name, std::mem::take(&mut batch.rows), Some(batch), None)
    } else {
        let body: BatchBody = crate::extract::parse_json(&bytes)?;
        let rows = body
            .jobs
            .into_iter()
            .map(|v| serde_path_to_error::deserialize(v).map(|b| (b, Vec::new())).map_err(|e| vec![json_err_field(e)]))
            .collect();
        (body.name.or(q.name), rows, None, body.schedule)
    };
    if rows.is_empty() {
        return Err(ApiError::Validation {
            detail: "the batch has no jobs".into(),
            errors: vec![FieldError::required("jobs")],
        });
    }
    if rows.len() > MAX_BATCH_JOBS {
        let e = FieldError::invalid("jobs", format!("a batch holds at most {MAX_BATCH_JOBS} jobs"));
        return Err(ApiError::Validation { detail: format!("the batch has {} jobs", rows.len()), errors: vec![e] });
    }
    let name = batch_name(name)?;
    let total = rows.len();
    let mut valid: Vec<(usize, JobSpec)> = Vec::with_capacity(total);
    let mut errors = Vec::new();
    // CSV problems are named by the column as the file spells it.
    let at_row = |errs: Vec<FieldError>, row_no: usize| {
        let names: Option<&CsvBatch> = csv_names.as_ref();
        errs.into_iter().map(move |e| {
            let e = match names {
                Some(n) => FieldError { field: n.field_name(row_no - 1, &e.field), ..e },
                None => e,
            };
            e.at_row(row_no)
        })
    };
    for (i, mut row) in rows.into_iter().enumerate() {
        let row_no = i + 1;
        // The batch's schedule, for the rows without one of their own.
        if let Ok((body, _)) = &mut row {
            body.schedule = body.schedule.take().or_else(|| batch_schedule.clone());
        }
        // A CSV row's syntax problems and its body's, reported together.
        let result = row.and_then(|(body, syntax): (JobBody, Vec<FieldError>)| match validate(body, &state.config, &state.sealer) {
            Ok(spec) if syntax.is_empty() => Ok(spec),
            Ok(_) => Err(syntax),
            Err(invalid) => Err(syntax.into_iter().chain(invalid).collect()),
        });
        match result {
            Ok(spec) => valid.push((row_no, spec)),
            Err(errs) => errors.extend(at_row(errs, row_no)),
        }
    }
    // DESIGN.md §2.9: rows whose hosts resolve to addresses jobs created over the API may
    // not reach are invalid rows too (each distinct host resolved once).
    let resolved = crate::netcheck::resolve(valid.iter().map(|(_, s)| s)).await;
    let mut specs: Vec<JobSpec> = Vec::with_capacity(valid.len());
    let mut spec_rows: Vec<usize> = Vec::with_capacity(valid.len());
    for (row_no, spec) in valid {
        let refused = crate::netcheck::check(&spec, &state.config.network, &resolved);
        if refused.is_empty() {
            specs.push(spec);
            spec_rows.push(row_no);
        } else {
            errors.extend(at_row(refused, row_no));
        }
    }
    errors.sort_by_key(|e| e.row);
    let bad_rows = {
        let mut r: Vec<usize> = errors.iter().filter_map(|e| e.row).collect();
        r.dedup();
        r.len()
    };
    if !errors.is_empty() && (!q.skip_invalid || specs.is_empty()) {
        let detail = if q.skip_invalid {
            format!("all {total} rows are invalid; nothing was created")
        } else {
            format!("{bad_rows} of {total} rows are invalid; nothing was created (skip_invalid=true creates the valid ones)")
        };
        return Err(ApiError::Validation { detail, errors });
    }
    if q.preflight {
        return super::preflight::batch(&state, spec_rows.into_iter().zip(specs).collect(), &errors, accept_csv).await;
    }
    let trace_parent = crate::trace::current_trace_parent();
    let (batch, jobs) = state.store.create_jobs_traced(Some(&name), &specs, trace_parent.as_deref()).await?;
    let batch = batch.ok_or_else(|| ApiError::Internal("create_jobs returned no batch".into()))?;
    tracing::info!(batch.id = batch.id, jobs = jobs.len(), skipped_rows = bad_rows, "batch created");
    let created = BatchCreated {
        id: batch.id,
        name: batch.name,
        created_at: batch.created_at,
        jobs: jobs.iter().map(|j| j.id).collect(),
        skipped: errors,
    };
    let location = format!("/api/v1/batches/{}", created.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(created)).into_response())
}

pub(crate) fn json_err_field(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    match json_error(e, None) {
        ApiError::Validation { mut errors, .. } if !errors.is_empty() => errors.remove(0),
        other => FieldError::invalid("", other.to_string()),
    }
}

fn batch_name(name: Option<String>) -> ApiResult<String> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    match name {
        None => Ok(format!("batch {}", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"))),
        Some(n) if n.len() <= 200 && !n.chars().any(char::is_control) => Ok(n),
        Some(_) => Err(ApiError::Validation {
            detail: "invalid batch name".into(),
            errors: vec![FieldError::invalid("name", "a batch name is one line of at most 200 bytes")],
        }),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size: 1–500, default 50 (a server with a smaller `api.max_per_page` returns at
    /// most that many; larger values are refused with 400).
    #[serde(default, deserialize_with = "crate::extract::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// One page of batches, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchPage {
    pub items: Vec<BatchView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List batches, newest first, with their progress.
///
/// Each batch comes with its jobs per state and the sum of its jobs' counts (messages
/// listed, copied, skipped, failed, deleted, bytes), as `GET /batches/{id}` shows it. Cursor
/// pagination: pass `next_cursor` as `cursor` for the next (older) page.
#[utoipa::path(get, operation_id = "list_batches", path = "/batches", tag = "batches", params(ListQuery),
    responses(
        (status = 200, description = "A page of batches", body = BatchPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<BatchPage>> {
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| ApiError::Validation {
            detail: "invalid list parameters".into(),
            errors: vec![FieldError::invalid("cursor", "not a cursor returned by this API")],
        })?),
    };
    let limit = state.config.page_size(q.limit);
    let filter = BatchFilter { before, limit: limit + 1 };
    let mut batches = state.store.list_batches(&filter).await?;
    // The store returns at most 500 a query: a full page of 500 asks once more whether
    // there is another (as the job list does).
    let more = batches.len() > limit as usize
        || (batches.len() == limit as usize && {
            let probe = BatchFilter { before: batches.last().map(|b| b.batch.id), limit: 1 };
            !state.store.list_batches(&probe).await?.is_empty()
        });
    batches.truncate(limit as usize);
    let next_cursor = more.then(|| batches.last().map(|b| b.batch.id.to_string())).flatten();
    Ok(Json(BatchPage { items: batches.into_iter().map(BatchView::from).collect(), next_cursor }))
}

/// A batch with its jobs' aggregate states and counts.
#[utoipa::path(get, operation_id = "get_batch", path = "/batches/{id}", tag = "batches", params(("id" = i64, Path, description = "Batch id")),
    responses(
        (status = 200, description = "The batch", body = BatchView),
        (status = 404, description = "No such batch", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<BatchView>> {
    let summary = state.store.get_batch(id).await?.ok_or_else(|| ApiError::NotFound(format!("there is no batch {id}")))?;
    Ok(Json(summary.into()))
}

const BATCH_REPORT_COLUMNS: [&str; 20] = [
    "job_id", "state", "source", "target", "labels", "listed", "copied", "skipped", "failed", "deleted", "bytes",
    "started_at", "finished_at", "runs", "last_error",
    // Issue 17: the schedule's next pass, and the cutover's final pass.
    "next_run_at", "cutover_delete", "cutover_started_at", "cutover_copied", "cutover_deleted",
];

/// The batch report: one CSV row per job with its counts (never a password); for a job with
/// a schedule its next pass (`next_run_at`), and after a cutover (`POST
/// /batches/{id}/cutover`) the final pass's delete policy, start, and what it copied and
/// deleted at the source (`cutover_copied`, `cutover_deleted`; empty before it starts). A cell that
/// begins with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` so that no
/// spreadsheet runs it as a formula (errors come from mail servers).
#[utoipa::path(get, operation_id = "get_batch_report", path = "/batches/{id}/report", tag = "batches", params(("id" = i64, Path, description = "Batch id")),
    responses(
        (status = 200, description = "CSV, one row per job", content_type = "text/csv", body = String),
        (status = 404, description = "No such batch", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    state.store.get_batch(id).await?.ok_or_else(|| ApiError::NotFound(format!("there is no batch {id}")))?;
    let mut w = ::csv::Writer::from_writer(Vec::new());
    write_record(&mut w, BATCH_REPORT_COLUMNS)?;
    let mut filter = JobFilter { batch: Some(id), limit: 500, ..JobFilter::default() };
    loop {
        let jobs = state.store.list_jobs(&filter).await?;
        for job in &jobs {
            let c = Counts::from(state.store.job_counts(job.id).await?);
            let labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
            let final_pass = match &job.cutover {
                Some(c) if c.started_at.is_some() => state.store.cutover_counts(job.id).await?,
                _ => None,
            };
            // Every cell defused: last_error holds server text (report::csv_cell).
            write_record(&mut w, [
                job.id.to_string(),
                job.state.to_string(),
                job.source.clone(),
                job.target.clone(),
                labels.join(";"),
                c.listed.to_string(),
                c.copied.to_string(),
                c.skipped.to_string(),
                c.failed.to_string(),
                c.deleted.to_string(),
                c.bytes.to_string(),
                opt(&job.started_at),
                opt(&job.finished_at),
                job.runs.to_string(),
                opt(&job.last_error),
                opt(&job.next_run_at),
                job.cutover.as_ref().map(|c| c.delete.to_string()).unwrap_or_default(),
                job.cutover.as_ref().and_then(|c| c.started_at.clone()).unwrap_or_default(),
                final_pass.map(|f| f.copied.to_string()).unwrap_or_default(),
                final_pass.map(|f| f.deleted.to_string()).unwrap_or_default(),
            ])?;
        }
        match jobs.last() {
            Some(last) if jobs.len() == filter.limit as usize => filter.after = Some(last.id),
            _ => break,
        }
    }
    let body = w.into_inner().map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))?;
    Ok(csv_response(body, &format!("batch-{id}-report.csv")))
}

#[cfg(test)]
mod tests;
