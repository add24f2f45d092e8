//! CSV batches (crates/mailferry-api/src/handlers/v1/batches/csv.rs `parse_csv`, then
//! spec.rs `validate` per row): the fuzz input is a `text/csv` body of `POST /batches`.
//! Never a panic; a header problem is a client error rendered as problem+json, every
//! invalid row says why, and no more rows are read than a batch may hold (plus one, to
//! know it is too many).
#![no_main]

use std::sync::OnceLock;

use axum::response::IntoResponse;
use libfuzzer_sys::fuzz_target;
use mailferry_api::{fuzzing, ApiConfig};
use mailferry_model::Sealer;

fn setup() -> &'static (ApiConfig, Sealer) {
    static S: OnceLock<(ApiConfig, Sealer)> = OnceLock::new();
    S.get_or_init(|| (ApiConfig::default(), Sealer::from_hex(&"2a".repeat(32)).expect("a 32-byte key")))
}

fuzz_target!(|data: &[u8]| {
    let (config, sealer) = setup();
    match fuzzing::csv_batch(data, config, sealer) {
        Ok(rows) => {
            assert!(rows.len() <= 10_001);
            for row in rows {
                if let Err(errors) = row {
                    assert!(!errors.is_empty(), "an invalid row says why");
                }
            }
        }
        Err(e) => {
            let status = e.status_code();
            assert!(status.is_client_error(), "a request body is never a server error: {status} {e}");
            let _ = e.into_response();
        }
    }
});
