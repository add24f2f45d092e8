//! Domain types shared by every mailferry crate: endpoints, policies, ledger states,
//! error classes and TLS settings. Nothing here performs I/O; the protocol crates,
//! the store and the engine all speak in these terms.
#![forbid(unsafe_code)]

pub mod de;
pub mod endpoint;
pub mod error;
pub mod hostlabels;
pub mod hostlist;
pub mod job;
pub mod ledger;
pub mod netpolicy;
pub mod policy;
pub mod preflight;
pub mod redact;
pub mod schedule;
pub mod seal;
pub mod task;
pub mod tls;
pub mod trace;

pub use endpoint::{Credential, ImapAuth, ImapEndpoint, OAuth2Credential, OAuth2Refresh, Pop3Auth, Pop3Endpoint, Security};
pub use error::ErrorClass;
pub use hostlabels::HostLabels;
pub use hostlist::{HostList, HostListError};
pub use job::{JobCounts, JobOptions, JobSpec, JobState, OAuth2Spec, Scope, SourceSpec, TargetSpec};
pub use task::ArchiveTask;
pub use schedule::{Every, Schedule, ScheduleError, ScheduleText};
pub use seal::{SealError, Sealed, Sealer};
pub use netpolicy::NetworkPolicy;
pub use ledger::{LedgerState, MessageFailure, RunSummary, VerifyLevel};
pub use policy::{DeletePolicy, PolicyError};
pub use redact::{redact_url, DatabaseUrl};
pub use tls::{PinError, TlsError, TlsOptions, TlsPin};
