//! Entry points for the fuzz targets in `fuzz/` (hidden from the docs; not a stable API).
//!
//! The pure parsers are public in [`crate::wire`] already. What the targets need beyond
//! them is the session's own buffering and line limits on server bytes that come from
//! memory instead of a socket: a session built on any stream, and the two steps of
//! [`Pop3Session::connect`] that precede login.

use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Capabilities, Pop3Options, Pop3Session, Result};

/// A session on `stream` as [`Pop3Session::connect`] leaves it, without TLS or login.
pub fn session(stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static, opts: Pop3Options) -> Pop3Session {
    Pop3Session::new(Box::new(stream), opts, false)
}

/// Read the greeting, as `connect` does first.
pub async fn read_greeting(s: &mut Pop3Session) -> Result<()> {
    s.read_greeting().await
}

/// CAPA, keeping what it said as `connect` does; `pipelining` then overrides the flag so
/// that both RETR paths are reachable whatever the server said.
pub async fn capa(s: &mut Pop3Session, pipelining: bool) -> Result<Capabilities> {
    let caps = s.capa().await;
    if let Ok(c) = &caps {
        s.caps = c.clone();
    }
    s.caps.pipelining = pipelining;
    caps
}
