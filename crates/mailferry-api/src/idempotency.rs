//! `Idempotency-Key` on POST: the first response (status and body) is stored per token and
//! key with a hash of the request; repeating the request returns that response again
//! (`Idempotent-Replayed: true`) and creates nothing. The same key with another request is
//! refused (422, `/problems/idempotency-key-reused`); while the first request with a key
//! is still running, a repeat gets 409 rather than running twice.
//!
//! Server errors (5xx) are not stored, so a retry after one runs again. Token creation is
//! exempt: replaying it would mean storing the new token in clear.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mailferry_store::StoredResponse;
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::{ApiError, PROBLEM_JSON};
use crate::extract::read_body;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: &str = "idempotent-replayed";

/// The middleware's state: the app, and the keys whose first request is in flight.
#[derive(Clone, Debug)]
pub(crate) struct Idempotency {
    pub app: AppState,
    inflight: Arc<Mutex<HashSet<(i64, String)>>>,
}

impl Idempotency {
    pub fn new(app: AppState) -> Self {
        Self { app, inflight: Arc::default() }
    }
}

/// Removes the in-flight mark when the first request ends, however it ends.
struct InFlight(Arc<Mutex<HashSet<(i64, String)>>>, (i64, String));

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
    }
}

pub(crate) async fn middleware(State(idem): State<Idempotency>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST || req.uri().path().starts_with("/api/v1/tokens") {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_owned(),
        _ => {
            return ApiError::BadRequest("Idempotency-Key must be 1-255 visible ASCII characters".into()).into_response()
        }
    };
    let Some(token_id) = req.extensions().get::<Principal>().map(|p| p.token_id) else {
        return next.run(req).await;
    };
    let state = &idem.app;
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes.max(state.config.max_batch_bytes);
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let path = parts.uri.path().to_owned();
    let request_hash = {
        let mut h = Sha256::new();
        h.update(parts.method.as_str());
        h.update(b"\n");
        h.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(&path));
        h.update(b"\n");
        h.update(parts.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()).unwrap_or_default());
        h.update(b"\n");
        h.update(&bytes);
        hex::encode(h.finalize())
    };

    match state.store.idempotency_get(token_id, &key).await {
        Ok(Some(stored)) if stored.request_hash == request_hash => return replay(&stored, &path),
        Ok(Some(_)) => return ApiError::IdempotencyKeyReused.into_response(),
        Ok(None) => {}
        Err(e) => return ApiError::from(e).into_response(),
    }
    let slot = (token_id, key.clone());
    if !idem.inflight.lock().unwrap_or_else(|p| p.into_inner()).insert(slot.clone()) {
        return ApiError::Conflict("a request with this Idempotency-Key is still in progress; retry later".into())
            .into_response();
    }
    let _guard = InFlight(idem.inflight.clone(), slot);

    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if response.status().is_server_error() {
        return response;
    }
    let (mut rparts, rbody) = response.into_parts();
    let rbytes = match axum::body::to_bytes(rbody, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(format!("buffering a response: {e}")).into_response(),
    };
    match String::from_utf8(rbytes.to_vec()) {
        Ok(body) => {
            let stored = StoredResponse { request_hash, status: rparts.status.as_u16(), body };
            if let Err(e) = state.store.idempotency_put(token_id, &key, &stored).await {
                tracing::warn!(error = %e, "could not record an idempotent response");
            }
        }
        Err(_) => tracing::warn!("not recording a non-UTF-8 response for an Idempotency-Key"),
    }
    rparts.headers.insert(REPLAYED, HeaderValue::from_static("false"));
    Response::from_parts(rparts, Body::from(rbytes))
}

/// The stored response again, as it was first sent.
fn replay(stored: &StoredResponse, path: &str) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_client_error() || status.is_server_error() { PROBLEM_JSON } else { "application/json" };
    let mut response = (status, stored.body.clone()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    // The Location of a created job or batch is its collection URL plus the new id.
    if status == StatusCode::CREATED && (path == "/api/v1/jobs" || path == "/api/v1/batches") {
        let id = serde_json::from_str::<serde_json::Value>(&stored.body).ok().and_then(|v| v.get("id")?.as_i64());
        if let Some(Ok(location)) = id.map(|id| HeaderValue::from_str(&format!("{path}/{id}"))) {
            headers.insert(header::LOCATION, location);
        }
    }
    response
}
