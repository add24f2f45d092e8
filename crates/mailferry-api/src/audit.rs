//! The audit log: every state-changing call (POST, PUT, PATCH, DELETE) made with a valid
//! token is recorded in the database after it is answered, whatever the answer (a 403, a
//! 409 and an idempotent replay are calls too): who (token id and name), what (method,
//! route template, target, status), when, and from where (the client address, see
//! [`crate::client`]). Request bodies are never recorded: they carry mailbox passwords.
//!
//! Calls without a valid token are not recorded (they changed nothing and name nobody;
//! recording them would let anyone write to the database): they are logged, counted in
//! `/metrics`, and limited per address. Admins read the log at `GET /api/v1/audit`.

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::Response;
use mailferry_store::NewAuditEntry;

use crate::auth::Principal;
use crate::state::AppState;

/// Set by a handler on its response to name what it created when there is no `Location`
/// header (e.g. a token's id).
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

/// Middleware (outside authentication, so refusals by scope are recorded too).
pub(crate) async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let client = crate::client::client_ip(req.extensions(), req.headers(), &state.trusted_proxies);
    let (mut parts, body) = req.into_parts();
    let mut target: Vec<String> = match RawPathParams::from_request_parts(&mut parts, &state).await {
        Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
        Err(_) => Vec::new(),
    };
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(principal) = response.extensions().get::<Principal>().cloned() else {
        return response;
    };
    let created = response.extensions().get::<AuditTarget>().map(|t| t.0.clone()).or_else(|| {
        let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
        location.rsplit('/').next().filter(|s| !s.is_empty()).map(str::to_owned)
    });
    target.extend(created);
    let entry = NewAuditEntry {
        token_id: Some(principal.token_id),
        token_name: Some(principal.name),
        method,
        route,
        target: (!target.is_empty()).then(|| target.join("/")),
        status: response.status().as_u16(),
        client: client.map(|c| c.to_string()),
    };
    if let Err(e) = state.store.record_audit(&entry).await {
        // The call already happened; losing its record is loud, not silent.
        metrics::counter!("mailferry_audit_write_failures_total").increment(1);
        tracing::error!(error = %e, method = %entry.method, route = %entry.route, status = entry.status, "writing the audit log failed");
    }
    response
}
