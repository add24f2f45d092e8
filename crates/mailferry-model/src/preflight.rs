//! The preflight report (issue 17): what checking one mailbox before its migration found,
//! and the verdict. These are the API's and the CLI's response shapes (a contract for IT
//! automation); the checks and the verdict logic are the engine's (`engine::preflight`).

use serde::{Deserialize, Serialize};

/// Can this mailbox be migrated as it is?
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "`ready`: nothing found against it; `warning`: it can run, read the reasons; `blocked`: it would fail (or lose mail) as it is."))]
pub enum Verdict {
    Ready,
    Warning,
    Blocked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Warning => "warning",
            Self::Blocked => "blocked",
        }
    }
}

/// Why a mailbox is not simply ready. The codes are stable: scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "Stable reason codes of a preflight (docs/OPERATIONS.md, \"Preflight\", says what each means and what to do)."))]
pub enum ReasonCode {
    /// blocked: the row itself is invalid (batch preflight with `skip_invalid=true`).
    InvalidRow,
    /// blocked: the POP3 server could not be reached (DNS, TCP, refused address, timeout).
    SourceUnreachable,
    /// blocked: TLS with the POP3 server failed (certificate refused, STLS refused, …).
    SourceTlsFailed,
    /// blocked: the POP3 login was refused.
    SourceLoginFailed,
    /// blocked: the POP3 server has no UIDL: nothing could be tracked exactly once.
    SourceNoUidl,
    /// warning: unique-ids shared by several messages; those stay at the source.
    SourceDuplicateUidl,
    /// warning: invalid unique-ids; those messages stay at the source.
    SourceInvalidUidl,
    /// warning: the source enforces a LOGIN-DELAY: reruns must wait that long.
    SourceLoginDelay,
    /// warning: no PIPELINING: retrieval is one round trip per message.
    SourceNoPipelining,
    /// blocked: another POP3 failure (protocol error, refused STAT/LIST/UIDL).
    SourceError,
    /// blocked: the IMAP server could not be reached.
    TargetUnreachable,
    /// blocked: TLS with the IMAP server failed.
    TargetTlsFailed,
    /// blocked: the IMAP login (or the OAuth2 token) was refused.
    TargetLoginFailed,
    /// blocked: another IMAP failure.
    TargetError,
    /// warning: the target folder does not exist; the run will create it.
    TargetFolderMissing,
    /// blocked: the target folder is missing and cannot be created (`\Noinferiors` parent),
    /// or exists but cannot be selected (`\Noselect`).
    TargetFolderNotCreatable,
    /// blocked: the quota's headroom is smaller than the source's total.
    TargetQuotaInsufficient,
    /// warning: the quota leaves less than 10% of it free after the migration.
    TargetQuotaTight,
    /// warning: no UIDPLUS: copies are found again by Message-ID and size.
    TargetNoUidplus,
    /// warning: messages over the destination's APPENDLIMIT; they will be skipped.
    MessageOverAppendlimit,
    /// warning: messages over the job's `max_message_bytes`; they will be skipped.
    MessageOverMaxBytes,
    /// blocked: the archive is not configured on this server or cannot be opened.
    ArchiveUnavailable,
    /// blocked: the archive is opened read-only here.
    ArchiveReadOnly,
    /// warning: a server certificate expires within 14 days.
    TlsCertificateExpiresSoon,
    /// warning: a connection without TLS (allowed by configuration).
    TlsPlaintext,
    /// warning: TLS older than 1.2.
    TlsOldVersion,
}

impl ReasonCode {
    /// What the code does to the verdict.
    pub fn severity(self) -> Verdict {
        use ReasonCode::*;
        match self {
            InvalidRow | SourceUnreachable | SourceTlsFailed | SourceLoginFailed | SourceNoUidl | SourceError
            | TargetUnreachable | TargetTlsFailed | TargetLoginFailed | TargetError | TargetFolderNotCreatable
            | TargetQuotaInsufficient | ArchiveUnavailable | ArchiveReadOnly => Verdict::Blocked,
            SourceDuplicateUidl | SourceInvalidUidl | SourceLoginDelay | SourceNoPipelining | TargetFolderMissing
            | TargetQuotaTight | TargetNoUidplus | MessageOverAppendlimit | MessageOverMaxBytes
            | TlsCertificateExpiresSoon | TlsPlaintext | TlsOldVersion => Verdict::Warning,
        }
    }

    /// The code as it is serialized (`source-login-failed`).
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

/// One reason, with a sentence for the admin (server text clipped, never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

/// The TLS side of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TlsFacts {
    /// `TLSv1.3`, `TLSv1.2`, …
    pub version: String,
    pub subject: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS UTC`.
    pub not_after: Option<String>,
    /// `sha256:…` of the certificate (what a pin names).
    pub fingerprint: Option<String>,
}

/// What the POP3 source said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceFacts {
    /// `pop3 user@host:port`.
    pub endpoint: String,
    /// False when the login (or the connection) failed.
    pub logged_in: bool,
    /// The login mechanism used (`USER/PASS`, `APOP`, `SASL PLAIN`, `SASL XOAUTH2`).
    pub mechanism: Option<String>,
    pub tls: Option<TlsFacts>,
    pub uidl: bool,
    pub pipelining: bool,
    /// SASL mechanisms offered.
    pub sasl: Vec<String>,
    /// Seconds (CAPA LOGIN-DELAY), when given.
    pub login_delay: Option<u64>,
    /// STAT.
    pub messages: u64,
    pub bytes: u64,
    /// The largest messages (LIST), largest first, at most 5.
    pub largest: Vec<LargeMessage>,
    pub duplicate_uidls: u64,
    pub invalid_uidls: u64,
}

/// A message by its number in the POP3 session and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LargeMessage {
    pub number: u32,
    pub bytes: u64,
}

/// What the destination said.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetFacts {
    /// `imap user@host:port/folder` or `archive NAME`.
    pub endpoint: String,
    pub logged_in: bool,
    pub mechanism: Option<String>,
    pub tls: Option<TlsFacts>,
    /// CAPABILITY after login (IMAP).
    pub capabilities: Vec<String>,
    pub uidplus: bool,
    pub multiappend: bool,
    pub literal_plus: bool,
    pub binary: bool,
    pub append_limit: Option<u64>,
    /// `exists`, `will be created`, `cannot be created`, `not selectable`; `None` for an
    /// archive or when not reached.
    pub folder: Option<String>,
    /// GETQUOTAROOT's tightest STORAGE root, bytes.
    pub quota_used_bytes: Option<u64>,
    pub quota_limit_bytes: Option<u64>,
    /// Source messages over APPENDLIMIT / `max_message_bytes` (they would be skipped).
    pub over_append_limit: u64,
    pub over_max_message_bytes: u64,
}

/// One mailbox's preflight: the job preflight's response, and a batch preflight's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MailboxPreflight {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub source: SourceFacts,
    pub target: TargetFacts,
    /// Estimated seconds for the whole mailbox (see `GET /api/v1/jobs?preflight=true`'s
    /// description for how).
    pub estimate_secs: u64,
}

/// A batch preflight's row: its 1-based row number and the mailbox's preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreflightRow {
    pub row: usize,
    #[serde(flatten)]
    pub preflight: MailboxPreflight,
}

/// A batch preflight's sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreflightTotals {
    pub ready: u64,
    pub warning: u64,
    pub blocked: u64,
    /// Messages and bytes at the sources (STAT) of the mailboxes reached.
    pub messages: u64,
    pub bytes: u64,
    /// Estimated seconds for the batch, with mailboxes running side by side within the
    /// per-host caps.
    pub estimate_secs: u64,
}

/// A batch preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchPreflight {
    pub rows: Vec<PreflightRow>,
    pub totals: PreflightTotals,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_kebab_case_and_stable() {
        assert_eq!(ReasonCode::SourceLoginFailed.as_str(), "source-login-failed");
        assert_eq!(ReasonCode::TlsCertificateExpiresSoon.as_str(), "tls-certificate-expires-soon");
        assert_eq!(ReasonCode::MessageOverAppendlimit.as_str(), "message-over-appendlimit");
        assert_eq!(serde_json::to_string(&Verdict::Blocked).unwrap(), "\"blocked\"");
    }
}
