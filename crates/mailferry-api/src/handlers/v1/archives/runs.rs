//! Verify and export runs. The API only enqueues and reads: `POST` records the run with the
//! archive (its id is the archive's) and queues it as a job ([`ArchiveTask`]) that a
//! worker claims under a lease like any migration job, so a run survives a restart, can be
//! cancelled (`POST /jobs/{job_id}/cancel`) and streams its state (`/jobs/{job_id}/events`).
//! `GET` reads the run's record (progress, recorded outcome) and its job (queued, running,
//! cancelled) from whichever process asks.
//!
//! Runs are work a caller can start at will, so they are limited: at most
//! `[archive] max_concurrent_runs` runs per archive queued or running at once, across every
//! process sharing the database (beyond: 429 `/problems/limit-reached` with `Retry-After`),
//! and an export file is deleted `[archive] export_ttl_secs` after it was written (its
//! download then answers 410).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mailferry_archive::{Archive, RunRecord};
use mailferry_model::ArchiveTask;
use mailferry_store::{JobRecord, TaskQueued};

pub use super::run_views::*;
use super::{archive_error, open, query, who};
use crate::archive_views::timestamp;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Problem};
use crate::exports::{expired, fmt_ttl, remove_export};
use crate::extract::{ApiPath, JsonBody};
use crate::state::AppState;

/// What a client refused for too many runs is told to wait, in seconds.
const BUSY_RETRY_AFTER: u64 = 15;

/// How old the heartbeat of a run without a job (recorded by an older version, which ran
/// runs inside the API process) may get before the run counts as interrupted.
const INTERRUPTED_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// Queues the run recorded as `task.run()`, or refuses with 429 (and forgets the record)
/// when the archive already has `[archive] max_concurrent_runs` runs queued or running.
async fn enqueue(state: &AppState, a: &Archive, task: &ArchiveTask) -> ApiResult<JobRecord> {
    let limit = state.config.archive_max_concurrent_runs;
    let trace_parent = crate::trace::current_trace_parent();
    match state.store.enqueue_task(task, limit, trace_parent.as_deref()).await? {
        TaskQueued::Queued(job) => Ok(*job),
        TaskQueued::Busy(runs) => {
            if let Err(e) = a.run_discard(task.run()).await {
                tracing::warn!(archive = %task.archive(), run = task.run(), error = %e, "cannot discard a refused run's record");
            }
            let name = task.archive();
            let runs: Vec<String> = runs
                .iter()
                .map(|t| match t {
                    ArchiveTask::Export { run, .. } => format!("/api/v1/archives/{name}/exports/{run}"),
                    ArchiveTask::Verify { run, .. } => format!("/api/v1/archives/{name}/verify/{run}"),
                })
                .collect();
            let which = if runs.is_empty() { String::new() } else { format!(": {}", runs.join(", ")) };
            Err(ApiError::LimitReached {
                detail: format!(
                    "archive {name:?} already has {limit} verify or export runs in progress, the most \
                     [archive] max_concurrent_runs allows{which}; try again when one has finished"
                ),
                retry_after: BUSY_RETRY_AFTER,
            })
        }
    }
}

/// The run `id` of `kind` on archive `name` with its job, or 404.
async fn recorded(state: &AppState, name: &str, kind: &str, id: u64) -> ApiResult<(RunRecord, Option<JobRecord>)> {
    let a = open(state, name).await?;
    let what = if kind == "export" { "export" } else { "verify run" };
    let rec = a
        .run_record(kind, id as i64)
        .await
        .map_err(archive_error)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no {what} {id} of archive {name:?}")))?;
    let job = state.store.task_job(name, id as i64).await?;
    Ok((rec, job))
}

/// Where a run is: its recorded outcome once finished; else its job's state (queued and
/// running both show as `running`; a job cancelled or failed before the run recorded an
/// outcome shows as `failed` with the job's reason).
fn shown(rec: &RunRecord, job: Option<&JobRecord>) -> Shown {
    if let Some(view) = rec.view.as_deref().filter(|_| rec.state != "running") {
        return Shown::recorded(view);
    }
    match job {
        Some(j) if !j.state.is_terminal() => Shown::Running,
        Some(j) => Shown::Failed(j.last_error.clone().unwrap_or_else(|| format!("the run's job ended {} before the run finished", j.state))),
        None if chrono::Utc::now() - rec.heartbeat_at > INTERRUPTED_AFTER => {
            Shown::Failed("interrupted: the API process running it stopped before it finished; start a new run".into())
        }
        None => Shown::Running,
    }
}

fn legacy(view: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], view).into_response()
}

fn verify_view(name: &str, rec: &RunRecord, job: Option<&JobRecord>) -> Result<VerifyRun, Response> {
    let (state, error, report) = match shown(rec, job) {
        Shown::Running => (RunState::Running, None, None),
        Shown::Verified(r) => (RunState::Done, None, Some(*r)),
        Shown::Failed(e) => (RunState::Failed, Some(e), None),
        Shown::Exported(_) => (RunState::Failed, Some("not a verify run".into()), None),
        Shown::Legacy(view) => return Err(legacy(view)),
    };
    Ok(VerifyRun {
        id: rec.id as u64,
        archive: name.to_owned(),
        job_id: job.map(|j| j.id),
        state,
        progress: RunProgress { done: rec.done, total: rec.total },
        started_at: timestamp(rec.started_at),
        finished_at: rec.finished_at.map(timestamp),
        error,
        report,
    })
}

fn format_of(path: Option<&str>) -> ExportFormatBody {
    match path.map(std::path::Path::new).and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("zip") => ExportFormatBody::EmlZip,
        _ => ExportFormatBody::Mbox,
    }
}

fn export_view(name: &str, rec: &RunRecord, job: Option<&JobRecord>, ttl: std::time::Duration) -> Result<ExportRun, Response> {
    let (state, error, result) = match shown(rec, job) {
        Shown::Running => (RunState::Running, None, None),
        Shown::Exported(r) => {
            let manifest = r.manifest.iter().map(|m| format!("{}  {}\n", m.digest, m.name)).collect();
            let expires_at =
                rec.finished_at.and_then(|f| chrono::Duration::from_std(ttl).ok().map(|ttl| timestamp(f + ttl)));
            let result = ExportResult {
                messages: r.messages,
                bytes: r.bytes,
                file_sha256: r.file_sha256.clone(),
                download: format!("/api/v1/archives/{name}/exports/{}/download", rec.id),
                manifest,
                expires_at,
            };
            (RunState::Done, None, Some(result))
        }
        Shown::Failed(e) => (RunState::Failed, Some(e), None),
        Shown::Verified(_) => (RunState::Failed, Some("not an export run".into()), None),
        Shown::Legacy(view) => return Err(legacy(view)),
    };
    Ok(ExportRun {
        id: rec.id as u64,
        archive: name.to_owned(),
        job_id: job.map(|j| j.id),
        format: format_of(rec.file.as_deref()),
        state,
        started_at: timestamp(rec.started_at),
        finished_at: rec.finished_at.map(timestamp),
        error,
        result,
    })
}

/// 202 with the run's view and where to poll it.
fn accepted(location: String, view: Result<impl serde::Serialize, Response>) -> Response {
    match view {
        Ok(v) => (StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(v)).into_response(),
        Err(raw) => raw,
    }
}

fn ok(view: Result<impl serde::Serialize, Response>) -> Response {
    match view {
        Ok(v) => Json(v).into_response(),
        Err(raw) => raw,
    }
}

/// Start verifying the archive: re-hash every blob, check every occurrence against its
/// blob and ingest event, walk the event chain. Queued as a job that a worker runs; its
/// progress and report are polled at `GET …/verify/{id}`, recorded with the archive.
#[utoipa::path(post, operation_id = "start_archive_verify", path = "/archives/{name}/verify", tag = "archives",
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 202, description = "Queued", body = VerifyRun, headers(("Location" = String, description = "Where to poll"))),
        (status = 404, description = "No such archive", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The archive already runs `[archive] max_concurrent_runs` verify or export runs (`/problems/limit-reached`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn verify(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let a = open(&state, &name).await?;
    let id = a.run_started("verify", |_| None).await.map_err(archive_error)?;
    let task = ArchiveTask::Verify { archive: name.clone(), run: id, who: who(&p) };
    let job = enqueue(&state, &a, &task).await?;
    let (rec, _) = recorded(&state, &name, "verify", id as u64).await?;
    Ok(accepted(format!("/api/v1/archives/{name}/verify/{id}"), verify_view(&name, &rec, Some(&job))))
}

/// A verify run: `running` (queued or running) with progress (blobs done / total), then
/// `done` with the report (`report.ok`, every discrepancy) or `failed` with the error.
#[utoipa::path(get, operation_id = "get_archive_verify", path = "/archives/{name}/verify/{id}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = u64, Path, description = "Verify run id")),
    responses(
        (status = 200, description = "The run", body = VerifyRun),
        (status = 404, description = "No such archive or run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_status(State(state): State<AppState>, ApiPath((name, id)): ApiPath<(String, u64)>) -> ApiResult<Response> {
    let (rec, job) = recorded(&state, &name, "verify", id).await?;
    Ok(ok(verify_view(&name, &rec, job.as_ref())))
}

/// Start an export of the distinct messages matching `query` as an mbox (mboxrd) or a zip
/// of `.eml` files, each with a SHA-256 manifest; every message is read through the
/// verified path and the export is recorded in the archive's event log. Queued like verify;
/// the file is written under the archive's `exports/` directory and downloaded from
/// `…/exports/{id}/download`.
#[utoipa::path(post, operation_id = "start_archive_export", path = "/archives/{name}/exports", tag = "archives",
    request_body = ExportBody,
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 202, description = "Queued", body = ExportRun, headers(("Location" = String, description = "Where to poll"))),
        (status = 404, description = "No such archive", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid query or format", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The archive already runs `[archive] max_concurrent_runs` verify or export runs (`/problems/limit-reached`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<ExportBody>,
) -> ApiResult<Response> {
    let a = open(&state, &name).await?;
    let q = query(&body.query, "query.")?;
    let dir = a.dir().join("exports");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::Internal(format!("create {}: {e}", dir.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let ext = body.format.extension();
    let file_of = |id: i64| dir.join(format!("export-{stamp}-{id}.{ext}")).display().to_string();
    let id = a.run_started("export", |id| Some(file_of(id))).await.map_err(archive_error)?;
    let task = ArchiveTask::Export {
        archive: name.clone(),
        run: id,
        who: who(&p),
        query: serde_json::to_value(&q).map_err(|e| ApiError::Internal(format!("export query: {e}")))?,
        format: body.format.extension_name().to_owned(),
        file: file_of(id),
    };
    let job = enqueue(&state, &a, &task).await?;
    let (rec, _) = recorded(&state, &name, "export", id as u64).await?;
    let view = export_view(&name, &rec, Some(&job), state.config.export_ttl());
    Ok(accepted(format!("/api/v1/archives/{name}/exports/{id}"), view))
}

/// An export run: `running` (queued or running), then `done` (with its download URL,
/// manifest and when the file expires) or `failed`.
#[utoipa::path(get, operation_id = "get_archive_export", path = "/archives/{name}/exports/{id}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = u64, Path, description = "Export id")),
    responses(
        (status = 200, description = "The run", body = ExportRun),
        (status = 404, description = "No such archive or export", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_status(State(state): State<AppState>, ApiPath((name, id)): ApiPath<(String, u64)>) -> ApiResult<Response> {
    let (rec, job) = recorded(&state, &name, "export", id).await?;
    Ok(ok(export_view(&name, &rec, job.as_ref(), state.config.export_ttl())))
}

/// The export file, streamed (`application/mbox` or `application/zip`), until it expires
/// `[archive] export_ttl_secs` after the export finished (then 410: start a new export).
/// The file is on the disk of the worker that wrote it: found here when the data
/// directory is shared (or the API process runs the workers, the default).
#[utoipa::path(get, operation_id = "download_archive_export", path = "/archives/{name}/exports/{id}/download", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = u64, Path, description = "Export id")),
    responses(
        (status = 200, description = "The file", content(
            (Vec<u8> = "application/mbox"),
            (Vec<u8> = "application/zip"),
        )),
        (status = 404, description = "No such export", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Still running, or failed", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired: the file was deleted `[archive] export_ttl_secs` after the export finished", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_download(State(state): State<AppState>, ApiPath((name, id)): ApiPath<(String, u64)>) -> ApiResult<Response> {
    let (rec, job) = recorded(&state, &name, "export", id).await?;
    match shown(&rec, job.as_ref()) {
        Shown::Exported(_) | Shown::Legacy(_) if rec.state == "done" => {}
        Shown::Running => return Err(ApiError::Conflict(format!("export {id} is still running"))),
        _ => return Err(ApiError::Conflict(format!("export {id} failed; there is nothing to download"))),
    }
    let path = std::path::PathBuf::from(rec.file.ok_or_else(|| ApiError::Internal("export without a path".into()))?);
    let finished = rec.finished_at.unwrap_or(rec.heartbeat_at);
    let ttl = state.config.export_ttl();
    if expired(finished, ttl, chrono::Utc::now()) {
        // The sweeper may not have come by yet.
        remove_export(&path);
        return Err(ApiError::Gone(format!(
            "export {id} has expired: export files are kept for {} after they are written ([archive] export_ttl_secs) \
             and this one was written at {}; start a new export",
            fmt_ttl(ttl),
            timestamp(finished)
        )));
    }
    let file = tokio::fs::File::open(&path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::NotFound(format!("the file of export {id} is gone")),
        _ => ApiError::Internal(format!("open {}: {e}", path.display())),
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let format = format_of(path.to_str());
    let filename = format!("{name}-export-{id}.{}", format.extension());
    let mut response = (
        [
            (header::CONTENT_TYPE, format.media_type().to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    if let Some(len) = len {
        response.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    }
    Ok(response)
}
