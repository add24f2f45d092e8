//! `/api/v1/jobs`: create, list, inspect and control jobs; ledger pages, reports and the
//! live progress stream. Every number comes from the ledger through the store.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::Extension;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use mailferry_model::{JobCounts, JobState};
use mailferry_store::{ControlAction, ControlOutcome, JobFilter};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, ApiQuery, JsonBody};
use crate::auth::Principal;
use crate::spec::{validate, JobBody};
use crate::sse::{Snapshot, StreamPermit};
use crate::state::AppState;
use crate::views::{Counts, JobPage, JobReport, JobView, MessagePage, MessageView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(rerun))
        .routes(routes!(messages))
        .routes(routes!(report))
        .routes(routes!(events))
}

pub(crate) fn not_found(id: i64) -> ApiError {
    ApiError::NotFound(format!("there is no job {id}"))
}

/// A job with its ledger counts, or 404.
pub(crate) async fn load(state: &AppState, id: i64) -> ApiResult<JobView> {
    let job = state.store.get_job(id).await?.ok_or_else(|| not_found(id))?;
    let counts = state.store.job_counts(id).await?;
    Ok(JobView::new(job, counts))
}

/// Create a job (state `queued`). Passwords are encrypted before they are stored and are
/// never returned.
#[utoipa::path(post, operation_id = "create_job", path = "/jobs", tag = "jobs", request_body = JobBody,
    params(CreateJobQuery, ("Idempotency-Key" = Option<String>, Header, description = "Repeat-safe POST: a repeated key returns the first response")),
    responses(
        (status = 201, description = "Created", body = JobView, headers(("Location" = String, description = "URL of the new job"))),
        (status = 200, description = "With `preflight=true`: the mailbox checked, nothing created (reason codes: docs/OPERATIONS.md, \"Preflight\")", body = mailferry_model::preflight::MailboxPreflight),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid job (`/problems/validation`), plaintext refused (`/problems/plaintext-not-allowed`), or a host resolving to an address jobs created over the API may not reach, such as loopback, private or cloud metadata, unless the server's `network.allow` names it (`/problems/network-not-allowed`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CreateJobQuery>,
    JsonBody(body): JsonBody<JobBody>,
) -> ApiResult<Response> {
    let spec = validate(body, &state.config, &state.sealer)
        .map_err(|errors| ApiError::from_field_errors("the job is invalid", errors))?;
    // DESIGN.md §2.9: refused now when a host resolves to an internal address (the worker
    // checks again at connect time).
    let resolved = crate::netcheck::resolve([&spec]).await;
    let refused = crate::netcheck::check(&spec, &state.config.network, &resolved);
    if !refused.is_empty() {
        return Err(ApiError::from_field_errors("the job is refused by the network policy", refused));
    }
    if q.preflight {
        return super::preflight::job(&state, &spec).await;
    }
    let trace_parent = crate::trace::current_trace_parent();
    let (_, jobs) = state.store.create_jobs_traced(None, std::slice::from_ref(&spec), trace_parent.as_deref()).await?;
    let job = jobs.into_iter().next().ok_or_else(|| ApiError::Internal("create_jobs returned no job".into()))?;
    // Hosts only: user names are often mail addresses, and this event is exported with the
    // request's span.
    tracing::info!(job.id = job.id, source.host = %spec.source.host, target.host = spec.target_host(), "job created");
    let view = JobView::new(job, JobCounts::default());
    let location = format!("/api/v1/jobs/{}", view.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(view)).into_response())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateJobQuery {
    /// Check the mailbox instead of creating the job (issue 17): logins on both sides, TLS,
    /// CAPA/STAT/LIST/UIDL, CAPABILITY, the folder (LIST, never CREATE), GETQUOTAROOT;
    /// answers 200 with a verdict (`ready`, `warning`, `blocked`), stable reason codes and
    /// an estimate in seconds (5 s a run plus the bytes at the throughput measured over the
    /// latest jobs that succeeded in one run, else 2 MiB/s and 20 ms a message). Nothing
    /// is stored.
    #[serde(default)]
    pub preflight: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this batch.
    pub batch: Option<i64>,
    /// Only jobs with this label, as `key:value`.
    pub label: Option<String>,
    /// Substring of the source or target (user, host).
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size: 1–500, default 50 (a server with a smaller `api.max_per_page` returns at
    /// most that many; larger values are refused with 400).
    #[serde(default, deserialize_with = "crate::extract::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// List jobs, oldest first, with filters and cursor pagination.
#[utoipa::path(get, operation_id = "list_jobs", path = "/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter value", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<JobPage>> {
    let mut errors = Vec::new();
    let job_state = q.state.as_deref().filter(|s| !s.is_empty()).and_then(|s| {
        let parsed = JobState::parse(s);
        if parsed.is_none() {
            errors.push(FieldError::invalid("state", format!("unknown state {s:?}")));
        }
        parsed
    });
    let label = q.label.as_deref().filter(|s| !s.is_empty()).and_then(|l| {
        let kv = l.split_once(':').or_else(|| l.split_once('='));
        if kv.is_none() {
            errors.push(FieldError::invalid("label", "label filters are key:value"));
        }
        kv.map(|(k, v)| (k.to_owned(), v.to_owned()))
    });
    let after = parse_cursor(q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation { detail: "invalid list parameters".into(), errors });
    }
    let limit = state.config.page_size(q.limit);
    let filter = JobFilter {
        state: job_state,
        batch: q.batch,
        label,
        text: q.q.filter(|s| !s.is_empty()),
        after,
        limit: limit + 1,
    };
    let mut jobs = state.store.list_jobs(&filter).await?;
    // The store returns at most 500 rows a query: with `limit` 500 the extra row that says
    // "there is more" is never there, so a full page asks once more.
    let more = jobs.len() > limit as usize
        || (jobs.len() == limit as usize && {
            let probe = JobFilter { after: jobs.last().map(|j| j.id), limit: 1, ..filter.clone() };
            !state.store.list_jobs(&probe).await?.is_empty()
        });
    jobs.truncate(limit as usize);
    let mut items = Vec::with_capacity(jobs.len());
    for job in jobs {
        let counts = state.store.job_counts(job.id).await?;
        items.push(JobView::new(job, counts));
    }
    let next_cursor = more.then(|| items.last().map(|j| j.id.to_string())).flatten();
    Ok(Json(JobPage { items, next_cursor }))
}

fn parse_cursor(cursor: Option<&str>, errors: &mut Vec<FieldError>) -> Option<i64> {
    let cursor = cursor.filter(|c| !c.is_empty())?;
    let parsed = cursor.parse::<i64>().ok();
    if parsed.is_none() {
        errors.push(FieldError::invalid("cursor", "not a cursor returned by this API"));
    }
    parsed
}

/// One job with its counts.
#[utoipa::path(get, operation_id = "get_job", path = "/jobs/{id}", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    load(&state, id).await.map(Json)
}

async fn control(state: &AppState, id: i64, action: ControlAction) -> ApiResult<Json<JobView>> {
    match state.store.control(id, action).await? {
        ControlOutcome::Done(job) => {
            tracing::info!(job.id = id, ?action, state = %job.state, "job control");
            let counts = state.store.job_counts(id).await?;
            Ok(Json(JobView::new(job, counts)))
        }
        ControlOutcome::Conflict(st) => {
            let verb = format!("{action:?}").to_ascii_lowercase();
            Err(ApiError::Conflict(format!("cannot {verb} job {id}: it is {st}")))
        }
        ControlOutcome::NotFound => Err(not_found(id)),
    }
}

/// Cancel: a queued or paused job stops at once; a running one stops between messages
/// (`cancel_requested` until then).
#[utoipa::path(post, operation_id = "cancel_job", path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job after the action", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in the job's state", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    control(&state, id, ControlAction::Cancel).await
}

/// Pause: a queued job is paused at once; a running one between messages.
#[utoipa::path(post, operation_id = "pause_job", path = "/jobs/{id}/pause", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job after the action", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in the job's state", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn pause(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    control(&state, id, ControlAction::Pause).await
}

/// Resume a paused job (it is queued again and continues from the ledger).
#[utoipa::path(post, operation_id = "resume_job", path = "/jobs/{id}/resume", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job after the action", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in the job's state", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn resume(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    control(&state, id, ControlAction::Resume).await
}

/// Rerun a finished job: a delta pass on the same ledger that copies only what is new.
#[utoipa::path(post, operation_id = "rerun_job", path = "/jobs/{id}/rerun", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job after the action", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not possible in the job's state", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rerun(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    control(&state, id, ControlAction::Rerun).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size: 1–500, default 50 (a server with a smaller `api.max_per_page` returns at
    /// most that many; larger values are refused with 400).
    #[serde(default, deserialize_with = "crate::extract::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A page of the job's ledger, ordered by UIDL.
#[utoipa::path(get, operation_id = "list_job_messages", path = "/jobs/{id}/messages", tag = "jobs",
    params(("id" = i64, Path, description = "Job id"), PageQuery),
    responses(
        (status = 200, description = "A page of ledger rows", body = MessagePage),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn messages(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<MessagePage>> {
    state.store.get_job(id).await?.ok_or_else(|| not_found(id))?;
    let limit = state.config.page_size(q.limit);
    let after = q.cursor.as_deref().filter(|c| !c.is_empty());
    let mut rows = state.store.ledger_page(id, after, limit + 1).await?;
    // As in `list`: a page the store capped at `limit` rows may not be the last.
    let more = rows.len() > limit as usize
        || (rows.len() == limit as usize && {
            let last = rows.last().map(|r| r.uidl.as_str());
            !state.store.ledger_page(id, last, 1).await?.is_empty()
        });
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(|r| r.uidl.clone())).flatten();
    Ok(Json(MessagePage { items: rows.into_iter().map(MessageView::from).collect(), next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` or `csv`; overrides the `Accept` header.
    #[param(pattern = "^(|json|csv)$")]
    pub format: Option<String>,
}

/// The job's report: the job, its counts and every ledger row; CSV (one row per message)
/// with `Accept: text/csv` or `?format=csv`. Streamed from the ledger page by page (no
/// `Content-Length`). In CSV, a cell that begins with `=`, `+`, `-`, `@`, a tab or a
/// carriage return gets a leading `'` so that no spreadsheet runs it as a formula (UIDLs
/// and reasons come from mail servers); the JSON report has the exact values.
#[utoipa::path(get, operation_id = "get_job_report", path = "/jobs/{id}/report", tag = "jobs",
    params(("id" = i64, Path, description = "Job id"), ReportQuery),
    responses(
        (status = 200, description = "The report", content(
            (JobReport = "application/json"),
            (String = "text/csv", example = "uidl,size,state,reason,digest,dest_uid,internal_date,internal_date_source,first_seen_at,copied_at,deleted_at\n"),
        )),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn report(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ReportQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") | None | Some("") => {
            q.format.is_none() && headers.get_all(header::ACCEPT).iter().any(|v| v.to_str().is_ok_and(|v| v.contains("text/csv")))
        }
        Some(other) => {
            let e = FieldError::invalid("format", format!("unknown report format {other:?}: json or csv"));
            return Err(ApiError::Validation { detail: "invalid report format".into(), errors: vec![e] });
        }
    };
    let job = load(&state, id).await?;
    Ok(crate::report::job_report(state, job, csv))
}

/// Live progress as Server-Sent Events: `state` when the job's state changes, `progress`
/// (state and counts) when the counts change, at most a few per second, keep-alive
/// comments in between. The stream ends once the job is finished or paused (or the
/// server shuts down). A token may have `api.sse_max_per_token` streams open at once (8 by
/// default) and the server serves `api.sse_max_total` (256); beyond either, 429.
#[utoipa::path(get, operation_id = "job_events", path = "/jobs/{id}/events", tag = "jobs", params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "`event: state` data `{id, state, last_error}`; `event: progress` data `{id, state, counts}`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many open event streams for this token or for the server (`/problems/limit-reached`, with `Retry-After`); close one first", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Refused before the store is asked anything: a client over its cap costs nothing.
    let permit = state
        .streams
        .try_acquire(principal.token_id)
        .map_err(|refused| ApiError::LimitReached { detail: refused.to_string(), retry_after: STREAM_RETRY_AFTER_SECS })?;
    state.store.get_job(id).await?.ok_or_else(|| not_found(id))?;
    // A reconnecting EventSource resumes after the last state event it saw.
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let keep_alive = KeepAlive::new().interval(state.config.sse_keep_alive());
    let rx = state.watcher.subscribe(id, &state.store, &state.shutdown);
    let follow = Follow { state, id, rx, last_event_id, last_counts: None, look_now: true, done: false, failures: 0, _permit: permit };
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let events = f.next().await?;
        Some((futures::stream::iter(events.into_iter().map(Ok)), f))
    })
    .flatten();
    Ok(Sse::new(stream).keep_alive(keep_alive))
}

/// `Retry-After` of a stream refused by the caps: streams of finished jobs end by
/// themselves, and dashboards close theirs when the page changes.
const STREAM_RETRY_AFTER_SECS: u64 = 5;

/// One SSE stream: what its client was last told, fed by the process's poller
/// ([`crate::sse::JobWatcher`]). Dropped when the stream ends or the client goes away,
/// which unsubscribes it and frees its place ([`StreamPermit`]).
struct Follow {
    state: AppState,
    id: i64,
    rx: watch::Receiver<Arc<Snapshot>>,
    /// The last `job_events` row sent: state changes come from that table, in order, so a
    /// quick queued → running → succeeded is never collapsed into one change.
    last_event_id: i64,
    last_counts: Option<JobCounts>,
    /// Read the current snapshot before waiting for the next one (at the start, and while
    /// reading older state changes from the store).
    look_now: bool,
    done: bool,
    /// Consecutive failures to read older state changes from the store.
    failures: u32,
    _permit: StreamPermit,
}

impl Follow {
    /// The next events to send (possibly none); `None` ends the stream.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.done || self.state.shutdown.is_cancelled() {
            return None;
        }
        if !self.look_now {
            tokio::select! {
                changed = self.rx.changed() => changed.ok()?,
                () = self.state.shutdown.cancelled() => return None,
            }
        }
        self.look_now = false;
        let snapshot = Arc::clone(&self.rx.borrow_and_update());
        Some(self.events(&snapshot).await)
    }

    async fn events(&mut self, snap: &Snapshot) -> Vec<Event> {
        if !snap.ready {
            return Vec::new();
        }
        if snap.gone {
            self.done = true;
            return vec![event("gone", &serde_json::json!({"id": self.id}))];
        }
        if snap.unavailable {
            self.done = true;
            return vec![event("error", &serde_json::json!({"id": self.id, "error": "the job's progress is unavailable"}))];
        }
        let Some(job_state) = snap.state else { return Vec::new() };
        // Changes older than what the poller keeps come from the store, a page at a time.
        let mut older = Vec::new();
        let mut caught_up = true;
        if self.last_event_id < snap.floor {
            match self.state.store.job_events(self.id, self.last_event_id, OLDER_EVENTS_PAGE).await {
                Ok(page) => {
                    self.failures = 0;
                    caught_up = page.len() < OLDER_EVENTS_PAGE as usize;
                    older = page;
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(job.id = self.id, error = %e, "SSE: reading older job events failed");
                    if self.failures >= crate::sse::MAX_FAILURES {
                        self.done = true;
                        return vec![event("error", &serde_json::json!({"id": self.id, "error": "the job's progress is unavailable"}))];
                    }
                    tokio::time::sleep(self.state.config.sse_poll()).await;
                    caught_up = false;
                }
            }
            self.look_now = !caught_up;
        }
        let mut out = Vec::new();
        let mut state_changed = false;
        let recent = if caught_up { snap.events.iter().cloned().collect() } else { Vec::new() };
        for change in older.into_iter().chain(recent) {
            if change.id <= self.last_event_id {
                continue;
            }
            let data = serde_json::json!({
                "id": self.id, "state": change.state, "detail": change.detail, "at": change.at,
                "last_error": if change.state == job_state { snap.last_error.clone() } else { None },
            });
            out.push(event("state", &data).id(change.id.to_string()));
            self.last_event_id = change.id;
            state_changed = true;
        }
        if state_changed || self.last_counts != Some(snap.counts) {
            let data = serde_json::json!({"id": self.id, "state": job_state, "counts": Counts::from(snap.counts)});
            out.push(event("progress", &data));
            self.last_counts = Some(snap.counts);
        }
        if caught_up && (job_state.is_terminal() || job_state == JobState::Paused) {
            self.done = true;
        }
        out
    }
}

/// State changes read per query when a stream catches up from the store.
const OLDER_EVENTS_PAGE: u32 = 100;

fn event(name: &str, data: &serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}
