//! Errors of the IMAP destination, classed for the engine's retry logic.

use mailferry_model::ErrorClass;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("network error: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out while {0}")]
    Timeout(&'static str),
    #[error("the server closed the connection")]
    Closed,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// A flag configured to be set on copies that may not be (see `wire::flag_problem`).
    #[error("target flag refused: {0}")]
    InvalidFlag(String),
    #[error("plaintext IMAP refused: use imaps:// or STARTTLS, or allow plaintext explicitly")]
    PlaintextRefused,
    #[error("the IMAP server's address is refused: {0}")]
    Denied(String),
    #[error("the server does not offer STARTTLS")]
    StartTlsUnavailable,
    #[error("the server refused the connection: {0}")]
    Greeting(String),
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// A refresh-token credential reached the session: the caller must mint a token first.
    #[error("an OAuth2 refresh-token credential needs an access token minted first")]
    NeedsAccessToken,
    #[error("{command} refused: {text}")]
    Refused { command: &'static str, text: String },
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
    /// A request we cannot put on the wire (a Message-ID with a line break, BINARY asked of
    /// a server without it): refused before anything is sent, and it would never succeed.
    #[error("not sent to the server: {0}")]
    NotSent(String),
}

pub type Result<T> = std::result::Result<T, ImapError>;

impl ImapError {
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Io(_) | Self::Timeout(_) | Self::Closed | Self::Greeting(_) | Self::Protocol(_) => {
                ErrorClass::Retryable
            }
            // RFC 5530 codes that mean "later": the server is busy or over a limit for now.
            Self::Refused { text, .. }
                if ["[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]"].iter().any(|c| text.contains(c)) =>
            {
                ErrorClass::Retryable
            }
            _ => ErrorClass::Fatal,
        }
    }

    /// An I/O error, or a framing limit the server went past (see `guard.rs`), which is the
    /// server's fault and said as such.
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        if let Some(framing) = e.get_ref().and_then(|inner| inner.downcast_ref::<crate::stream::FramingError>()) {
            return Self::Protocol(framing.0.clone());
        }
        // async-imap reports a parse failure as an I/O error quoting the whole buffer: that
        // is the server's text, and possibly megabytes of it.
        let text = e.to_string();
        if text.len() > 300 {
            return Self::Protocol(format!("{}...", text.chars().take(300).collect::<String>()));
        }
        Self::Io(e)
    }

    /// Map an async-imap error from a named step.
    pub(crate) fn from_lib(command: &'static str, e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        match e {
            E::Io(io) => Self::from_io(io),
            E::ConnectionLost => Self::Closed,
            E::No(text) | E::Bad(text) => Self::Refused { command, text },
            other => Self::Protocol(format!("{command}: {other}")),
        }
    }
}
