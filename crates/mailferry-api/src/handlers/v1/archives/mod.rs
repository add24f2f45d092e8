//! `/api/v1/archives`: the compliance archives (DESIGN.md §3 "Archive", issue 4) — list with
//! counts and dedup ratio, search, the exact bytes of a message (verified on the way out),
//! its metadata and provenance, verify and export runs, legal holds and retention: one
//! module each (`messages`, `runs`, `holds`), each with its own request and response types.
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

use axum::extract::State;
use axum::Json;
use mailferry_archive::{Archive, ArchiveError, Archives, Digest};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::archive_views::{ArchiveList, ArchiveQuery, ArchiveView};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::state::AppState;

mod holds;
mod messages;
mod run_views;
mod runs;

pub use holds::*;
pub use messages::*;
pub use runs::*;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(messages::search))
        .routes(routes!(messages::raw))
        .routes(routes!(messages::meta))
        .routes(routes!(runs::verify))
        .routes(routes!(runs::verify_status))
        .routes(routes!(runs::export))
        .routes(routes!(runs::export_status))
        .routes(routes!(runs::export_download))
        .routes(routes!(holds::place_hold))
        .routes(routes!(holds::release_hold))
        .routes(routes!(holds::set_retention))
}

/// An archive that exists (never creates one), or 404.
pub(super) async fn open(state: &AppState, name: &str) -> ApiResult<Arc<Archive>> {
    if !Archives::valid_name(name) || !state.archives.exists(name).await.map_err(archive_error)? {
        return Err(ApiError::NotFound(format!("there is no archive {name:?}")));
    }
    state.archives.get(name).await.map_err(archive_error)
}

pub(super) fn archive_error(e: ArchiveError) -> ApiError {
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

pub(super) fn digest(hex: &str) -> ApiResult<Digest> {
    hex.parse().map_err(|_| ApiError::BadRequest(format!("{hex:?} is not a SHA-256 digest (64 hex digits)")))
}

/// Who did it, for the archive's event log: the token's id and name, never the token.
pub(super) fn who(p: &Principal) -> String {
    format!("api-token:{}:{}", p.token_id, p.name)
}

pub(super) fn query(q: &ArchiveQuery, prefix: &str) -> ApiResult<mailferry_archive::SearchQuery> {
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
