//! Probes for orchestrators: `/healthz` (the process answers) and `/readyz` (the database
//! is reachable and migrated). Neither needs a token.

use axum::extract::State;

use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

/// Liveness: the process is up.
#[utoipa::path(get, operation_id = "healthz", path = "/healthz", tag = "health", security(()),
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain", example = "ok")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the store answers and its migrations are applied.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain", example = "ready"),
        (status = 503, description = "The database is not reachable", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    match state.store.ping().await {
        Ok(()) => Ok("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable("the database is not reachable or not migrated".into()))
        }
    }
}
