//! API job specs (crates/mailferry-api/src/{extract,spec}.rs and handlers/v1/batches/):
//! the fuzz input is a request body. It goes through what `POST /jobs` does with a JSON
//! body (parse into `JobBody`, unknown fields refused, then `validate`, which seals the
//! passwords) and what `POST /batches` does with a JSON batch; errors are rendered as the
//! problem+json the caller would get. The model's `JobSpec`, which the store keeps as
//! JSON, is read from the same bytes. Never a panic; a valid job names both hosts.
#![no_main]

use std::sync::OnceLock;

use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use mailferry_api::{fuzzing, ApiConfig, ApiError};
use mailferry_model::{JobSpec, Sealer};

fn setup() -> &'static (ApiConfig, Sealer) {
    static S: OnceLock<(ApiConfig, Sealer)> = OnceLock::new();
    S.get_or_init(|| (ApiConfig::default(), Sealer::from_hex(&"2a".repeat(32)).expect("a 32-byte key")))
}

/// An error as the caller sees it: status and problem+json body.
fn render(e: ApiError) {
    let status = e.status_code();
    assert!(status.is_client_error(), "a request body is never a server error: {status} {e}");
    let _ = e.into_response();
}

fuzz_target!(|data: &[u8]| {
    let (config, sealer) = setup();
    match fuzzing::job(data, config, sealer) {
        Ok(spec) => {
            let json = serde_json::to_vec(&spec).expect("a job spec serializes");
            let back: JobSpec = serde_json::from_slice(&json).expect("and reads back");
            assert_eq!(back, spec);
        }
        Err(e) => render(e),
    }
    match fuzzing::json_batch(data, config, sealer) {
        Ok(rows) => {
            for row in rows {
                if let Err(errors) = row {
                    assert!(!errors.is_empty(), "an invalid row says why");
                }
            }
        }
        Err(e) => render(e),
    }
    let _ = serde_json::from_slice::<JobSpec>(data);
});
