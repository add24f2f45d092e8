//! Where mail lives: a POP3 source or an IMAP destination, with credentials.
//!
//! Secrets are `SecretString`, whose `Debug` prints `[REDACTED]`, so an endpoint can be
//! logged with `?` without leaking the password.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::tls::TlsOptions;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "How a connection is protected. `none` needs the host on the server's plaintext allow-list."))]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (pop3s 995, imaps 993).
    Tls,
    /// Plain connect, then STLS (POP3, RFC 2595) or STARTTLS (IMAP, RFC 3501 §6.2.1).
    /// Failing to upgrade is an error, never a silent fallback to plaintext.
    Starttls,
    /// No TLS at all; only allowed when plaintext was explicitly permitted.
    None,
}

/// POP3 authentication mechanism. `Auto` picks from CAPA (RFC 2449).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "POP3 authentication; `auto` (default) picks from CAPA."))]
#[serde(rename_all = "lowercase")]
pub enum Pop3Auth {
    #[default]
    Auto,
    /// USER/PASS (RFC 1939 §7).
    User,
    /// APOP (RFC 1939 §7), needs a timestamp in the greeting.
    Apop,
    /// AUTH PLAIN (RFC 5034 + RFC 4616).
    Plain,
    /// AUTH XOAUTH2 with an OAuth2 access token as the secret.
    Xoauth2,
}

/// IMAP authentication mechanism. `Auto` prefers AUTHENTICATE PLAIN, then LOGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "IMAP authentication; `auto` (default) prefers AUTHENTICATE PLAIN, then LOGIN."))]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    #[default]
    Auto,
    Login,
    Plain,
    Xoauth2,
}

/// A POP3 mailbox to drain.
#[derive(Debug, Clone)]
pub struct Pop3Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub secret: SecretString,
    pub auth: Pop3Auth,
    pub tls: TlsOptions,
}

/// What an IMAP destination logs in with.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A password for LOGIN or AUTHENTICATE PLAIN; with [`ImapAuth::Xoauth2`], an OAuth2
    /// access token (how static tokens were always given).
    Password(SecretString),
    /// OAuth2 (AUTHENTICATE XOAUTH2), for Gmail and Microsoft 365, which no longer take
    /// passwords over IMAP.
    OAuth2(OAuth2Credential),
}

/// An OAuth2 bearer credential.
#[derive(Debug, Clone)]
pub enum OAuth2Credential {
    /// A ready access token, used as it is until the server refuses it.
    AccessToken(SecretString),
    /// A refresh-token grant: the job mints its own access tokens as they expire.
    Refresh(Box<OAuth2Refresh>),
}

/// The refresh-token grant (RFC 6749 §6): enough for a job that runs for hours to obtain a
/// fresh access token from the authorization server whenever the last one expires.
#[derive(Clone)]
pub struct OAuth2Refresh {
    /// The authorization server's token endpoint (`https://…`).
    pub token_url: String,
    pub client_id: String,
    /// Absent for public clients.
    pub client_secret: Option<SecretString>,
    pub refresh_token: SecretString,
    /// Space-separated scopes to ask for (e.g. `https://mail.google.com/`); absent: the
    /// scopes originally granted.
    pub scope: Option<String>,
    /// TLS trust, the plaintext opt-in and the network policy for the token endpoint.
    pub tls: TlsOptions,
}

impl std::fmt::Debug for OAuth2Refresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Refresh")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[REDACTED]"))
            .field("refresh_token", &"[REDACTED]")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An IMAP folder to fill.
#[derive(Debug, Clone)]
pub struct ImapEndpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub credential: Credential,
    pub auth: ImapAuth,
    pub tls: TlsOptions,
    /// Folder name in UTF-8; encoded to modified UTF-7 on the wire.
    pub folder: String,
    /// Flags set on every appended message (default: none).
    pub flags: Vec<String>,
}

impl Pop3Endpoint {
    /// `user@host:port`, the form every error message and log line uses. Never the secret.
    pub fn display(&self) -> String {
        format!("pop3 {}@{}:{}", self.username, self.host, self.port)
    }

    /// The maildrop, `user@host:port` (host lower-cased): what one run at a time may hold
    /// (the same key as [`crate::JobSpec::source_key`]).
    pub fn source_key(&self) -> String {
        format!("{}@{}:{}", self.username, self.host.to_ascii_lowercase(), self.port)
    }
}

impl ImapEndpoint {
    pub fn display(&self) -> String {
        format!("imap {}@{}:{}/{}", self.username, self.host, self.port, self.folder)
    }

    /// The same endpoint logging in with this access token (XOAUTH2).
    pub fn with_access_token(&self, token: SecretString) -> Self {
        Self { credential: Credential::OAuth2(OAuth2Credential::AccessToken(token)), ..self.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let ep = Pop3Endpoint {
            host: "h".into(),
            port: 995,
            security: Security::Tls,
            username: "u".into(),
            secret: SecretString::from("hunter2-secret"),
            auth: Pop3Auth::Auto,
            tls: TlsOptions::default(),
        };
        let dbg = format!("{ep:?}");
        assert!(!dbg.contains("hunter2-secret"), "{dbg}");
        assert!(!ep.display().contains("hunter2-secret"));

        let grant = OAuth2Refresh {
            token_url: "https://login.example.com/token".into(),
            client_id: "client-1".into(),
            client_secret: Some(SecretString::from("client-secret-xyz")),
            refresh_token: SecretString::from("refresh-token-xyz"),
            scope: Some("mail".into()),
            tls: TlsOptions::default(),
        };
        let imap = ImapEndpoint {
            host: "h".into(),
            port: 993,
            security: Security::Tls,
            username: "u".into(),
            credential: Credential::OAuth2(OAuth2Credential::Refresh(Box::new(grant))),
            auth: ImapAuth::Xoauth2,
            tls: TlsOptions::default(),
            folder: "INBOX".into(),
            flags: vec![],
        };
        let dbg = format!("{imap:?}");
        assert!(dbg.contains("client-1") && dbg.contains("login.example.com"), "{dbg}");
        assert!(!dbg.contains("client-secret-xyz") && !dbg.contains("refresh-token-xyz"), "{dbg}");
        let with = imap.with_access_token(SecretString::from("access-token-xyz"));
        assert!(!format!("{with:?}").contains("access-token-xyz"));
    }
}
