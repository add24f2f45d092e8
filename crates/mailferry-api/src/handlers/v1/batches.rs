//! `/api/v1/batches`: many jobs at once from a CSV file (the admin's spreadsheet) or JSON,
//! all-or-nothing unless `?skip_invalid=true`; batch progress and the per-job report.
//!
//! CSV header row (case-insensitive; `,` or `;` delimiter, detected from the header):
//! `source_host, source_port, source_security, source_user, source_password, source_auth,
//! target_host, target_port, target_security, target_user, target_password, target_folder,
//! target_auth, delete, labels` (`k=v;k=v`). imapsync-style `host1, user1, password1,
//! host2, user2, password2` (and `port1`, `port2`) are accepted as aliases. Required:
//! source_host, source_user, source_password, target_host, target_user, target_password.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailferry_model::{ImapAuth, JobSpec, Pop3Auth, Security};
use mailferry_store::JobFilter;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{is_json, json_error, media_type, ApiPath, ApiQuery};
use crate::report::{csv_response, write_record};
use crate::spec::{validate, ImapTargetBody, JobBody, OptionsBody, SourceBody, TargetBody};
use crate::state::AppState;
use crate::views::{BatchView, Counts};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(get)).routes(routes!(report))
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
}

/// A JSON batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub name: Option<String>,
    /// Job bodies, as for `POST /jobs`; errors are reported per row (1-based).
    #[schema(value_type = Vec<JobBody>)]
    pub jobs: Vec<serde_json::Value>,
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

/// Create a batch of jobs from `text/csv` or `application/json`. Every row is validated as
/// `POST /jobs` is, the network policy included; when any row is invalid nothing is created
/// (422 listing each problem with its row number) unless `skip_invalid=true`.
#[utoipa::path(post, operation_id = "create_batch", path = "/batches", tag = "batches",
    params(CreateQuery, ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe POST")),
    request_body(content(
        (BatchBody = "application/json"),
        (String = "text/csv", example = "source_host,source_user,source_password,target_host,target_user,target_password\npop.example.com,alice,secret1,imap.example.com,alice,secret2\n"),
    )),
    responses(
        (status = 201, description = "Created", body = BatchCreated, headers(("Location" = String, description = "URL of the batch"))),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Neither CSV nor JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rows (`errors[].row`) and nothing created", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(State(state): State<AppState>, ApiQuery(q): ApiQuery<CreateQuery>, req: Request) -> ApiResult<Response> {
    let media = media_type(req.headers()).unwrap_or_default();
    let csv = matches!(media.as_str(), "text/csv" | "application/csv" | "text/comma-separated-values");
    if !csv && !is_json(&media) {
        return Err(ApiError::UnsupportedMediaType("a batch is text/csv or application/json".into()));
    }
    let limit = state.config.max_batch_bytes;
    let bytes = crate::extract::read_body(req.into_body(), limit).await?;
    let (name, rows) = if csv {
        (q.name, parse_csv(&bytes)?)
    } else {
        let body: BatchBody = crate::extract::parse_json(&bytes)?;
        let rows = body.jobs.into_iter().map(|v| serde_path_to_error::deserialize(v).map_err(|e| vec![json_err_field(e)])).collect();
        (body.name.or(q.name), rows)
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
    let at_row = |errs: Vec<FieldError>, row_no: usize| {
        errs.into_iter().map(move |e| {
            let e = if csv { FieldError { field: csv_column(&e.field), ..e } } else { e };
            e.at_row(row_no)
        })
    };
    for (i, row) in rows.into_iter().enumerate() {
        let row_no = i + 1;
        let result = row.and_then(|body| validate(body, &state.config, &state.sealer));
        match result {
            Ok(spec) => valid.push((row_no, spec)),
            Err(errs) => errors.extend(at_row(errs, row_no)),
        }
    }
    // DESIGN.md §2.9: rows whose hosts resolve to addresses jobs created over the API may
    // not reach are invalid rows too (each distinct host resolved once).
    let resolved = crate::netcheck::resolve(valid.iter().map(|(_, s)| s)).await;
    let mut specs: Vec<JobSpec> = Vec::with_capacity(valid.len());
    for (row_no, spec) in valid {
        let refused = crate::netcheck::check(&spec, &state.config.network, &resolved);
        if refused.is_empty() {
            specs.push(spec);
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

/// Canonical CSV columns and their accepted aliases.
const COLUMNS: [(&str, &[&str]); 16] = [
    ("source_host", &["host1"]),
    ("source_port", &["port1"]),
    ("source_security", &[]),
    ("source_user", &["user1", "source_username"]),
    ("source_password", &["password1"]),
    ("source_auth", &[]),
    ("target_host", &["host2"]),
    ("target_port", &["port2"]),
    ("target_security", &[]),
    ("target_user", &["user2", "target_username"]),
    ("target_password", &["password2"]),
    ("target_folder", &["folder2"]),
    ("target_auth", &[]),
    ("delete", &[]),
    ("verify", &[]),
    ("labels", &[]),
];
const REQUIRED: [&str; 6] = ["source_host", "source_user", "source_password", "target_host", "target_user", "target_password"];

/// The CSV column a job-body field comes from, for row errors.
fn csv_column(field: &str) -> String {
    let (head, _) = field.split_once('[').unwrap_or((field, ""));
    match head {
        "source.username" => "source_user".into(),
        "target.username" => "target_user".into(),
        "options.delete" => "delete".into(),
        "options.verify" => "verify".into(),
        f if f.starts_with("labels") => "labels".into(),
        f => f.replace('.', "_"),
    }
}

type Row = Result<JobBody, Vec<FieldError>>;

/// Parse a CSV batch into one job body (or field errors) per data row. Problems with the
/// header fail the whole batch.
pub(crate) fn parse_csv(bytes: &[u8]) -> ApiResult<Vec<Row>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // Excel's UTF-8 BOM
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| first_line.iter().filter(|b| **b == d).count();
    let delimiter = if count(b';') > count(b',') { b';' } else { b',' };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::Headers)
        .from_reader(bytes);
    let header_error = |errors: Vec<FieldError>| ApiError::Validation { detail: "the CSV header row is invalid".into(), errors };
    let headers = reader
        .headers()
        .map_err(|e| header_error(vec![FieldError::invalid("header", format!("unreadable header row: {e}"))]))?
        .clone();
    let mut columns: Vec<&'static str> = Vec::with_capacity(headers.len());
    let mut errors = Vec::new();
    for h in headers.iter() {
        let norm = h.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        match COLUMNS.iter().find(|(c, aliases)| *c == norm || aliases.contains(&norm.as_str())) {
            Some((canonical, _)) if columns.contains(canonical) => {
                errors.push(FieldError::invalid(*canonical, format!("column {canonical} appears twice (as {h:?})")));
            }
            Some((canonical, _)) => columns.push(canonical),
            None => {
                let known: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
                errors.push(FieldError::invalid(h, format!("unknown column {h:?}; known columns: {}", known.join(", "))));
                columns.push("");
            }
        }
    }
    for r in REQUIRED {
        if !columns.contains(&r) {
            errors.push(FieldError::new(r, "required", format!("the required column {r} is missing")));
        }
    }
    if !errors.is_empty() {
        return Err(header_error(errors));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let row = match record {
            Err(e) => Err(vec![FieldError::invalid("", format!("unreadable row: {e}"))]),
            Ok(rec) if rec.len() != columns.len() => Err(vec![FieldError::invalid(
                "",
                format!("expected {} fields, found {}", columns.len(), rec.len()),
            )]),
            Ok(rec) => {
                let values: BTreeMap<&str, &str> =
                    columns.iter().zip(rec.iter()).filter(|(_, v)| !v.trim().is_empty()).map(|(c, v)| (*c, v)).collect();
                csv_row(&values)
            }
        };
        rows.push(row);
        if rows.len() > MAX_BATCH_JOBS {
            break;
        }
    }
    Ok(rows)
}

/// One CSV row as a job body; values are trimmed except passwords (which may hold spaces).
fn csv_row(v: &BTreeMap<&str, &str>) -> Row {
    let mut errs = Vec::new();
    let text = |c: &str| v.get(c).map(|s| s.trim().to_owned());
    let secret = |c: &str| v.get(c).map(|s| SecretString::from(s.to_string()));
    let mut port = |c: &str| {
        v.get(c).and_then(|s| {
            let p = s.trim().parse::<i64>().ok();
            if p.is_none() {
                errs.push(FieldError::invalid(c, format!("{c} must be a number")));
            }
            p
        })
    };
    let (source_port, target_port) = (port("source_port"), port("target_port"));
    let source_security = enum_cell::<Security>(v, "source_security", &mut errs);
    let target_security = enum_cell::<Security>(v, "target_security", &mut errs);
    let source_auth = enum_cell::<Pop3Auth>(v, "source_auth", &mut errs);
    let target_auth = enum_cell::<ImapAuth>(v, "target_auth", &mut errs);
    let mut labels = BTreeMap::new();
    for pair in v.get("labels").map(|l| l.split(';')).into_iter().flatten().filter(|p| !p.trim().is_empty()) {
        match pair.split_once('=') {
            Some((k, val)) => {
                labels.insert(k.trim().to_owned(), val.trim().to_owned());
            }
            None => errs.push(FieldError::invalid("labels", format!("labels are key=value;key=value, not {pair:?}"))),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(JobBody {
        source: SourceBody {
            protocol: Default::default(),
            host: text("source_host"),
            port: source_port,
            security: source_security,
            username: text("source_user"),
            password: secret("source_password"),
            auth: source_auth,
            tls_pin: None,
        },
        target: TargetBody::Imap(ImapTargetBody {
            host: text("target_host"),
            port: target_port,
            security: target_security,
            username: text("target_user"),
            password: secret("target_password"),
            folder: text("target_folder"),
            flags: None,
            auth: target_auth,
            oauth2: None,
            tls_pin: None,
        }),
        options: OptionsBody { delete: text("delete"), max_message_bytes: None, dry_run: None, verify: text("verify").map(crate::spec::VerifyOption::Level) },
        labels,
    })
}

/// An enum cell (`tls`, `apop`, ...) parsed with the JSON names.
fn enum_cell<T: serde::de::DeserializeOwned>(v: &BTreeMap<&str, &str>, column: &str, errs: &mut Vec<FieldError>) -> Option<T> {
    let raw = v.get(column)?.trim().to_ascii_lowercase();
    match serde_json::from_value(serde_json::Value::String(raw.clone())) {
        Ok(t) => Some(t),
        Err(e) => {
            let msg = e.to_string();
            let expected = msg.split("expected").nth(1).map(|s| format!(": expected{s}")).unwrap_or_default();
            errs.push(FieldError::invalid(column, format!("{column} {raw:?} is not valid{expected}")));
            None
        }
    }
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

const BATCH_REPORT_COLUMNS: [&str; 15] = [
    "job_id", "state", "source", "target", "labels", "listed", "copied", "skipped", "failed", "deleted", "bytes",
    "started_at", "finished_at", "runs", "last_error",
];

/// The batch report: one CSV row per job with its counts (never a password). A cell that
/// begins with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'` so that no
/// spreadsheet runs it as a formula (errors come from mail servers).
#[utoipa::path(get, operation_id = "get_batch_report", path = "/batches/{id}/report", tag = "batches", params(("id" = i64, Path, description = "Batch id")),
    responses(
        (status = 200, description = "CSV, one row per job", content_type = "text/csv", body = String),
        (status = 404, description = "No such batch", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    state.store.get_batch(id).await?.ok_or_else(|| ApiError::NotFound(format!("there is no batch {id}")))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    write_record(&mut w, BATCH_REPORT_COLUMNS)?;
    let mut filter = JobFilter { batch: Some(id), limit: 500, ..JobFilter::default() };
    loop {
        let jobs = state.store.list_jobs(&filter).await?;
        for job in &jobs {
            let c = Counts::from(state.store.job_counts(job.id).await?);
            let labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let opt = |v: &Option<String>| v.clone().unwrap_or_default();
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
mod tests {
    use super::*;

    #[test]
    fn csv_aliases_semicolons_and_row_errors() {
        let csv = "\u{feff}Host1;User1;Password1;host2;user2;password2;labels\n\
                   pop.example.com;alice; pass with spaces ;imap.example.com;alice;p2;\"team=a;wave=1\"\n\
                   \n\
                   pop.example.com;bob;p;imap.example.com;bob;p2;bad\n";
        let rows = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        let first = rows[0].as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(first.source.password.as_ref().unwrap().expose_secret(), " pass with spaces ");
        assert_eq!(first.labels.get("wave").map(String::as_str), Some("1"));
        let errs = rows[1].as_ref().unwrap_err();
        assert_eq!(errs[0].field, "labels");
    }

    #[test]
    fn csv_header_problems_are_reported_together() {
        let Err(ApiError::Validation { errors, .. }) = parse_csv(b"source_host,source_host,colour\nx,y,z\n") else {
            panic!("expected a header error")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"source_host") && fields.contains(&"colour") && fields.contains(&"target_password"), "{fields:?}");
    }

    #[test]
    fn json_fields_map_to_csv_columns() {
        assert_eq!(csv_column("source.username"), "source_user");
        assert_eq!(csv_column("target.port"), "target_port");
        assert_eq!(csv_column("options.delete"), "delete");
        assert_eq!(csv_column("labels.x"), "labels");
    }
}
