//! Signed migration receipts (issue 14): `GET /jobs/{id}/receipt` streams the receipt the
//! engine signed and stored when a run finished, and `GET /receipts/public-key` hands out
//! the key that verifies them.
//!
//! Same access as the job and its ledger (`read` scope, any job). The receipt is streamed a
//! page of entries at a time from the store ([`ReceiptReader`]), never held whole, so memory
//! stays flat whatever the number of messages; it is sent exactly as stored, never parsed
//! and encoded again.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::stream::{self, Stream};
use mailferry_store::ReceiptReader;
use mailferry_store::RunId;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiPath, ApiQuery};
use crate::handlers::v1::jobs;
use crate::receipt_views::{PublicKeyView, ReceiptDoc};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get)).routes(routes!(public_key))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReceiptQuery {
    /// The run whose receipt to return: a run id, as in a receipt's `run` field. Default:
    /// the job's latest run that has a receipt.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub run: Option<String>,
}

/// The signed receipt of the job's latest run, or of `?run=`.
///
/// Every source message, where it went, the digests retrieved, sent and read back, the
/// source action, a Merkle root over the entries and an Ed25519 signature over the header.
/// Issued when a run finishes (not for dry runs). Streamed (no `Content-Length`); a store
/// failure part-way ends the body early, so an incomplete receipt never parses. Check it
/// offline with the key from `GET /receipts/public-key`.
#[utoipa::path(get, operation_id = "get_job_receipt", path = "/jobs/{id}/receipt", tag = "receipts",
    params(("id" = i64, Path, description = "Job id"), ReceiptQuery),
    responses(
        (status = 200, description = "The receipt, as signed", body = ReceiptDoc),
        (status = 400, description = "`run` is not a positive integer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job, or the job has no receipt (yet, or for that run)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<i64>, ApiQuery(q): ApiQuery<ReceiptQuery>) -> ApiResult<Response> {
    let run = parse_run(q.run.as_deref())?;
    state.store.get_job(id).await?.ok_or_else(|| jobs::not_found(id))?;
    let reader = ReceiptReader::open(Arc::clone(&state.store), id, run)
        .await?
        .ok_or_else(|| no_receipt(id, run, state.config.receipt_public_key.is_some()))?;
    let body = Body::from_stream(chunks(reader, id));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `?run=`: absent, or a positive integer.
fn parse_run(run: Option<&str>) -> ApiResult<Option<RunId>> {
    let Some(text) = run else { return Ok(None) };
    match text.trim().parse::<RunId>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(ApiError::BadRequest(format!("run must be a positive integer (a run id, as in a receipt's \"run\"), not {text:?}"))),
    }
}

fn no_receipt(id: i64, run: Option<RunId>, issuing: bool) -> ApiError {
    let which = match run {
        Some(run) => format!("job {id} has no receipt for run {run}"),
        None => format!("job {id} has no receipt yet"),
    };
    let why = if issuing {
        "receipts are issued when a run finishes (dry runs have none)"
    } else {
        "this server issues no receipts (it has no receipt signing key)"
    };
    ApiError::NotFound(format!("{which}: {why}"))
}

/// The receipt's JSON, piece by piece. The status line went out with the first piece, so
/// a store error part-way can only end the body early (the client sees a broken response,
/// never a shorter receipt that parses); it is logged.
fn chunks(reader: ReceiptReader, job: i64) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let run = reader.run();
    stream::unfold(Some(reader), move |reader| async move {
        let mut reader = reader?;
        match reader.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(Bytes::from(chunk)), Some(reader))),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(job.id = job, run.id = run, error = %e, "the receipt stopped part-way");
                Some((Err(std::io::Error::other("the receipt could not be completed")), None))
            }
        }
    })
}

/// The Ed25519 public key that verifies this installation's receipts.
///
/// Every receipt also carries the key that signed it, which proves the receipt intact but
/// not who made it: compare the two, or check receipts with a copy of this key kept
/// elsewhere.
#[utoipa::path(get, operation_id = "get_receipt_public_key", path = "/receipts/public-key", tag = "receipts",
    responses(
        (status = 200, description = "The key", body = PublicKeyView),
        (status = 404, description = "This server issues no receipts", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn public_key(State(state): State<AppState>) -> ApiResult<Json<PublicKeyView>> {
    let key = state.config.receipt_public_key.clone().ok_or_else(|| {
        ApiError::NotFound("this server issues no receipts (it has no receipt signing key), so it has no public key".into())
    })?;
    Ok(Json(PublicKeyView { algorithm: "ed25519".into(), public_key: key }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_positive_integers() {
        assert_eq!(parse_run(None).unwrap(), None);
        assert_eq!(parse_run(Some("3")).unwrap(), Some(3));
        assert_eq!(parse_run(Some(" 12 ")).unwrap(), Some(12));
        for bad in ["", "0", "-1", "1.5", "abc", "99999999999999999999"] {
            let e = parse_run(Some(bad)).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)), "{bad:?}: {e:?}");
        }
    }

    #[test]
    fn a_missing_receipt_says_which_and_why() {
        assert_eq!(
            no_receipt(7, Some(3), true).to_string(),
            "job 7 has no receipt for run 3: receipts are issued when a run finishes (dry runs have none)"
        );
        assert_eq!(no_receipt(7, None, true).to_string(), "job 7 has no receipt yet: receipts are issued when a run finishes (dry runs have none)");
        assert!(no_receipt(7, None, false).to_string().contains("issues no receipts"));
    }
}
