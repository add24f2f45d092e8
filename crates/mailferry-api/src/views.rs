//! What the API returns. Built from store records, and by construction free of secrets:
//! no view type has a password or token field (DESIGN.md §2.5).

use std::collections::BTreeMap;

use mailferry_model::{ImapAuth, JobCounts, JobSpec, JobState, LedgerState, OAuth2Spec, Pop3Auth, Security, TargetSpec};
use mailferry_store::{BatchSummary, JobRecord, LedgerRow};
use serde::Serialize;
use utoipa::ToSchema;


/// Numbers from the job's ledger (DESIGN.md §2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Counts {
    /// Messages seen on the source (ledger rows).
    pub listed: u64,
    /// Messages at the destination (copied, or copied and then deleted at the source).
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Messages deleted from the source after their copy was confirmed.
    pub deleted: u64,
    /// Bytes of the copied messages.
    pub bytes: u64,
}

impl From<JobCounts> for Counts {
    fn from(c: JobCounts) -> Self {
        Self { listed: c.listed, copied: c.copied, skipped: c.skipped, failed: c.failed, deleted: c.deleted, bytes: c.bytes }
    }
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.listed += o.listed;
        self.copied += o.copied;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.deleted += o.deleted;
        self.bytes += o.bytes;
    }
}

/// The POP3 source of a job (no password).
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    #[schema(value_type = String, example = "pop3")]
    pub protocol: &'static str,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub auth: Pop3Auth,
    /// The pinned certificate fingerprint, when the endpoint has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "sha256:3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc")]
    pub tls_pin: Option<mailferry_model::TlsPin>,
}

/// The target of a job (no password).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum TargetView {
    Imap {
        host: String,
        port: u16,
        security: Security,
        username: String,
        auth: ImapAuth,
        folder: String,
        flags: Vec<String>,
        /// The OAuth2 credential's public parts, when the target uses OAuth2.
        #[serde(skip_serializing_if = "Option::is_none")]
        oauth2: Option<OAuth2View>,
        /// The pinned certificate fingerprint, when the endpoint has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(example = "sha256:3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc")]
        tls_pin: Option<String>,
    },
    Archive {
        archive: String,
    },
}

/// An OAuth2 credential without its secrets (access token, refresh token, client secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuth2View {
    /// `access_token` (a static token) or `refresh_token` (tokens minted as needed).
    #[schema(value_type = String, example = "refresh_token")]
    pub grant: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Whether a client secret is stored (it is never returned).
    pub has_client_secret: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OptionsView {
    /// `keep`, `after-verified` or `after-days:N`.
    pub delete: String,
    pub max_message_bytes: Option<u64>,
    pub dry_run: bool,
    /// How copies are read back and compared: exact, body, size or none.
    #[schema(example = "exact")]
    pub verify: String,
}

/// A job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub state: JobState,
    /// Absent for jobs made by the one-shot CLI (`mailferry migrate`).
    pub source: Option<SourceView>,
    pub target: Option<TargetView>,
    pub options: Option<OptionsView>,
    pub labels: BTreeMap<String, String>,
    pub batch_id: Option<i64>,
    /// `pop3 user@host:port`, for display.
    pub source_display: String,
    /// `imap user@host:port/folder`, for display.
    pub target_display: String,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub last_error: Option<String>,
    /// Passes started (the first run and each rerun).
    pub runs: i64,
    /// A cancel was asked for and the worker has not stopped yet.
    pub cancel_requested: bool,
    /// A pause was asked for and the worker has not stopped yet.
    pub pause_requested: bool,
    /// Delta passes at a cadence, as given when the job was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<mailferry_model::ScheduleText>,
    /// When the job starts next: a `scheduled` job's next delta pass, or a queued job's
    /// retry after a backoff.
    pub next_run_at: Option<String>,
    /// The final pass a cutover asked for (`POST /jobs/{id}/cutover`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverView>,
    // Last, as before schedules existed: a report's head repeats the counts right after it.
    /// Ledger counts over the job's whole ledger.
    pub counts: Counts,
}

/// A cutover: one final pass with its own delete policy, after which the schedule ends.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CutoverView {
    /// The final pass's delete policy: `keep`, `after-verified` or `after-days:N`.
    #[schema(example = "after-verified")]
    pub delete: String,
    /// When the final pass started; absent while it is still to come.
    pub started_at: Option<String>,
}

impl JobView {
    pub fn new(job: JobRecord, counts: JobCounts) -> Self {
        let schedule = job.spec.as_ref().and_then(|s| s.schedule).map(Into::into);
        let cutover = job.cutover.map(|c| CutoverView { delete: c.delete.to_string(), started_at: c.started_at });
        let (source, target, options) = match job.spec {
            Some(spec) => {
                let (s, t, o) = spec_views(spec);
                (Some(s), Some(t), Some(o))
            }
            None => (None, None, None),
        };
        Self {
            id: job.id,
            state: job.state,
            source,
            target,
            options,
            labels: job.labels,
            batch_id: job.batch_id,
            source_display: job.source,
            target_display: job.target,
            created_at: job.created_at,
            updated_at: job.updated_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            last_error: job.last_error,
            runs: job.runs,
            cancel_requested: job.cancel_requested,
            pause_requested: job.pause_requested,
            counts: counts.into(),
            schedule,
            next_run_at: job.next_run_at,
            cutover,
        }
    }
}

/// The spec without its sealed secrets: the passwords are dropped here, field by field.
fn spec_views(spec: JobSpec) -> (SourceView, TargetView, OptionsView) {
    let s = spec.source;
    let source = SourceView {
        protocol: "pop3",
        host: s.host,
        port: s.port,
        security: s.security,
        username: s.username,
        auth: s.auth,
        tls_pin: s.tls_pin,
    };
    let target = match spec.target {
        TargetSpec::Imap { host, port, security, username, password: _, auth, folder, flags, oauth2, tls_pin } => {
            let oauth2 = oauth2.map(|o| match *o {
                OAuth2Spec::AccessToken { access_token: _ } => OAuth2View {
                    grant: "access_token",
                    token_url: None,
                    client_id: None,
                    scope: None,
                    has_client_secret: false,
                },
                OAuth2Spec::RefreshToken { token_url, client_id, client_secret, refresh_token: _, scope } => OAuth2View {
                    grant: "refresh_token",
                    token_url: Some(token_url),
                    client_id: Some(client_id),
                    scope,
                    has_client_secret: client_secret.is_some(),
                },
            });
            TargetView::Imap { host, port, security, username, auth, folder, flags, oauth2, tls_pin: tls_pin.map(|p| p.to_string()) }
        }
        TargetSpec::Archive { archive } => TargetView::Archive { archive },
    };
    let o = spec.options;
    let options = OptionsView {
        delete: o.delete.to_string(),
        max_message_bytes: o.max_message_bytes,
        dry_run: o.dry_run,
        verify: o.verify.as_str().to_string(),
    };
    (source, target, options)
}

/// One page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One ledger row: what happened to one source message (never its content).
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    pub uidl: String,
    pub size: u64,
    pub state: LedgerState,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// SHA-256 of the message bytes.
    pub digest: Option<String>,
    /// UID at the destination (UIDPLUS).
    pub dest_uid: Option<u32>,
    pub internal_date: Option<String>,
    /// Where `internal_date` came from: `received`, `date` or `now`.
    pub internal_date_source: Option<String>,
    pub first_seen_at: String,
    pub copied_at: Option<String>,
    pub deleted_at: Option<String>,
}

impl From<LedgerRow> for MessageView {
    fn from(r: LedgerRow) -> Self {
        Self {
            uidl: r.uidl,
            size: r.size,
            state: r.state,
            reason: r.reason,
            digest: r.digest,
            dest_uid: r.dest_uid,
            internal_date: r.internal_date,
            internal_date_source: r.internal_date_source,
            first_seen_at: r.first_seen_at,
            copied_at: r.copied_at,
            deleted_at: r.deleted_at,
        }
    }
}

/// One page of a job's ledger, ordered by UIDL.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageView>,
    pub next_cursor: Option<String>,
}

/// A job's full report: the job, its counts and every ledger row.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobReport {
    pub job: JobView,
    pub counts: Counts,
    pub messages: Vec<MessageView>,
}

/// A batch with the aggregate state of its jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchView {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    /// Number of jobs.
    pub jobs: u64,
    /// Jobs per state (states with no job are omitted).
    pub states: BTreeMap<String, u64>,
    /// Sum of the jobs' counts.
    pub counts: Counts,
}

impl From<BatchSummary> for BatchView {
    fn from(b: BatchSummary) -> Self {
        Self {
            id: b.batch.id,
            name: b.batch.name,
            created_at: b.batch.created_at,
            jobs: b.jobs,
            states: b.states.into_iter().filter(|(_, n)| *n > 0).map(|(s, n)| (s.as_str().to_owned(), n)).collect(),
            counts: b.counts.into(),
        }
    }
}
