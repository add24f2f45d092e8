//! Bearer-token authentication and scope checks.
//!
//! Tokens are `mf_` + 32 random bytes (base64url); only their SHA-256 is stored, so a
//! leaked database holds no working credential. Every route except `/healthz`, `/readyz`,
//! `/metrics` (unless `api.metrics_require_token`: then any scope will do), the
//! dashboard's page and static assets (`/`, `/assets/*`: no data, the page signs in by
//! itself) and the API's description (`/api/openapi.json`, Swagger UI at `/api/docs/`:
//! [`crate::web::is_public`]) needs a token; the scope needed follows from the route:
//! token management and changes to an archive's legal holds or retention are `admin`,
//! reads (`GET`, `HEAD`) are `read`, everything else is `write`; the audit log is `admin`
//! too. The token itself is never logged.
//!
//! Failed authentications are limited per client address ([`crate::ratelimit`]): a
//! blocked client is answered 429 before its token is looked at. The [`Principal`] is
//! attached to the request for handlers and to the response for the audit log.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mailferry_model::Scope;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Prefix of every token, so leaked tokens are easy to spot by secret scanners.
pub const TOKEN_PREFIX: &str = "mf_";

/// Routes that answer without a token (liveness and readiness probes, Prometheus).
pub const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", METRICS_PATH];

/// Public unless `api.metrics_require_token` is set.
pub const METRICS_PATH: &str = "/metrics";

/// A fresh token and the hash to store for it: `(token, sha256_hex(token))`.
pub fn new_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of a token, lowercase hex: what the store keeps and looks up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The authenticated caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: i64,
    pub name: String,
    pub scope: Scope,
}

/// The scope a request needs.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    let reading = method == Method::GET || method == Method::HEAD;
    let admin_only = ["/api/v1/tokens", "/api/v1/audit"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
    if admin_only || (!reading && is_archive_policy(path)) {
        Scope::Admin
    } else if method == Method::GET || method == Method::HEAD {
        Scope::Read
    } else {
        Scope::Write
    }
}

/// `/api/v1/archives/{name}/holds[/{id}]` and `/api/v1/archives/{name}/retention`.
fn is_archive_policy(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/archives/") else { return false };
    let mut parts = rest.split('/');
    let _name = parts.next();
    matches!(parts.next(), Some("holds" | "retention"))
}

/// The bearer token of a request, if it carries a well-formed `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Any valid token (every scope allows reading metrics), for listeners without the API's
/// middleware (a worker's `worker.metrics_listen`): `Ok` or the 401 to answer.
pub async fn check_any_token(store: &dyn mailferry_store::Store, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::Unauthorized("a bearer token is required (Authorization: Bearer <token>)"));
    };
    match store.token_by_hash(&hash_token(token)).await? {
        Some(record) => Ok(Principal { token_id: record.id, name: record.name, scope: record.scope }),
        None => {
            metrics::counter!("mailferry_http_auth_failures_total").increment(1);
            Err(ApiError::Unauthorized("the bearer token is not valid"))
        }
    }
}

/// Middleware: authenticate, check the scope, and attach the [`Principal`].
pub(crate) async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let page = matches!(*req.method(), Method::GET | Method::HEAD) && crate::web::is_public(req.uri().path());
    let path = req.uri().path();
    let public = PUBLIC_PATHS.contains(&path) && !(path == METRICS_PATH && state.config.metrics_require_token);
    if page || public {
        return next.run(req).await;
    }
    // Without connection info (an embedder serving the app without
    // `into_make_service_with_connect_info`) nobody can be told apart: no limit rather
    // than one bucket for everyone, which would let one client lock all others out.
    let client = crate::client::client_ip(req.extensions(), req.headers(), &state.trusted_proxies);
    if let Some(wait) = client.and_then(|c| state.auth_limiter.blocked(c, Instant::now())) {
        metrics::counter!("mailferry_http_auth_rate_limited_total").increment(1);
        // Whole seconds, rounded up: a client that waits this long is let in.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return ApiError::TooManyRequests(secs.max(1)).into_response();
    }
    let Some(token) = bearer(req.headers()) else {
        // Nothing was guessed: not counted as a failure.
        return ApiError::Unauthorized("a bearer token is required (Authorization: Bearer <token>)").into_response();
    };
    let record = match state.store.token_by_hash(&hash_token(token)).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            if let Some(c) = client {
                state.auth_limiter.failed(c, Instant::now());
            }
            metrics::counter!("mailferry_http_auth_failures_total").increment(1);
            tracing::warn!(client = %client.map_or_else(|| "unknown".to_owned(), |c| c.to_string()), "invalid bearer token");
            return ApiError::Unauthorized("the bearer token is not valid").into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let principal = Principal { token_id: record.id, name: record.name, scope: record.scope };
    let needed = required_scope(req.method(), req.uri().path());
    let mut response = if record.scope.allows(needed) {
        req.extensions_mut().insert(principal.clone());
        next.run(req).await
    } else {
        ApiError::forbidden(needed, record.scope).into_response()
    };
    // For the audit log, which sits outside this middleware.
    response.extensions_mut().insert(principal);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert!(a.starts_with("mf_"));
        assert_eq!(a.len(), 3 + 43);
        assert_ne!(a, b);
        assert_eq!(ha, hash_token(&a));
        assert_eq!(ha.len(), 64);
        assert!(!ha.contains(&a[3..]));
    }

    #[test]
    fn scopes_follow_routes() {
        assert_eq!(required_scope(&Method::GET, "/api/v1/jobs"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/api/v1/jobs"), Scope::Write);
        assert_eq!(required_scope(&Method::POST, "/api/v1/jobs/1/cancel"), Scope::Write);
        assert_eq!(required_scope(&Method::GET, "/api/v1/tokens"), Scope::Admin);
        assert_eq!(required_scope(&Method::DELETE, "/api/v1/tokens/3"), Scope::Admin);
        assert_eq!(required_scope(&Method::GET, "/api/v1/tokensx"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/api/v1/archives/legal/verify"), Scope::Write);
        assert_eq!(required_scope(&Method::POST, "/api/v1/archives/legal/holds"), Scope::Admin);
        assert_eq!(required_scope(&Method::DELETE, "/api/v1/archives/legal/holds/2"), Scope::Admin);
        assert_eq!(required_scope(&Method::PUT, "/api/v1/archives/legal/retention"), Scope::Admin);
        assert_eq!(required_scope(&Method::GET, "/api/v1/archives/holds/messages"), Scope::Read);
        assert_eq!(required_scope(&Method::POST, "/api/v1/archives/holds/export"), Scope::Write);
        assert_eq!(required_scope(&Method::GET, "/api/v1/audit"), Scope::Admin);
        assert_eq!(required_scope(&Method::GET, "/api/v1/auditx"), Scope::Read);
    }
}
