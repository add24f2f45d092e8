//! The IMAP destination.
//!
//! async-imap drives the session (connect, STARTTLS, LOGIN/AUTHENTICATE, CAPABILITY, folder
//! creation, the destination index). It cannot carry our APPENDs: async-imap 0.12 buffers the
//! whole message, always waits for a synchronising literal (no LITERAL+, RFC 7888), has no
//! MULTIAPPEND (RFC 3502) and drops the APPENDUID response code (RFC 4315). So once the
//! session is ready, [`Appender`] keeps it and, with no command outstanding, reads and
//! writes its stream directly (`Session::get_mut`) to speak APPEND itself, streaming large messages from their spool files (docs/adr/0002).
//! The same connection then reads the copies back (`Appender::read_back`), so that a
//! message is deleted at the source only once its copy's bytes are proved (issue 14).
#![forbid(unsafe_code)]

mod append;
mod bodyhash;
mod error;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod index;
pub mod mutf7;
mod probe;
mod reader;
mod response;
mod session;
mod stream;
mod uids;
pub mod wire;

pub use append::{AppendBody, AppendMessage, AppendOutcome, Appender, BatchError, Examined, ReadBack};
pub use bodyhash::BodyHasher;
pub use error::{ImapError, Result};
pub use index::DestinationIndex;
pub use probe::{DestinationProbe, FolderState, QuotaUsage};
pub use session::{Capabilities, ImapOptions, ImapSession};
