//! Jobs as the service knows them: the stored spec (secrets sealed), states and counts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::endpoint::{ImapAuth, Pop3Auth, Security};
use crate::policy::DeletePolicy;
use crate::schedule::Schedule;
use crate::seal::Sealed;
use crate::tls::TlsPin;

/// `queued → running → succeeded | partial | failed | cancelled`, plus `paused`, and
/// `scheduled` between the passes of a job with a [`Schedule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "`queued → running → succeeded | partial | failed | cancelled`, plus `paused`, and `scheduled` between the delta passes of a job with a schedule (`next_run_at` says when the next starts)."))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Partial,
    Failed,
    Cancelled,
    Paused,
    /// Waiting for its next delta pass (a job with a schedule).
    Scheduled,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Partial,
        Self::Failed,
        Self::Cancelled,
        Self::Paused,
        Self::Scheduled,
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
            Self::Scheduled => "scheduled",
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
    /// Accept exactly the certificate (or key) with this SHA-256 (see [`TlsPin`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_pin: Option<TlsPin>,
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
        /// The password (or, with `auth: xoauth2`, a static access token); absent when
        /// `oauth2` holds the credential.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Sealed>,
        #[serde(default)]
        auth: ImapAuth,
        folder: String,
        #[serde(default)]
        flags: Vec<String>,
        /// OAuth2 instead of a password (AUTHENTICATE XOAUTH2).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        oauth2: Option<Box<OAuth2Spec>>,
        /// Accept exactly the certificate (or key) with this SHA-256 (see [`TlsPin`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls_pin: Option<TlsPin>,
    },
    Archive {
        archive: String,
    },
}

/// A stored OAuth2 credential; every secret part is sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum OAuth2Spec {
    /// A static access token.
    AccessToken { access_token: Sealed },
    /// The refresh-token grant (RFC 6749 §6).
    RefreshToken {
        token_url: String,
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<Sealed>,
        refresh_token: Sealed,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl OAuth2Spec {
    /// The token endpoint's host, when there is one (the worker checks its plaintext
    /// opt-in like a mail host's).
    pub fn token_host(&self) -> Option<String> {
        match self {
            Self::AccessToken { .. } => None,
            // WHATWG parsing, as reqwest does when it connects: the host checked here is
            // the host connected to, whatever userinfo or backslashes the URL holds.
            Self::RefreshToken { token_url, .. } => url::Url::parse(token_url)
                .ok()
                .and_then(|u| u.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOptions {
    #[serde(default)]
    pub delete: DeletePolicy,
    #[serde(default)]
    pub max_message_bytes: Option<u64>,
    #[serde(default)]
    pub dry_run: bool,
    /// How copies read back from the destination are compared (default `exact`).
    #[serde(default)]
    pub verify: crate::VerifyLevel,
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
    /// Delta passes at a cadence (issue 17); `None`: one pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "Token scopes; each includes the ones before it."))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_oauth2_specs_round_trip_and_old_specs_still_load() {
        let old = r#"{"protocol":"imap","host":"h","port":993,"security":"tls","username":"u","password":"v1:AAAA","folder":"INBOX"}"#;
        let t: TargetSpec = serde_json::from_str(old).unwrap();
        assert!(matches!(&t, TargetSpec::Imap { password: Some(_), oauth2: None, .. }));
        assert!(!serde_json::to_string(&t).unwrap().contains("oauth2"));

        let spec = OAuth2Spec::RefreshToken {
            token_url: "https://[2001:db8::1]:8443/oauth2/token".into(),
            client_id: "c".into(),
            client_secret: None,
            refresh_token: serde_json::from_str("\"v1:BBBB\"").unwrap(),
            scope: None,
        };
        assert_eq!(spec.token_host().as_deref(), Some("2001:db8::1"));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["grant"], "refresh_token");
        assert_eq!(serde_json::from_value::<OAuth2Spec>(json).unwrap(), spec);
        let url = |u: &str| OAuth2Spec::RefreshToken {
            token_url: u.into(),
            client_id: "c".into(),
            client_secret: None,
            refresh_token: serde_json::from_str("\"v1:BBBB\"").unwrap(),
            scope: None,
        };
        assert_eq!(url("https://login.example.com/t").token_host().as_deref(), Some("login.example.com"));
        assert_eq!(url("http://127.0.0.1:8080/token?x=1").token_host().as_deref(), Some("127.0.0.1"));
        assert_eq!(url("http://evil\\@allowed.example/t").token_host().as_deref(), Some("evil"));
    }
}
