//! Our own APPEND on the connection async-imap authenticated (see the crate docs for why).
//!
//! A batch goes out as one MULTIAPPEND (RFC 3502: one round trip, one server transaction)
//! when offered, otherwise as pipelined APPENDs with non-synchronising literals (LITERAL+,
//! RFC 7888), otherwise one synchronising literal at a time. Message bodies are streamed
//! from memory or from their spool file, never copied whole into a command buffer.
//! A refused MULTIAPPEND is retried message by message, so one bad message cannot block
//! its neighbours. Every tagged OK is recorded as it is read: when the connection fails
//! later in the batch, the messages already confirmed are reported with the error
//! ([`BatchError`]), because they are stored at the destination (DESIGN.md §2.1).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use async_imap::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{ImapError, Result};
use crate::reader::Reader;
use crate::session::{Capabilities, ImapOptions};
use crate::stream::Stream;
use crate::wire::{self, Line, Status};

mod examine;
mod readback;
pub use examine::Examined;
pub use readback::ReadBack;

const WRITE_BUF: usize = 64 * 1024;
/// Untagged responses we accept while waiting for one tagged reply (EXISTS, RECENT,
/// EXPUNGE of other sessions, ...): plenty for a real server, an end for one that never
/// answers but keeps talking.
const MAX_UNTAGGED: usize = 1_000_000;

/// The bytes to append, already in IMAP form (CRLF line endings).
#[derive(Debug, Clone)]
pub enum AppendBody {
    Memory(Vec<u8>),
    /// Spooled to a temporary file (removed when the last handle drops).
    Spooled { path: Arc<tempfile::TempPath>, len: u64 },
}

impl AppendBody {
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(v) => v.len() as u64,
            Self::Spooled { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
pub struct AppendMessage {
    pub body: AppendBody,
    pub flags: Vec<String>,
    pub internal_date: Option<DateTime<FixedOffset>>,
    /// The body holds NUL bytes, which only a literal8 (BINARY) may carry.
    pub has_nul: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The server answered the APPEND with OK: the message is stored.
    Appended { uid: Option<u32>, uid_validity: Option<u32> },
    /// The server (or a limit it announced) refused this message; nothing was stored.
    Refused(String),
}

/// A batch that failed part-way, with what the server had answered before the failure.
#[derive(Debug)]
pub struct BatchError {
    /// One entry per message of the batch, in order: `Some` where the outcome is known
    /// (the server's tagged OK or NO was read, or the message was refused before sending),
    /// `None` where it is not (the message may or may not be stored).
    pub outcomes: Vec<Option<AppendOutcome>>,
    pub error: ImapError,
}

impl BatchError {
    /// Messages the server confirmed stored (tagged OK) before the failure.
    pub fn confirmed(&self) -> usize {
        self.outcomes.iter().filter(|o| matches!(o, Some(AppendOutcome::Appended { .. }))).count()
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} of {} messages confirmed before the failure)", self.error, self.confirmed(), self.outcomes.len())
    }
}

impl std::error::Error for BatchError {}

#[derive(Debug)]
pub struct Appender {
    /// The authenticated session; we read and write its stream directly (`get_mut`), which
    /// is safe because async-imap has no command outstanding and nothing buffered by then.
    session: Session<Stream>,
    wbuf: Vec<u8>,
    reader: Reader,
    caps: Capabilities,
    folder: String,
    uid_validity: Option<u32>,
    timeout: Duration,
    /// Largest body literal read back (`ImapOptions::max_message_bytes`).
    max_message_bytes: u64,
    next_tag: u64,
    endpoint: String,
}

impl Appender {
    pub(crate) fn new(
        mut session: Session<Stream>,
        reader: Reader,
        caps: Capabilities,
        folder: String,
        uid_validity: Option<u32>,
        opts: ImapOptions,
        endpoint: String,
    ) -> Self {
        session.get_mut().relax_limits();
        Self {
            session,
            wbuf: Vec::with_capacity(WRITE_BUF),
            reader,
            caps,
            folder,
            uid_validity,
            timeout: opts.io_timeout,
            max_message_bytes: opts.max_message_bytes,
            next_tag: 1,
            endpoint,
        }
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The folder's UIDVALIDITY (RFC 3501 §2.3.1.1): UIDs recorded under another value no
    /// longer name the same messages.
    pub fn uid_validity(&self) -> Option<u32> {
        self.uid_validity
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Why this message cannot be appended here at all, decided before any byte is sent.
    pub fn precheck(&self, msg: &AppendMessage) -> Option<String> {
        if let Some(limit) = self.caps.append_limit {
            if msg.body.len() > limit {
                return Some(format!(
                    "message of {} bytes exceeds the destination's APPENDLIMIT of {limit} bytes (RFC 7889)",
                    msg.body.len()
                ));
            }
        }
        if msg.has_nul && !self.caps.binary {
            return Some("message contains NUL bytes and the destination does not offer BINARY (RFC 3516)".into());
        }
        if msg.body.is_empty() {
            return Some("message is empty".into());
        }
        // Flags are written into the command as they are: refuse any that is not a flag we
        // may set (a CRLF would end the command; `\Deleted` would have the copy expunged).
        if let Some(why) = msg.flags.iter().find_map(|f| wire::flag_problem(f)) {
            return Some(why);
        }
        None
    }

    /// Append messages; one outcome per message, in order. On a failure part-way (the
    /// connection drops, a timeout, a BAD), [`BatchError`] still carries every outcome the
    /// server had given: the messages it confirmed are stored and must be recorded as such.
    pub async fn append_batch(&mut self, msgs: &[AppendMessage]) -> std::result::Result<Vec<AppendOutcome>, BatchError> {
        let mut outcomes: Vec<Option<AppendOutcome>> = msgs.iter().map(|m| self.precheck(m).map(AppendOutcome::Refused)).collect();
        let todo: Vec<usize> = (0..msgs.len()).filter(|&i| outcomes[i].is_none()).collect();
        if let Err(error) = self.send_batch(msgs, &todo, &mut outcomes).await {
            return Err(BatchError { outcomes, error });
        }
        if outcomes.iter().any(Option::is_none) {
            let error = ImapError::Protocol("the APPEND ended without an answer for every message".into());
            return Err(BatchError { outcomes, error });
        }
        Ok(outcomes.into_iter().flatten().collect())
    }

    /// Send the messages `todo` (indexes into `msgs`), writing each outcome into `outcomes`
    /// as soon as the server has given it.
    async fn send_batch(&mut self, msgs: &[AppendMessage], todo: &[usize], outcomes: &mut [Option<AppendOutcome>]) -> Result<()> {
        if todo.len() > 1 && self.caps.multiappend {
            let batch: Vec<&AppendMessage> = todo.iter().map(|&i| &msgs[i]).collect();
            // RFC 3502 §3: one transaction. Until its tagged OK nothing is stored; after a
            // failure before it, nothing is known, and every outcome stays unknown.
            match self.multiappend(&batch).await? {
                Ok(uids) => {
                    for (n, &i) in todo.iter().enumerate() {
                        outcomes[i] = Some(AppendOutcome::Appended {
                            uid: uids.as_ref().and_then(|u| u.get(n).copied()),
                            uid_validity: self.uid_validity,
                        });
                    }
                }
                Err(text) => {
                    tracing::debug!(%text, "MULTIAPPEND refused; appending one by one");
                    self.singles(msgs, todo, outcomes).await?;
                }
            }
        } else if !todo.is_empty() {
            self.singles(msgs, todo, outcomes).await?;
        }
        Ok(())
    }

    /// LOGOUT, politely; errors do not matter any more.
    pub async fn logout(mut self) {
        let tag = self.tag();
        let _ = self.write(format!("{tag} LOGOUT\r\n").as_bytes()).await;
        self.timeout = Duration::from_secs(5);
        self.reader.set_timeout(self.timeout);
        let _ = self.flush().await;
    }

    fn tag(&mut self) -> String {
        let t = format!("M{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// One APPEND command carrying every message. `Ok(Ok(uids))` on OK, `Ok(Err(text))` on NO.
    async fn multiappend(&mut self, msgs: &[&AppendMessage]) -> Result<std::result::Result<Option<Vec<u32>>, String>> {
        let tag = self.tag();
        let non_sync = self.caps.literal_plus;
        self.write(format!("{tag} APPEND {}", wire::quote(&self.folder)).as_bytes()).await?;
        for msg in msgs {
            let prefix = wire::message_prefix(&msg.flags, msg.internal_date.as_ref(), msg.body.len(), non_sync, msg.has_nul);
            self.write(prefix.as_bytes()).await?;
            self.write(b"\r\n").await?;
            if !non_sync {
                if let Some(refused) = self.await_continuation(&tag).await? {
                    return Ok(Err(refused));
                }
            }
            self.write_body(&msg.body).await?;
        }
        self.write(b"\r\n").await?;
        self.flush().await?;
        let (status, code, text) = self.await_tagged(&tag).await?;
        Ok(match status {
            Status::Ok => Ok(self.appenduid(code.as_deref(), msgs.len()).map(|a| a.uids)),
            _ => Err(refusal(code.as_deref(), &text)),
        })
    }

    /// One APPEND per message, pipelined when literals need no round trip (RFC 7888
    /// LITERAL+). Each outcome is recorded the moment its tagged reply is read, so a
    /// failure later in the batch cannot lose it.
    async fn singles(&mut self, msgs: &[AppendMessage], todo: &[usize], outcomes: &mut [Option<AppendOutcome>]) -> Result<()> {
        let non_sync = self.caps.literal_plus;
        // Pipelined APPENDs sent whole, whose replies are still to be read.
        let mut pending: Vec<(String, usize)> = Vec::with_capacity(todo.len());
        for &i in todo {
            let msg = &msgs[i];
            let tag = self.tag();
            let sent = self.send_single(&tag, msg, non_sync).await;
            match sent {
                Ok(Some(refused)) => outcomes[i] = Some(AppendOutcome::Refused(refused)),
                Ok(None) if non_sync => pending.push((tag, i)),
                Ok(None) => {
                    self.flush().await?;
                    outcomes[i] = Some(self.outcome(&tag).await?);
                }
                Err(e) => {
                    self.salvage(&pending, outcomes).await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.flush().await {
            self.salvage(&pending, outcomes).await;
            return Err(e);
        }
        for (tag, i) in pending {
            outcomes[i] = Some(self.outcome(&tag).await?);
        }
        Ok(())
    }

    /// One APPEND command with its message. `Some(text)` if the server refused it before
    /// the literal (synchronising literals only).
    async fn send_single(&mut self, tag: &str, msg: &AppendMessage, non_sync: bool) -> Result<Option<String>> {
        let prefix = wire::message_prefix(&msg.flags, msg.internal_date.as_ref(), msg.body.len(), non_sync, msg.has_nul);
        self.write(format!("{tag} APPEND {}{prefix}\r\n", wire::quote(&self.folder)).as_bytes()).await?;
        if !non_sync {
            if let Some(refused) = self.await_continuation(tag).await? {
                return Ok(Some(refused));
            }
        }
        self.write_body(&msg.body).await?;
        self.write(b"\r\n").await?;
        Ok(None)
    }

    /// Sending failed part-way through a pipeline: the APPENDs already sent whole may have
    /// been answered before the failure (a server that closes after replying). Read what
    /// can still be read, within the usual timeouts, and stop at the first failure.
    async fn salvage(&mut self, pending: &[(String, usize)], outcomes: &mut [Option<AppendOutcome>]) {
        for (tag, i) in pending {
            match self.outcome(tag).await {
                Ok(o) => outcomes[*i] = Some(o),
                Err(_) => break,
            }
        }
    }

    async fn outcome(&mut self, tag: &str) -> Result<AppendOutcome> {
        let (status, code, text) = self.await_tagged(tag).await?;
        Ok(match status {
            Status::Ok => {
                let uid = self.appenduid(code.as_deref(), 1).and_then(|a| a.uids.first().copied());
                AppendOutcome::Appended { uid, uid_validity: self.uid_validity }
            }
            _ => AppendOutcome::Refused(refusal(code.as_deref(), &text)),
        })
    }

    /// The UIDs of a tagged OK (RFC 4315 §3), if it carries a believable APPENDUID for the
    /// `sent` messages of that APPEND. An unbelievable one costs only the UIDs: the tagged OK
    /// is what confirms the messages are stored (RFC 3501 §6.3.11), so they are still
    /// `Appended`, without UIDs, as from a server without UIDPLUS.
    fn appenduid(&mut self, code: Option<&str>, sent: usize) -> Option<wire::AppendUid> {
        match wire::parse_appenduid(code?, sent) {
            Ok(Some(a)) => {
                self.uid_validity = Some(a.uid_validity);
                Some(a)
            }
            Ok(None) => None,
            Err(why) => {
                tracing::warn!(%why, "ignoring the APPENDUID of a confirmed APPEND; its messages are recorded without UIDs");
                None
            }
        }
    }

    /// Small writes gather in `wbuf` so a pipelined batch leaves in few packets; large
    /// ones go straight to the socket.
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.wbuf.len() + bytes.len() > WRITE_BUF {
            self.flush().await?;
        }
        if bytes.len() >= WRITE_BUF {
            let stream = self.session.get_mut();
            return timed(self.timeout, "sending to the destination", stream.write_all(bytes)).await;
        }
        self.wbuf.extend_from_slice(bytes);
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let stream = self.session.get_mut();
        if !self.wbuf.is_empty() {
            timed(self.timeout, "sending to the destination", stream.write_all(&self.wbuf)).await?;
            self.wbuf.clear();
        }
        timed(self.timeout, "sending to the destination", stream.flush()).await
    }

    async fn write_body(&mut self, body: &AppendBody) -> Result<()> {
        match body {
            AppendBody::Memory(v) => self.write(v).await,
            AppendBody::Spooled { path, len } => {
                let mut file = tokio::fs::File::open(path.as_ref() as &std::path::Path).await?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut left = *len;
                while left > 0 {
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        return Err(ImapError::Io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "spool file shorter than announced",
                        )));
                    }
                    let n = n.min(left as usize);
                    self.write(&buf[..n]).await?;
                    left -= n as u64;
                }
                Ok(())
            }
        }
    }

    /// Wait for `+` before a synchronising literal. `Some(text)` if the command was
    /// answered (refused) instead.
    async fn await_continuation(&mut self, tag: &str) -> Result<Option<String>> {
        self.flush().await?;
        let mut untagged = 0;
        loop {
            let line = self.reader.line(self.session.get_mut()).await?;
            match wire::parse_line(&line).map_err(ImapError::Protocol)? {
                Line::Continuation => return Ok(None),
                Line::Untagged => self.skip_untagged(&line, &mut untagged).await?,
                Line::Tagged { tag: t, code, text, .. } if t == tag => return Ok(Some(refusal(code.as_deref(), &text))),
                Line::Tagged { tag: t, .. } => return Err(ImapError::Protocol(format!("reply for unknown tag {t}"))),
            }
        }
    }

    async fn await_tagged(&mut self, tag: &str) -> Result<(Status, Option<String>, String)> {
        let mut untagged = 0;
        loop {
            let line = self.reader.line(self.session.get_mut()).await?;
            match wire::parse_line(&line).map_err(ImapError::Protocol)? {
                Line::Tagged { tag: t, status, code, text } if t == tag => {
                    if status == Status::Bad {
                        // BAD means we and the server disagree about the protocol state.
                        return Err(ImapError::Protocol(format!("APPEND answered BAD: {text}")));
                    }
                    return Ok((status, code.map(|c| c.into_owned()), text.into_owned()));
                }
                Line::Tagged { tag: t, .. } => return Err(ImapError::Protocol(format!("reply for unknown tag {t}"))),
                Line::Continuation => return Err(ImapError::Protocol("unexpected continuation request".into())),
                Line::Untagged => self.skip_untagged(&line, &mut untagged).await?,
            }
        }
    }

    /// Untagged data may end in a literal whose bytes are not lines; skip them, and count.
    async fn skip_untagged(&mut self, line: &[u8], seen: &mut usize) -> Result<()> {
        *seen += 1;
        if *seen > MAX_UNTAGGED {
            return Err(ImapError::Protocol(format!("more than {MAX_UNTAGGED} untagged responses and no answer to the APPEND")));
        }
        self.reader.skip_rest(self.session.get_mut(), line).await
    }
}

fn refusal(code: Option<&str>, text: &str) -> String {
    match code {
        Some(code) => format!("[{code}] {text}"),
        None => text.to_owned(),
    }
}

async fn timed<T>(limit: Duration, what: &'static str, fut: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

