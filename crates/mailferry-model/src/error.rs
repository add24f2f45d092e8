//! Error classes the engine acts on: retry with backoff, or stop at once.

use serde::Serialize;

/// Whether trying again later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Network trouble, timeouts, `[IN-USE]`, `[SYS/TEMP]`, `[LOGIN-DELAY]`, throttling.
    Retryable,
    /// Authentication failed, mailbox missing, policy refused: retrying cannot help.
    Fatal,
}

impl ErrorClass {
    pub fn is_retryable(self) -> bool {
        self == ErrorClass::Retryable
    }
}
