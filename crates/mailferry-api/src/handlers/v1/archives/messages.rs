//! Reading an archive: search, a message's exact bytes (verified on the way out), its
//! metadata and provenance.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mailferry_archive::ArchiveError;

use super::{archive_error, digest, open, query};
use crate::archive_views::*;
use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, ApiQuery};
use crate::state::AppState;

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
    params(("name" = String, Path, description = "Archive name"), ("digest" = String, Path, description = "SHA-256 of the message: 64 hex digits", pattern = r"^\s*[0-9A-Fa-f]{64}\s*$")),
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
    params(("name" = String, Path, description = "Archive name"), ("digest" = String, Path, description = "SHA-256 of the message: 64 hex digits", pattern = r"^\s*[0-9A-Fa-f]{64}\s*$")),
    responses(
        (status = 200, description = "Metadata and provenance", body = MessageMetaView),
        (status = 404, description = "No such archive or message", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn meta(State(state): State<AppState>, ApiPath((name, hex)): ApiPath<(String, String)>) -> ApiResult<Json<MessageMetaView>> {
    let a = open(&state, &name).await?;
    let d = digest(&hex)?;
    Ok(Json(a.meta(&d).await.map_err(archive_error)?.into()))
}

