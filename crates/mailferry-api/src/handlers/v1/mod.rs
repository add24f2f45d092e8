//! `/api/v1`: one module per resource, each exporting its `router()`.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub mod archives;
pub mod audit;
pub mod batches;
pub mod cutover;
pub mod jobs;
pub mod preflight;
pub mod receipts;
pub mod schedule;
pub mod tokens;

/// Every v1 resource, with paths relative to `/api/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(jobs::router())
        .merge(receipts::router())
        .merge(batches::router())
        .merge(cutover::router())
        .merge(schedule::router())
        .merge(archives::router())
        .merge(tokens::router())
        .merge(audit::router())
}
