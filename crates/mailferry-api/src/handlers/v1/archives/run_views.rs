//! The request and response types of verify and export runs.

use chrono::{DateTime, Utc};
use mailferry_archive::{ExportFormat, ExportReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::archive_views::{timestamp, ArchiveQuery};

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunProgress {
    pub done: u64,
    pub total: u64,
}

/// What verify found. `ok` is true when there are no discrepancies.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReportView {
    pub ok: bool,
    pub started_at: String,
    pub finished_at: String,
    pub blobs_checked: u64,
    pub bytes_checked: u64,
    pub occurrences_checked: u64,
    pub events_checked: u64,
    /// Hash of the last event-log record (publish it to make history rewrites detectable).
    pub chain_head: Option<String>,
    /// Every problem, e.g. `{"problem": "blob", "digest": "…", "kind": {"kind": "digest-mismatch", …}}`.
    #[schema(value_type = Vec<Object>)]
    pub discrepancies: Vec<serde_json::Value>,
}

/// A verify report as the worker recorded it (`mailferry_archive::VerifyReport` as JSON).
#[derive(Debug, Deserialize)]
struct StoredVerify {
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    blobs_checked: u64,
    bytes_checked: u64,
    occurrences_checked: u64,
    events_checked: u64,
    chain_head: Option<String>,
    discrepancies: Vec<serde_json::Value>,
}

impl From<StoredVerify> for VerifyReportView {
    fn from(r: StoredVerify) -> Self {
        Self {
            ok: r.discrepancies.is_empty(),
            started_at: timestamp(r.started_at),
            finished_at: timestamp(r.finished_at),
            blobs_checked: r.blobs_checked,
            bytes_checked: r.bytes_checked,
            occurrences_checked: r.occurrences_checked,
            events_checked: r.events_checked,
            chain_head: r.chain_head,
            discrepancies: r.discrepancies,
        }
    }
}

/// A finished run's outcome as the worker recorded it with the archive
/// (`mailferry_engine`'s `archive_task`): `{"verify": …}`, `{"export": …}` or `{"error": …}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StoredOutcome {
    Verify(Box<StoredVerify>),
    Export(Box<ExportReport>),
    Error(String),
}

/// A verify run (see `POST /archives/{name}/verify`).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyRun {
    pub id: u64,
    pub archive: String,
    /// The queued job running it: `GET`/`POST …/jobs/{job_id}/cancel`, and its state
    /// changes at `…/jobs/{job_id}/events`.
    pub job_id: Option<i64>,
    pub state: RunState,
    /// Blobs re-hashed so far, of all stored blobs.
    pub progress: RunProgress,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why the run could not complete (`failed`); discrepancies are in `report`, not here.
    pub error: Option<String>,
    pub report: Option<VerifyReportView>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormatBody {
    /// mboxrd (`From ` lines quoted so they round-trip).
    Mbox,
    /// A zip of `messages/<sha256>.eml` with `manifest.sha256` inside.
    EmlZip,
}

impl ExportFormatBody {
    pub fn library(self) -> ExportFormat {
        match self {
            Self::Mbox => ExportFormat::Mbox,
            Self::EmlZip => ExportFormat::EmlZip,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Mbox => "mbox",
            Self::EmlZip => "zip",
        }
    }

    /// The format's name in requests (and in the queued task).
    pub fn extension_name(self) -> &'static str {
        match self {
            Self::Mbox => "mbox",
            Self::EmlZip => "eml-zip",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Mbox => "application/mbox",
            Self::EmlZip => "application/zip",
        }
    }

    pub fn of(f: ExportFormat) -> Self {
        match f {
            ExportFormat::Mbox => Self::Mbox,
            ExportFormat::EmlZip => Self::EmlZip,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// Which messages (each distinct message once); default: the whole archive.
    #[serde(default)]
    pub query: ArchiveQuery,
    pub format: ExportFormatBody,
}

/// The finished export.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportResult {
    pub messages: u64,
    pub bytes: u64,
    /// SHA-256 of the export file itself.
    pub file_sha256: String,
    /// Where to download it (same token).
    pub download: String,
    /// The SHA-256 manifest (`sha256sum -c` format: digest, two spaces, name).
    pub manifest: String,
    /// When the file is deleted (`[archive] export_ttl_secs` after it was written, as
    /// configured then); its download answers 410 from then on.
    pub expires_at: Option<String>,
}

/// An export run (see `POST /archives/{name}/exports`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportRun {
    pub id: u64,
    pub archive: String,
    /// The queued job running it (see [`VerifyRun::job_id`]).
    pub job_id: Option<i64>,
    pub format: ExportFormatBody,
    pub state: RunState,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub result: Option<ExportResult>,
}



/// Where a run is, as its record and its job say.
pub(super) enum Shown {
    Running,
    Verified(Box<VerifyReportView>),
    Exported(Box<ExportReport>),
    Failed(String),
    /// A finished view recorded by an older version, served as stored.
    Legacy(String),
}

impl Shown {
    /// A finished run's recorded outcome; a record an older version wrote (the finished
    /// view itself) is served as stored.
    pub(super) fn recorded(view: &str) -> Self {
        let Ok(outcome) = serde_json::from_str::<StoredOutcome>(view) else {
            return Self::Legacy(view.to_owned());
        };
        match outcome {
            StoredOutcome::Verify(r) => Self::Verified(Box::new(VerifyReportView::from(*r))),
            StoredOutcome::Export(r) => Self::Exported(r),
            StoredOutcome::Error(e) => Self::Failed(e),
        }
    }
}
