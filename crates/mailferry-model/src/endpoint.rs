//! Where mail lives: a POP3 source or an IMAP destination, with credentials.
//!
//! Secrets are `SecretString`, whose `Debug` prints `[REDACTED]`, so an endpoint can be
//! logged with `?` without leaking the password.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::tls::TlsOptions;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// An IMAP folder to fill.
#[derive(Debug, Clone)]
pub struct ImapEndpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    pub secret: SecretString,
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
}

impl ImapEndpoint {
    pub fn display(&self) -> String {
        format!("imap {}@{}:{}/{}", self.username, self.host, self.port, self.folder)
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
    }
}
