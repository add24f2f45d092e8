//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs; not a stable API).
//!
//! The request bodies a caller controls, taken as far as they go without a store or the
//! network: a job body (`POST /jobs`) and a batch as CSV or JSON (`POST /batches`), each
//! parsed and validated (passwords sealed) as the handlers do. The network policy, which
//! resolves host names, is left out.

use mailferry_model::{JobSpec, Sealer};

use crate::error::{ApiError, FieldError};
use crate::extract::parse_json;
use crate::handlers::v1::batches::{json_err_field, parse_csv, BatchBody};
use crate::spec::{validate, JobBody};
use crate::state::ApiConfig;

/// One row of a batch: a job spec, or what is wrong with the row.
pub type Row = Result<JobSpec, Vec<FieldError>>;

/// `POST /jobs` with a JSON body.
pub fn job(bytes: &[u8], config: &ApiConfig, sealer: &Sealer) -> Result<JobSpec, ApiError> {
    let body: JobBody = parse_json(bytes)?;
    validate(body, config, sealer)
        .map_err(|errors| ApiError::Validation { detail: "the job is invalid".into(), errors })
}

/// `POST /batches` with `text/csv`.
pub fn csv_batch(bytes: &[u8], config: &ApiConfig, sealer: &Sealer) -> Result<Vec<Row>, ApiError> {
    Ok(parse_csv(bytes)?.into_iter().map(|row| row.and_then(|b| validate(b, config, sealer))).collect())
}

/// `POST /batches` with `application/json`.
pub fn json_batch(bytes: &[u8], config: &ApiConfig, sealer: &Sealer) -> Result<Vec<Row>, ApiError> {
    let body: BatchBody = parse_json(bytes)?;
    Ok(body
        .jobs
        .into_iter()
        .map(|v| serde_path_to_error::deserialize(v).map_err(|e| vec![json_err_field(e)]))
        .map(|row: Result<JobBody, _>| row.and_then(|b| validate(b, config, sealer)))
        .collect())
}
