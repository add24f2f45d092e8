//! Everything that can go wrong talking POP3, and whether retrying can help.
//!
//! No variant ever holds a command argument: errors name the verb only (`PASS`, never
//! `PASS hunter2`), so an error can be logged, stored in the ledger and shown in a report.

use mailferry_model::ErrorClass;

use crate::wire::RespCode;

#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error("network error talking to the POP3 server: {0}")]
    Io(#[from] std::io::Error),

    #[error("timed out {what}")]
    Timeout { what: &'static str },

    /// `certificate` is true when the server's certificate was rejected (or the TLS
    /// settings are unusable), which retrying cannot fix.
    #[error("TLS failed: {reason}")]
    Tls { reason: String, certificate: bool },

    #[error("the POP3 server closed the connection while {during}")]
    Closed { during: &'static str },

    #[error("the POP3 server sent a line longer than {limit} bytes")]
    LineTooLong { limit: usize },

    #[error("the message is larger than the limit of {limit} bytes")]
    MessageTooLarge { limit: u64 },

    /// A multi-line reply longer than the command could need (CAPA is a short list; a
    /// UIDL or LIST listing has one line per message STAT counted): an endless or lying
    /// server. Reading stopped at the limit, so the session is unusable.
    #[error("the POP3 server's {command} reply is longer than {limit}; {sent}")]
    ReplyTooLong { command: &'static str, limit: String, sent: String },

    /// The server answered something that is not POP3.
    #[error("the POP3 server sent an unexpected reply: {0}")]
    Protocol(String),

    /// A `-ERR` to `command` (the verb only).
    #[error("the POP3 server refused {command}: {}{text}", fmt_code(code))]
    Server { command: &'static str, code: Option<RespCode>, text: String },

    #[error("POP3 login with {mechanism} was rejected: {}{text}", fmt_code(code))]
    AuthFailed { mechanism: &'static str, code: Option<RespCode>, text: String },

    #[error("the POP3 server refused STLS, and falling back to plaintext is not allowed: {text}")]
    StlsUnavailable { text: String },

    #[error("the endpoint has no TLS and plaintext was not explicitly allowed")]
    PlaintextRefused,

    #[error("the POP3 server's address is refused: {0}")]
    Denied(String),

    #[error("the POP3 server offers no usable login mechanism ({mechanism})")]
    MechanismUnavailable { mechanism: &'static str },

    #[error("an argument to {command} contains a line break or NUL")]
    InvalidArgument { command: &'static str },

    /// The caller used the session out of order (a bug in the caller).
    #[error("POP3 session misuse: {0}")]
    Misuse(&'static str),

    /// An earlier I/O, protocol or size error left the stream in an unknown place.
    #[error("the POP3 session is unusable after an earlier error; reconnect")]
    Unusable,
}

fn fmt_code(code: &Option<RespCode>) -> String {
    code.as_ref().map(|c| format!("[{c}] ")).unwrap_or_default()
}

impl Pop3Error {
    /// Retry with backoff, or give up.
    ///
    /// * Network trouble, timeouts, a close mid-reply, `[IN-USE]`, `[LOGIN-DELAY]` and
    ///   `[SYS/TEMP]` are retryable, on any command including the login.
    /// * `[AUTH]`, `[SYS/PERM]`, a rejected login without a code, certificate failures,
    ///   refused STLS/plaintext and missing mechanisms are fatal: retrying a bad password
    ///   only risks locking the account.
    /// * Garbage from the server (`Protocol`) is retryable: it is most often a truncated
    ///   or confused connection, and the engine's retry budget bounds a persistent case.
    ///   So is a listing longer than STAT's count (`ReplyTooLong`): a server that does not
    ///   lock the maildrop (RFC 1939 §8 says it must) may have taken in mail meanwhile,
    ///   and a new session counts it.
    /// * Over-long lines and messages are fatal: the same server sends the same bytes.
    /// * A plain `-ERR` without a code is fatal, except to the greeting ("too many
    ///   connections") and to QUIT (the update failed, RFC 1939 §6), which are retryable.
    pub fn class(&self) -> ErrorClass {
        use ErrorClass::{Fatal, Retryable};
        match self {
            Self::Io(_) | Self::Timeout { .. } | Self::Closed { .. } | Self::Unusable => Retryable,
            Self::Protocol(_) | Self::ReplyTooLong { .. } => Retryable,
            Self::Tls { certificate, .. } => if *certificate { Fatal } else { Retryable },
            Self::Server { code: Some(code), .. } | Self::AuthFailed { code: Some(code), .. }
                if code.is_transient() =>
            {
                Retryable
            }
            Self::Server { code: None | Some(RespCode::Other(_)), command, .. }
                if matches!(*command, "greeting" | "QUIT") =>
            {
                Retryable
            }
            Self::Server { .. } | Self::AuthFailed { .. } => Fatal,
            Self::LineTooLong { .. } | Self::MessageTooLarge { .. } => Fatal,
            Self::StlsUnavailable { .. } | Self::PlaintextRefused | Self::Denied(_) | Self::MechanismUnavailable { .. } => Fatal,
            Self::InvalidArgument { .. } | Self::Misuse(_) => Fatal,
        }
    }

    /// Whether the session can still be used after this error. `-ERR` replies leave it
    /// in step with the server; anything that may have left unread bytes does not.
    pub fn leaves_session_usable(&self) -> bool {
        matches!(
            self,
            Self::Server { .. } | Self::InvalidArgument { .. } | Self::Misuse(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let server = |command, code| Pop3Error::Server { command, code, text: "x".into() };
        let auth = |code| Pop3Error::AuthFailed { mechanism: "USER", code, text: "x".into() };
        assert!(server("PASS", Some(RespCode::InUse)).class().is_retryable());
        assert!(auth(Some(RespCode::LoginDelay)).class().is_retryable());
        assert!(auth(Some(RespCode::SysTemp)).class().is_retryable());
        assert!(!auth(Some(RespCode::Auth)).class().is_retryable());
        assert!(!auth(Some(RespCode::SysPerm)).class().is_retryable());
        assert!(!auth(None).class().is_retryable());
        assert!(!server("RETR", None).class().is_retryable());
        assert!(server("greeting", None).class().is_retryable());
        assert!(server("QUIT", None).class().is_retryable());
        assert!(Pop3Error::Closed { during: "x" }.class().is_retryable());
        assert!(Pop3Error::Timeout { what: "x" }.class().is_retryable());
        assert!(!Pop3Error::Tls { reason: "x".into(), certificate: true }.class().is_retryable());
        assert!(!Pop3Error::PlaintextRefused.class().is_retryable());
    }

    #[test]
    fn display_is_one_sentence_with_the_code() {
        let e = Pop3Error::AuthFailed { mechanism: "USER", code: Some(RespCode::Auth), text: "bad".into() };
        assert_eq!(e.to_string(), "POP3 login with USER was rejected: [AUTH] bad");
        let e = Pop3Error::Server { command: "RETR", code: None, text: "no such message".into() };
        assert_eq!(e.to_string(), "the POP3 server refused RETR: no such message");
    }
}
