//! Jobs as the service knows them: the stored spec (secrets sealed), states and counts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::endpoint::{ImapAuth, Pop3Auth, Security};
use crate::policy::DeletePolicy;
use crate::seal::Sealed;

/// `queued → running → succeeded | partial | failed | cancelled`, plus `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Partial,
    Failed,
    Cancelled,
    Paused,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Partial,
        Self::Failed,
        Self::Cancelled,
        Self::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Finished: a rerun may start a new pass.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Partial | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The POP3 source of a stored job; the password is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub password: Sealed,
    #[serde(default)]
    pub auth: Pop3Auth,
}

/// Where a stored job copies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum TargetSpec {
    Imap {
        host: String,
        port: u16,
        security: Security,
        username: String,
        password: Sealed,
        #[serde(default)]
        auth: ImapAuth,
        folder: String,
        #[serde(default)]
        flags: Vec<String>,
    },
    Archive {
        archive: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    #[serde(default)]
    pub delete: DeletePolicy,
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    #[serde(default)]
    pub dry_run: bool,
}

/// Everything needed to run a job, as stored (secrets sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub source: SourceSpec,
    pub target: TargetSpec,
    #[serde(default)]
    pub options: JobOptions,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl JobSpec {
    /// `user@host:port` of the source, never a secret.
    pub fn source_display(&self) -> String {
        format!("pop3 {}@{}:{}", self.source.username, self.source.host, self.source.port)
    }

    pub fn target_display(&self) -> String {
        match &self.target {
            TargetSpec::Imap { host, port, username, folder, .. } => format!("imap {username}@{host}:{port}/{folder}"),
            TargetSpec::Archive { archive } => format!("archive {archive}"),
        }
    }

    pub fn target_host(&self) -> &str {
        match &self.target {
            TargetSpec::Imap { host, .. } => host,
            TargetSpec::Archive { .. } => "",
        }
    }

    /// The source mailbox: POP3 locks a maildrop, so two sessions on it never run at once.
    pub fn source_key(&self) -> String {
        format!("{}@{}:{}", self.source.username, self.source.host.to_ascii_lowercase(), self.source.port)
    }

    /// Source mailbox + target folder: the ledger identity (same as the CLI's).
    pub fn mailbox_key(&self) -> String {
        match &self.target {
            TargetSpec::Imap { host, port, username, folder, .. } => format!(
                "pop3://{}@{}:{} -> imap://{username}@{host}:{port}/{folder}",
                self.source.username, self.source.host, self.source.port
            ),
            TargetSpec::Archive { archive } => format!(
                "pop3://{}@{}:{} -> archive:{archive}",
                self.source.username, self.source.host, self.source.port
            ),
        }
    }
}

/// Per-job numbers, all from the ledger (DESIGN.md §2.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub listed: u64,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub deleted: u64,
    pub bytes: u64,
}

/// API token scopes, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}
