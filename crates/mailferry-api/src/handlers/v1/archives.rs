//! `/api/v1/archives`: the compliance archives (DESIGN.md §3 "Archive", issue 4) — list with
//! counts and dedup ratio, search, the exact bytes of a message (verified on the way out),
//! its metadata and provenance, verify and export runs, legal holds and retention.
//!
//! Reads need `read`; starting verify or export needs `write`; holds and retention need
//! `admin` (see [`crate::auth::required_scope`]). An archive exists once a job has written
//! to it (jobs create it on first use); other names are 404.
//!
//! Runs are work a caller can start at will, so they are limited: at most
//! `[archive] max_concurrent_runs` verify and export runs per archive at once, across the
//! API processes sharing it (beyond: 429 `/problems/limit-reached` with `Retry-After`), and
//! an export file is deleted `[archive] export_ttl_secs` after it was written (its
//! download then answers 410).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mailferry_archive::{Archive, ArchiveError, Digest, HoldScope};
use mailferry_engine::Archives;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::archive_views::*;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, ApiQuery, JsonBody};
use crate::state::AppState;
use crate::tasks::{expired, fmt_ttl, remove_export, sidecar, Outcome, Slot, TaskKind, TaskRun};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(search))
        .routes(routes!(raw))
        .routes(routes!(meta))
        .routes(routes!(verify))
        .routes(routes!(verify_status))
        .routes(routes!(export))
        .routes(routes!(export_status))
        .routes(routes!(export_download))
        .routes(routes!(place_hold))
        .routes(routes!(release_hold))
        .routes(routes!(set_retention))
}

/// An archive that exists (never creates one), or 404.
async fn open(state: &AppState, name: &str) -> ApiResult<Arc<Archive>> {
    if !Archives::valid_name(name) || !state.archives.exists(name).await.map_err(archive_error)? {
        return Err(ApiError::NotFound(format!("there is no archive {name:?}")));
    }
    state.archives.get(name).await.map_err(archive_error)
}

fn archive_error(e: ArchiveError) -> ApiError {
    match e {
        ArchiveError::NotFound(d) => ApiError::NotFound(format!("there is no message {d} in this archive")),
        ArchiveError::Purged(d) => {
            ApiError::Gone(format!("message {d} was purged under retention; its tombstone is in …/messages/{d}/meta"))
        }
        ArchiveError::HoldNotFound(id) => ApiError::NotFound(format!("there is no active hold {id}")),
        ArchiveError::Query(m) => ApiError::Validation {
            detail: format!("invalid search: {m}"),
            errors: vec![FieldError::invalid("q", m)],
        },
        ArchiveError::Integrity(i) => ApiError::Integrity { digest: i.digest.to_hex(), detail: i.to_string() },
        other => ApiError::Internal(format!("archive: {other}")),
    }
}

fn digest(hex: &str) -> ApiResult<Digest> {
    hex.parse().map_err(|_| ApiError::BadRequest(format!("{hex:?} is not a SHA-256 digest (64 hex digits)")))
}

/// Who did it, for the archive's event log: the token's id and name, never the token.
fn who(p: &Principal) -> String {
    format!("api-token:{}:{}", p.token_id, p.name)
}

fn query(q: &ArchiveQuery, prefix: &str) -> ApiResult<mailferry_archive::SearchQuery> {
    let mut errors = Vec::new();
    let s = q.to_search(prefix, &mut errors);
    if errors.is_empty() { Ok(s) } else { Err(ApiError::Validation { detail: "invalid search".into(), errors }) }
}

/// Every archive with its counts (distinct messages vs occurrences, stored vs logical
/// bytes, dedup ratio), retention period and active legal holds.
#[utoipa::path(get, operation_id = "list_archives", path = "/archives", tag = "archives",
    responses((status = 200, description = "The archives", body = ArchiveList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<ArchiveList>> {
    let mut items = Vec::new();
    for name in state.archives.names().await.map_err(archive_error)? {
        let a = state.archives.get(&name).await.map_err(archive_error)?;
        let stats = a.stats().await.map_err(archive_error)?;
        let retention = a.retention().await.map_err(archive_error)?;
        let holds = a.holds(false).await.map_err(archive_error)?;
        items.push(ArchiveView::new(stats, retention.retention_days, holds));
    }
    Ok(Json(ArchiveList { items }))
}

/// Search an archive. Hits are occurrences (the same message from three mailboxes is three
/// hits, one per custodian) in ingest order, with cursor pagination.
#[utoipa::path(get, operation_id = "search_archive", path = "/archives/{name}/messages", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), MessagesParams),
    responses(
        (status = 200, description = "A page of hits", body = ArchiveHitPage),
        (status = 404, description = "No such archive", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad query, date or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn search(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<MessagesParams>,
) -> ApiResult<Json<ArchiveHitPage>> {
    let a = open(&state, &name).await?;
    let (q, cursor, limit) = params.split();
    let q = query(&q, "")?;
    let limit = state.config.page_size(limit) as usize;
    let page = a.search(&q, limit, cursor.as_deref()).await.map_err(|e| match e {
        ArchiveError::Query(m) if m.contains("cursor") => {
            ApiError::Validation { detail: m.clone(), errors: vec![FieldError::invalid("cursor", m)] }
        }
        e => archive_error(e),
    })?;
    Ok(Json(ArchiveHitPage {
        items: page.hits.into_iter().map(ArchiveHit::from).collect(),
        next_cursor: page.next_cursor,
        total: page.total,
    }))
}

/// The exact bytes of a message as `message/rfc822`, re-hashed on the way out. If they no
/// longer match their digest the answer is a 500 `/problems/integrity` naming the digest
/// (and a loud log line), never the bytes.
#[utoipa::path(get, operation_id = "get_archived_message", path = "/archives/{name}/messages/{digest}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("digest" = String, Path, description = "SHA-256 of the message, hex")),
    responses(
        (status = 200, description = "The message, byte for byte", content_type = "message/rfc822", body = Vec<u8>),
        (status = 400, description = "Not a digest", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such archive or message", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Purged under retention", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Integrity failure (`/problems/integrity`, with `digest`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn raw(State(state): State<AppState>, ApiPath((name, hex)): ApiPath<(String, String)>) -> ApiResult<Response> {
    let a = open(&state, &name).await?;
    let d = digest(&hex)?;
    // Decoded and hashed in full into an unnamed spool file before the first byte goes
    // out, then streamed from it: verified on the way out, memory bounded for 50 MB mail.
    let (file, size) = a.open_verified(&d).await.map_err(archive_error)?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file)));
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{d}.eml\"")),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

/// A message's parsed headers, every occurrence (provenance: host, account, UIDL, job,
/// times) and its tombstone if purged.
#[utoipa::path(get, operation_id = "get_archived_message_meta", path = "/archives/{name}/messages/{digest}/meta", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("digest" = String, Path, description = "SHA-256 of the message, hex")),
    responses(
        (status = 200, description = "Metadata and provenance", body = MessageMetaView),
        (status = 404, description = "No such archive or message", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn meta(State(state): State<AppState>, ApiPath((name, hex)): ApiPath<(String, String)>) -> ApiResult<Json<MessageMetaView>> {
    let a = open(&state, &name).await?;
    let d = digest(&hex)?;
    Ok(Json(a.meta(&d).await.map_err(archive_error)?.into()))
}

fn verify_view(run: &TaskRun) -> VerifyRun {
    let (outcome, finished) = run.outcome();
    let (state, error, report) = match outcome {
        Outcome::Running => (RunState::Running, None, None),
        Outcome::Verified(r) => (RunState::Done, None, Some(VerifyReportView::from(*r))),
        Outcome::Failed(e) => (RunState::Failed, Some(e), None),
        Outcome::Exported(_) => (RunState::Failed, Some("not a verify run".into()), None),
    };
    VerifyRun {
        id: run.id,
        archive: run.archive.clone(),
        state,
        progress: RunProgress {
            done: run.done.load(std::sync::atomic::Ordering::Relaxed),
            total: run.total.load(std::sync::atomic::Ordering::Relaxed),
        },
        started_at: timestamp(run.started_at),
        finished_at: finished.map(timestamp),
        error,
        report,
    }
}

/// What a client refused for too many runs is told to wait, in seconds.
const BUSY_RETRY_AFTER: u64 = 15;

/// Takes a place for one more run on archive `name`, or refuses with 429: the runs this
/// process is starting or running, and those other API processes sharing the archive
/// recorded as running (alive heartbeat), count against `archive_max_concurrent_runs`.
async fn reserve(state: &AppState, a: &Archive, name: &str) -> ApiResult<Slot> {
    let limit = state.config.archive_max_concurrent_runs;
    let local = state.tasks.reserve(name, limit);
    let running = a.running_runs(chrono::Utc::now() - INTERRUPTED_AFTER).await.map_err(archive_error)?;
    match local {
        Some(slot) if running.len() < limit => Ok(slot),
        _ => {
            let runs: Vec<String> = running
                .iter()
                .map(|(id, kind)| match kind.as_str() {
                    "export" => format!("/api/v1/archives/{name}/exports/{id}"),
                    _ => format!("/api/v1/archives/{name}/verify/{id}"),
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

/// Start verifying the archive: re-hash every blob, check every occurrence against its
/// blob and ingest event, walk the event chain. Runs in the background in this server
/// process; its progress and report are polled at `GET …/verify/{id}` and recorded with the
/// archive, so they survive a restart and every API process sharing the archive sees them
/// (a run whose process stopped shows as `failed`, interrupted).
#[utoipa::path(post, operation_id = "start_archive_verify", path = "/archives/{name}/verify", tag = "archives",
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 202, description = "Started", body = VerifyRun, headers(("Location" = String, description = "Where to poll"))),
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
    let slot = reserve(&state, &a, &name).await?;
    let id = a.run_started("verify", |_| None).await.map_err(archive_error)?;
    let run = state.tasks.start(&name, TaskKind::Verify, id as u64, None);
    spawn_heartbeat(Arc::clone(&a), Arc::clone(&run));
    let who = who(&p);
    let task = Arc::clone(&run);
    tokio::spawn(async move {
        let progress = Arc::clone(&task);
        let outcome = match a.verify_with_progress(&who, move |done, total| progress.progress(done, total)).await {
            Ok(report) => {
                if report.ok() {
                    tracing::info!(archive = %task.archive, blobs = report.blobs_checked, "archive verified: no discrepancies");
                } else {
                    tracing::error!(archive = %task.archive, discrepancies = report.discrepancies.len(),
                        "ARCHIVE VERIFY FOUND DISCREPANCIES");
                }
                Outcome::Verified(Box::new(report))
            }
            Err(e) => {
                tracing::error!(archive = %task.archive, error = %e, "archive verify failed");
                Outcome::Failed(e.to_string())
            }
        };
        task.finish(outcome);
        record_finished(&a, &task, &verify_view(&task)).await;
        drop(slot);
    });
    let location = format!("/api/v1/archives/{name}/verify/{}", run.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(verify_view(&run))).into_response())
}

/// A verify run: `running` with progress (blobs done / total), then `done` with the report
/// (`report.ok`, every discrepancy) or `failed` with the error.
#[utoipa::path(get, operation_id = "get_archive_verify", path = "/archives/{name}/verify/{id}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = u64, Path, description = "Verify run id")),
    responses(
        (status = 200, description = "The run", body = VerifyRun),
        (status = 404, description = "No such archive or run", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_status(State(state): State<AppState>, ApiPath((name, id)): ApiPath<(String, u64)>) -> ApiResult<Response> {
    if let Some(run) = state.tasks.get(&name, TaskKind::Verify, id) {
        return Ok(Json(verify_view(&run)).into_response());
    }
    // Not run by this process (or before its restart): the archive's record of it.
    let a = open(&state, &name).await?;
    let rec = a
        .run_record("verify", id as i64)
        .await
        .map_err(archive_error)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no verify run {id} of archive {name:?}")))?;
    recorded_view(&rec, |state, error| VerifyRun {
        id,
        archive: name.clone(),
        state,
        progress: RunProgress { done: rec.done, total: rec.total },
        started_at: timestamp(rec.started_at),
        finished_at: None,
        error,
        report: None,
    })
}

/// How often a running run refreshes its record, and how old a heartbeat may get before
/// the run counts as interrupted (its process stopped).
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);
const INTERRUPTED_AFTER: chrono::Duration = chrono::Duration::seconds(30);

/// Keeps a running run's record current (progress, heartbeat) until it finishes.
fn spawn_heartbeat(a: Arc<Archive>, task: Arc<TaskRun>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if !task.is_running() {
                return;
            }
            let done = task.done.load(std::sync::atomic::Ordering::Relaxed);
            let total = task.total.load(std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = a.run_progress(task.id as i64, done, total).await {
                tracing::warn!(archive = %task.archive, run = task.id, error = %e, "cannot record run progress");
            }
        }
    });
}

/// Stores the finished run's view in the archive's record of it.
async fn record_finished(a: &Archive, task: &TaskRun, view: &impl serde::Serialize) {
    let failed = matches!(task.outcome().0, Outcome::Failed(_));
    let json = serde_json::to_string(view).unwrap_or_default();
    if let Err(e) = a.run_finished(task.id as i64, failed, &json).await {
        tracing::warn!(archive = %task.archive, run = task.id, error = %e, "cannot record the finished run");
    }
}

/// The view of a run recorded in the archive's index: its stored view once finished;
/// while running elsewhere, `running` with progress; `failed` ("interrupted") once its
/// process has stopped refreshing it.
fn recorded_view<V: serde::Serialize>(
    rec: &mailferry_archive::RunRecord,
    live: impl FnOnce(RunState, Option<String>) -> V,
) -> ApiResult<Response> {
    if let Some(view) = &rec.view {
        let mut response = view.clone().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        return Ok(response);
    }
    let view = if chrono::Utc::now() - rec.heartbeat_at > INTERRUPTED_AFTER {
        live(
            RunState::Failed,
            Some("interrupted: the API process running it stopped before it finished; start a new run".into()),
        )
    } else {
        live(RunState::Running, None)
    };
    Ok(Json(view).into_response())
}

fn export_view(run: &TaskRun, format: ExportFormatBody, ttl: std::time::Duration) -> ExportRun {
    let (outcome, finished) = run.outcome();
    let (state, error, result) = match outcome {
        Outcome::Running => (RunState::Running, None, None),
        Outcome::Exported(r) => {
            let manifest = r.manifest.iter().map(|m| format!("{}  {}\n", m.digest, m.name)).collect();
            let result = ExportResult {
                messages: r.messages,
                bytes: r.bytes,
                file_sha256: r.file_sha256.clone(),
                download: format!("/api/v1/archives/{}/exports/{}/download", run.archive, run.id),
                manifest,
                expires_at: finished.and_then(|f| chrono::Duration::from_std(ttl).ok().map(|ttl| timestamp(f + ttl))),
            };
            (RunState::Done, None, Some(result))
        }
        Outcome::Failed(e) => (RunState::Failed, Some(e), None),
        Outcome::Verified(_) => (RunState::Failed, Some("not an export run".into()), None),
    };
    ExportRun {
        id: run.id,
        archive: run.archive.clone(),
        format,
        state,
        started_at: timestamp(run.started_at),
        finished_at: finished.map(timestamp),
        error,
        result,
    }
}

fn run_format(run: &TaskRun) -> ExportFormatBody {
    format_of(run.path.as_deref())
}

fn format_of(path: Option<&std::path::Path>) -> ExportFormatBody {
    match path.and_then(|p| p.extension()).and_then(|e| e.to_str()) {
        Some("zip") => ExportFormatBody::EmlZip,
        _ => ExportFormatBody::Mbox,
    }
}

/// Start an export of the distinct messages matching `query` as an mbox (mboxrd) or a zip
/// of `.eml` files, each with a SHA-256 manifest; every message is read through the
/// verified path and the export is recorded in the archive's event log. Runs in the
/// background like verify; the file is written under the archive's `exports/` directory
/// and downloaded from `…/exports/{id}/download`.
#[utoipa::path(post, operation_id = "start_archive_export", path = "/archives/{name}/exports", tag = "archives",
    request_body = ExportBody,
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 202, description = "Started", body = ExportRun, headers(("Location" = String, description = "Where to poll"))),
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
    let slot = reserve(&state, &a, &name).await?;
    let dir = a.dir().join("exports");
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::Internal(format!("create {}: {e}", dir.display())))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let ext = body.format.extension();
    let file_of = |id: i64| dir.join(format!("export-{stamp}-{id}.{ext}"));
    let id = a.run_started("export", |id| Some(file_of(id).display().to_string())).await.map_err(archive_error)?;
    let run = state.tasks.start(&name, TaskKind::Export, id as u64, Some(file_of(id)));
    spawn_heartbeat(Arc::clone(&a), Arc::clone(&run));
    let who = who(&p);
    let task = Arc::clone(&run);
    let format = body.format;
    let ttl = state.config.export_ttl();
    tokio::spawn(async move {
        let Some(path) = task.path.clone() else { return };
        let outcome = match a.export(&q, format.library(), &path, &who).await {
            Ok(report) => {
                tracing::info!(archive = %task.archive, messages = report.messages, "archive export written");
                Outcome::Exported(Box::new(report))
            }
            Err(e) => {
                tracing::error!(archive = %task.archive, error = %e, "archive export failed");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(sidecar(&path));
                Outcome::Failed(e.to_string())
            }
        };
        task.finish(outcome);
        record_finished(&a, &task, &export_view(&task, format, ttl)).await;
        drop(slot);
    });
    let location = format!("/api/v1/archives/{name}/exports/{}", run.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(export_view(&run, format, ttl))).into_response())
}

/// An export run: `running`, then `done` (with its download URL, manifest and when the
/// file expires) or `failed`.
#[utoipa::path(get, operation_id = "get_archive_export", path = "/archives/{name}/exports/{id}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = u64, Path, description = "Export id")),
    responses(
        (status = 200, description = "The run", body = ExportRun),
        (status = 404, description = "No such archive or export", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn export_status(State(state): State<AppState>, ApiPath((name, id)): ApiPath<(String, u64)>) -> ApiResult<Response> {
    if let Some(run) = state.tasks.get(&name, TaskKind::Export, id) {
        return Ok(Json(export_view(&run, run_format(&run), state.config.export_ttl())).into_response());
    }
    let rec = export_record(&state, &name, id).await?;
    recorded_view(&rec, |state, error| ExportRun {
        id,
        archive: name.clone(),
        format: format_of(rec.file.as_deref().map(std::path::Path::new)),
        state,
        started_at: timestamp(rec.started_at),
        finished_at: None,
        error,
        result: None,
    })
}

/// The archive's record of export `id` (for exports this process no longer holds).
async fn export_record(state: &AppState, name: &str, id: u64) -> ApiResult<mailferry_archive::RunRecord> {
    let a = open(state, name).await?;
    a.run_record("export", id as i64)
        .await
        .map_err(archive_error)?
        .ok_or_else(|| ApiError::NotFound(format!("there is no export {id} of archive {name:?}")))
}

/// The export file, streamed (`application/mbox` or `application/zip`), until it expires
/// `[archive] export_ttl_secs` after the export finished (then 410: start a new export).
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
    let (path, finished) = match state.tasks.get(&name, TaskKind::Export, id) {
        Some(run) => {
            let (outcome, finished) = run.outcome();
            match outcome {
                Outcome::Exported(_) => {}
                Outcome::Running => return Err(ApiError::Conflict(format!("export {id} is still running"))),
                _ => return Err(ApiError::Conflict(format!("export {id} failed; there is nothing to download"))),
            }
            let path = run.path.clone().ok_or_else(|| ApiError::Internal("export without a path".into()))?;
            (path, finished.unwrap_or(run.started_at))
        }
        None => {
            // Written before a restart, or by another API process: the file is wherever
            // that process wrote it (found here when the data directory is shared).
            let rec = export_record(&state, &name, id).await?;
            match rec.state.as_str() {
                "done" => {}
                "running" => return Err(ApiError::Conflict(format!("export {id} is still running"))),
                _ => return Err(ApiError::Conflict(format!("export {id} failed; there is nothing to download"))),
            }
            let file = rec.file.ok_or_else(|| ApiError::Internal("export without a path".into()))?;
            (std::path::PathBuf::from(file), rec.finished_at.unwrap_or(rec.heartbeat_at))
        }
    };
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
    let format = format_of(Some(&path));
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

/// Place a legal hold (admin): while active it blocks every purge of what it covers —
/// the whole archive, one account, or whatever matches a query at purge time.
#[utoipa::path(post, operation_id = "place_archive_hold", path = "/archives/{name}/holds", tag = "archives",
    request_body = HoldBody,
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 201, description = "Placed", body = HoldView),
        (status = 403, description = "Needs the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such archive", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid scope or reason", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn place_hold(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<HoldBody>,
) -> ApiResult<Response> {
    let a = open(&state, &name).await?;
    let reason = body.reason.trim();
    let mut errors = Vec::new();
    if reason.is_empty() || reason.len() > 1000 {
        errors.push(FieldError::invalid("reason", "a hold needs a reason of at most 1000 bytes"));
    }
    let scope = match body.scope {
        HoldScopeBody::Archive => HoldScope::Archive,
        HoldScopeBody::Account(acct) if acct.trim().is_empty() => {
            errors.push(FieldError::required("scope.account"));
            HoldScope::Archive
        }
        HoldScopeBody::Account(acct) => HoldScope::Account(acct.trim().to_owned()),
        HoldScopeBody::Query(q) => {
            let s = q.to_search("scope.query.", &mut errors);
            if s == mailferry_archive::SearchQuery::default() {
                errors.push(FieldError::invalid("scope.query", "an empty query would hold everything: use scope \"archive\""));
            }
            HoldScope::Query(Box::new(s))
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation { detail: "invalid hold".into(), errors });
    }
    let hold = a.place_hold(scope, reason, &who(&p)).await.map_err(archive_error)?;
    tracing::info!(archive = %name, hold.id = hold.id, "legal hold placed");
    let target = crate::audit::AuditTarget(hold.id.to_string());
    let mut response = (StatusCode::CREATED, Json(HoldView::from(hold))).into_response();
    response.extensions_mut().insert(target);
    Ok(response)
}

/// Release a legal hold (admin). Recorded in the event log; the hold stops blocking purges.
#[utoipa::path(delete, operation_id = "release_archive_hold", path = "/archives/{name}/holds/{id}", tag = "archives",
    params(("name" = String, Path, description = "Archive name"), ("id" = i64, Path, description = "Hold id")),
    responses(
        (status = 204, description = "Released"),
        (status = 403, description = "Needs the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such archive or active hold", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn release_hold(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath((name, id)): ApiPath<(String, i64)>,
) -> ApiResult<StatusCode> {
    let a = open(&state, &name).await?;
    a.release_hold(id, &who(&p)).await.map_err(archive_error)?;
    tracing::info!(archive = %name, hold.id = id, "legal hold released");
    Ok(StatusCode::NO_CONTENT)
}

/// Set the retention period (admin), counted from each message's ingest; `null` keeps
/// messages forever. Recorded in the event log. Purging stays an explicit operation.
#[utoipa::path(put, operation_id = "set_archive_retention", path = "/archives/{name}/retention", tag = "archives",
    request_body = RetentionBody,
    params(("name" = String, Path, description = "Archive name")),
    responses(
        (status = 200, description = "The policy now", body = RetentionView),
        (status = 403, description = "Needs the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such archive", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid days", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_retention(
    State(state): State<AppState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    JsonBody(body): JsonBody<RetentionBody>,
) -> ApiResult<Json<RetentionView>> {
    if body.days == Some(0) {
        return Err(ApiError::Validation {
            detail: "invalid retention".into(),
            errors: vec![FieldError::invalid("days", "days must be at least 1 (null keeps messages forever)")],
        });
    }
    let a = open(&state, &name).await?;
    let policy = a.set_retention(body.days, &who(&p)).await.map_err(archive_error)?;
    tracing::info!(archive = %name, retention_days = ?body.days, "archive retention changed");
    Ok(Json(policy.into()))
}
