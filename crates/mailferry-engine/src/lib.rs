//! The drain pipeline: one POP3 mailbox into one IMAP folder, exactly once.
//!
//! Data path (DESIGN.md §4): connect source and sink → UIDL list → diff against the ledger
//! → resolve copies left in doubt by a crash (destination index) → RETR, pipelined, each
//! message streamed into memory or a spool file while it is digested and its line endings
//! normalised → bounded channel → batched APPEND → ledger `copied` → optional DELE → QUIT
//! (which commits the deletes) → ledger `source-deleted`.
#![forbid(unsafe_code)]

mod abort;
mod archive_task;
mod claim;
mod connect;
mod drain;
mod error;
mod job;
pub mod message;
mod metrics;
pub mod oauth;
pub mod preflight;
mod progress;
pub mod receipt;
mod retry;
mod schedule;
mod sink;
mod stored;
pub mod spool;
pub mod trace;
mod verify;
mod worker;

pub use claim::{this_process, ClaimConfig};
pub use drain::run_job;
pub use job::{DrainJob, EngineConfig};
pub use progress::{Outcome, Progress, RunReport};
/// Flags given for the destination must be IMAP atoms (RFC 3501 §9).
pub use mailferry_imap::wire::{flag_problem as imap_flag_problem, valid_flag as valid_imap_flag};
pub use error::{EngineError, Result};
pub use metrics::HostLabels;
pub use retry::RetryPolicy;
pub use mailferry_archive::{Archives, OpenLimits};
pub use sink::{ArchiveTarget, Target};
pub use spool::SpoolConfig;
pub use worker::{unique_worker_id, Worker, WorkerConfig};
