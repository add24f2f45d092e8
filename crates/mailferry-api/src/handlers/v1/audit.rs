//! `GET /api/v1/audit` (admin scope): the audit log of state-changing calls, newest first,
//! with filters and cursor pagination.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use mailferry_store::{AuditEntry, AuditFilter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::ApiQuery;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// One state-changing call. Never a request body.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    /// When it was answered (RFC 3339, UTC).
    pub at: String,
    /// The token used (its id and name at the time; the token may be revoked since).
    pub token_id: Option<i64>,
    pub token_name: Option<String>,
    pub method: String,
    /// Route template, e.g. `/api/v1/jobs/{id}/cancel`.
    pub route: String,
    /// What the call was about: its path parameters, then the id of what it created.
    pub target: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
    /// Client address: the socket peer, or from `X-Forwarded-For` when the peer is a
    /// trusted proxy.
    pub client: Option<String>,
}

impl From<AuditEntry> for AuditView {
    fn from(a: AuditEntry) -> Self {
        let e = a.entry;
        Self {
            id: a.id,
            at: a.at,
            token_id: e.token_id,
            token_name: e.token_name,
            method: e.method,
            route: e.route,
            target: e.target,
            status: e.status,
            client: e.client,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Calls at or after this time (RFC 3339).
    #[param(pattern = r"^$|^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")]
    pub since: Option<String>,
    /// Calls before this time (RFC 3339).
    #[param(pattern = r"^$|^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$")]
    pub until: Option<String>,
    /// Only calls made with this token id.
    pub token: Option<i64>,
    /// Only calls with this HTTP method (`POST`, `PUT`, `PATCH`, `DELETE`; any case).
    #[param(pattern = "^$|^([Pp][Oo][Ss][Tt]|[Pp][Uu][Tt]|[Pp][Aa][Tt][Cc][Hh]|[Dd][Ee][Ll][Ee][Tt][Ee])$")]
    pub method: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^$|^[+-]?[0-9]+$")]
    pub cursor: Option<String>,
    /// Page size: 1–500, default 50 (a server with a smaller `api.max_per_page` returns at
    /// most that many; larger values are refused with 400).
    #[serde(default, deserialize_with = "crate::extract::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, operation_id = "list_audit", path = "/audit", tag = "audit", params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditPage),
        (status = 400, description = "Bad query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter value", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(State(state): State<AppState>, ApiQuery(q): ApiQuery<AuditQuery>) -> ApiResult<Json<AuditPage>> {
    let mut errors = Vec::new();
    let mut time = |field: &str, v: Option<&str>| -> Option<DateTime<Utc>> {
        let v = v.filter(|v| !v.is_empty())?;
        let parsed = DateTime::parse_from_rfc3339(v).ok().map(|t| t.with_timezone(&Utc));
        if parsed.is_none() {
            errors.push(FieldError::invalid(field, "an RFC 3339 time, e.g. 2024-05-01T12:00:00Z"));
        }
        parsed
    };
    let since = time("since", q.since.as_deref());
    let until = time("until", q.until.as_deref());
    let method = q.method.as_deref().filter(|m| !m.is_empty()).map(str::to_ascii_uppercase);
    if method.as_deref().is_some_and(|m| !["POST", "PUT", "PATCH", "DELETE"].contains(&m)) {
        errors.push(FieldError::invalid("method", "only state-changing calls are recorded: POST, PUT, PATCH or DELETE"));
    }
    let before = q.cursor.as_deref().filter(|c| !c.is_empty()).and_then(|c| {
        let parsed = c.parse::<i64>().ok();
        if parsed.is_none() {
            errors.push(FieldError::invalid("cursor", "not a cursor returned by this API"));
        }
        parsed
    });
    if !errors.is_empty() {
        return Err(ApiError::Validation { detail: "invalid audit query".into(), errors });
    }
    let limit = state.config.page_size(q.limit);
    let filter = AuditFilter { since, until, token_id: q.token, method, before, limit: limit + 1 };
    let mut rows = state.store.list_audit(&filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more.then(|| rows.last().map(|r| r.id.to_string())).flatten();
    Ok(Json(AuditPage { items: rows.into_iter().map(AuditView::from).collect(), next_cursor }))
}
