//! Legal holds and retention (admin scope): recorded in the archive's event log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use mailferry_archive::HoldScope;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{archive_error, open, who};
use crate::archive_views::{timestamp, HoldScopeBody, HoldView};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, JsonBody};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    pub scope: HoldScopeBody,
    /// Why (case number, matter): recorded in the event log.
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionBody {
    /// Days from ingest before a message may be purged; `null` keeps everything forever.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    pub days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetentionView {
    pub retention_days: Option<u32>,
    pub updated_at: String,
    pub updated_by: String,
}

impl From<mailferry_archive::RetentionPolicy> for RetentionView {
    fn from(p: mailferry_archive::RetentionPolicy) -> Self {
        Self { retention_days: p.retention_days, updated_at: timestamp(p.updated_at), updated_by: p.updated_by }
    }
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
/// messages forever.
///
/// Recorded in the event log. Every `archive.purge_interval` (default one hour) `serve`
/// and `worker` purge the messages that have expired and that no legal hold covers, leaving
/// a tombstone; a purged message then answers 410.
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
