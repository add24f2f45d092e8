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

/// Issue 13, "Prove it": in the normal test suite, arbitrary request bodies through the
/// same entry points the fuzz targets use. Never a panic; a valid job round-trips through
/// JSON; every refusal is a 4xx problem.
#[cfg(test)]
mod props {
    use axum::response::IntoResponse;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    fn setup() -> (ApiConfig, Sealer) {
        (ApiConfig::default(), Sealer::from_hex(&"2a".repeat(32)).expect("a 32-byte key"))
    }

    fn refused(e: ApiError) -> Result<(), TestCaseError> {
        let status = e.status_code();
        prop_assert!(status.is_client_error(), "a request body is never a server error: {} {}", status, e);
        let _ = e.into_response();
        Ok(())
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        let (config, sealer) = setup();
        match job(bytes, &config, &sealer) {
            Ok(spec) => {
                let text = serde_json::to_vec(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: JobSpec = serde_json::from_slice(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(back, spec);
            }
            Err(e) => refused(e)?,
        }
        match json_batch(bytes, &config, &sealer) {
            Ok(rows) => {
                for row in rows {
                    if let Err(errors) = row {
                        prop_assert!(!errors.is_empty(), "an invalid row says why");
                    }
                }
            }
            Err(e) => refused(e)?,
        }
        match csv_batch(bytes, &config, &sealer) {
            Ok(_) => {}
            Err(e) => refused(e)?,
        }
        Ok(())
    }

    /// Any JSON value a field could hold, shallow.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::from),
            "[a-z0-9.:\\[\\]%@/-]{0,40}".prop_map(Value::from),
            prop::collection::vec(any::<String>(), 0..3).prop_map(|v| json!(v)),
        ]
    }

    /// A job body whose fields hold arbitrary values (some valid, most not).
    fn job_body() -> impl Strategy<Value = Vec<u8>> {
        let protocol = prop_oneof![Just(json!("imap")), Just(json!("archive")), value()];
        (
            (value(), value(), value(), value(), value(), value()),
            (protocol, value(), value(), value(), value()),
            (value(), value(), value(), value(), value()),
        )
            .prop_map(|((host, port, security, user, auth, pin), (protocol, thost, folder, flags, archive), (delete, max, dry, verify, labels))| {
                let body = json!({
                    "source": {"host": host, "port": port, "security": security, "username": user, "password": "p", "auth": auth, "tls_pin": pin},
                    "target": {"protocol": protocol, "host": thost, "username": "u", "password": "p", "folder": folder, "flags": flags, "archive": archive},
                    "options": {"delete": delete, "max_message_bytes": max, "dry_run": dry, "verify": verify},
                    "labels": labels,
                });
                serde_json::to_vec(&body).unwrap_or_default()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_are_a_job_or_a_client_error(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            check(&bytes)?;
        }

        #[test]
        fn arbitrary_text_is_a_job_or_a_client_error(text in any::<String>()) {
            check(text.as_bytes())?;
        }

        #[test]
        fn job_bodies_with_arbitrary_field_values_never_panic(body in job_body()) {
            check(&body)?;
            let batch = format!("{{\"jobs\": [{}]}}", String::from_utf8_lossy(&body));
            check(batch.as_bytes())?;
        }
    }
}
