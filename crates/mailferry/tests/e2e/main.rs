//! mailferry's end-to-end tests, one test binary (`cargo test -p mailferry --test e2e`):
//! the real `mailferry` binary (`CARGO_BIN_EXE_mailferry`) against the lab Dovecot, real
//! PostgreSQL and moto's S3, one module per area. Each test binary links the whole stack,
//! so they share one rather than one per file (issue 15). Tests spawn `mailferry` as a
//! child process and keep their state (ports, temp dirs, databases) per test, so they can
//! share this process; none sets process-wide state such as environment variables.
//!
//! The dashboard's browser test is the other binary, `tests/browser/` (it needs Chromium
//! and Node.js), and uses the same helpers from `common/`.

mod common;

mod api_contract;
mod api_tls;
mod archive_api;
mod archive_beside_service;
mod archive_cli;
mod archive_runs;
mod archive_scaleout;
mod config_cli;
mod deploy_topology;
mod doctor;
mod exactly_once;
mod hostile_rss;
mod lanes;
mod metrics;
mod migrate_cli;
mod network_policy;
mod oauth2;
mod preflight;
mod receipt;
mod schedules;
mod service_api;
mod telemetry;
mod tls_pin;
mod worker_metrics;
