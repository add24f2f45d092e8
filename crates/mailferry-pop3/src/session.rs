//! The socket half of the client: a logged-in POP3 session (RFC 1939 TRANSACTION state)
//! reading replies into a bounded buffer, every read and write under a timeout.
//!
//! Connecting, TLS and login live in `crate::connect`; parsing lives in `crate::wire`.
//!
//! # Pipelined, streamed RETR
//! [`Pop3Session::send_retr`] (or [`Pop3Session::send_retr_many`]) writes RETR commands
//! and queues them; [`Pop3Session::read_retr_status`] reads the status of the oldest one
//! and [`Pop3Session::read_retr_chunk`] then yields its unstuffed bytes in chunks of at
//! most 64 KiB until `None`. More than one RETR may be outstanding only when the server
//! advertises PIPELINING (RFC 2449 §6.6). Any other command sent while RETR responses are
//! still owed (a caller that stops early: cancel, pause, shutdown) first reads and
//! discards them, streamed and under the usual timeouts: replies come in order (RFC 2449
//! §6.6), so the next line read must be the new command's.
//!
//! # Bounded replies
//! No reply is buffered beyond what the command could need (DESIGN §2, invariants 4 and
//! 7): one line is at most [`Pop3Options::max_line`] bytes, a CAPA list at most
//! [`Pop3Options::max_capa_lines`] lines, and a UIDL or LIST listing at most one line per
//! message STAT counted plus [`Pop3Options::listing_slack`] (see `crate::listing`).
//!
//! # After an error
//! A `-ERR` reply ([`Pop3Error::Server`]) leaves the session usable. Anything that may
//! have left unread bytes on the stream (I/O, timeout, close, garbage, over-long line,
//! [`Pop3Error::MessageTooLarge`]) makes it unusable: later calls return
//! [`Pop3Error::Unusable`], and the caller reconnects. Dropping a session without
//! [`Pop3Session::quit`] commits no DELE (RFC 1939 §6).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use secrecy::zeroize::Zeroizing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use crate::connect::tls_error;
use crate::wire::{self, clip, Capabilities, Command, Scan, Status, Unstuffer};
use crate::{Pop3Error, Result};

/// Size of one read from the socket and the most one [`Pop3Session::read_retr_chunk`] returns.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Limits and timeouts of a session.
#[derive(Debug, Clone)]
pub struct Pop3Options {
    /// TCP connect, and the TLS handshake.
    pub connect_timeout: Duration,
    /// Every single read and write after that.
    pub io_timeout: Duration,
    /// Longest status or listing line accepted, without its line ending.
    pub max_line: usize,
    /// Largest message RETR will stream (unstuffed bytes).
    pub max_message_bytes: u64,
    /// Most lines, and bytes (line endings included), accepted in a CAPA list. RFC 2449
    /// §5 lists a dozen capabilities; real servers send well under a kilobyte.
    pub max_capa_lines: usize,
    pub max_capa_bytes: usize,
    /// Lines a UIDL or LIST listing may have beyond the message count of STAT. The
    /// maildrop is locked for the session (RFC 1939 §8), so the count cannot grow; the
    /// slack only spares a server whose STAT is slightly off.
    pub listing_slack: usize,
    /// Bytes a listing may average per line (line ending included). The longest valid
    /// UIDL line is 83 bytes (RFC 1939 §7: a number, a space, at most 70 characters,
    /// CRLF) and a LIST line about 33, so this leaves room for servers adding comments.
    pub listing_bytes_per_line: usize,
    /// Most lines of a UIDL or LIST listing whatever STAT says: a ceiling on what a STAT
    /// claiming billions of messages could make us accept.
    pub max_listing_lines: usize,
}

impl Default for Pop3Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(60),
            max_line: 8 * 1024,
            max_message_bytes: 1 << 30,
            max_capa_lines: 256,
            max_capa_bytes: 64 * 1024,
            listing_slack: 16,
            listing_bytes_per_line: 256,
            max_listing_lines: 2_000_000,
        }
    }
}

/// The result of UIDL (RFC 1939 §7), with the lines that cannot identify a message set
/// apart instead of failing the whole listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UidlListing {
    /// `(message number, unique-id)` in server order; every unique-id here is valid and
    /// appears once.
    pub entries: Vec<(u32, String)>,
    /// Unique-ids the server gave to more than one message, with those message numbers.
    /// They are *not* in `entries`: a unique-id that names two messages identifies neither.
    pub duplicates: Vec<(String, Vec<u32>)>,
    /// Lines with an invalid unique-id, and why. The number is 0 when the line did not
    /// even start with a message number.
    pub invalid: Vec<(u32, String)>,
}

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The body of the RETR being read.
#[derive(Debug)]
struct Body {
    unstuffer: Unstuffer,
    bytes: u64,
    /// The terminator was seen while returning the last chunk; the next call says `None`.
    finished: bool,
}

/// A POP3 session, logged in, in the TRANSACTION state (RFC 1939 §5).
pub struct Pop3Session {
    pub(crate) stream: Box<dyn Stream>,
    pub(crate) rbuf: BytesMut,
    /// How much of `rbuf` has already been searched for LF, so a long line arriving in
    /// many reads is scanned once.
    scanned: usize,
    out: Vec<u8>,
    pub(crate) opts: Pop3Options,
    pub(crate) caps: Capabilities,
    pub(crate) greeting: String,
    pub(crate) tls: bool,
    /// The TLS version and certificate of the server, once TLS is up.
    pub(crate) peer_tls: Option<mailferry_model::tls::PeerTls>,
    /// The login mechanism chosen (`USER/PASS`, `APOP`, `SASL PLAIN`, `SASL XOAUTH2`).
    pub(crate) mechanism: &'static str,
    pending: VecDeque<u32>,
    body: Option<Body>,
    broken: bool,
    /// The message count of the first STAT, the bound of later listings: it can only
    /// shrink within a session (DELE), never grow (RFC 1939 §8).
    pub(crate) count: Option<u32>,
}

impl std::fmt::Debug for Pop3Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pop3Session")
            .field("tls", &self.tls)
            .field("pending", &self.pending)
            .field("reading_body", &self.body.is_some())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Pop3Session {
    pub(crate) fn new(stream: Box<dyn Stream>, opts: Pop3Options, tls: bool) -> Self {
        Self {
            stream,
            rbuf: BytesMut::with_capacity(CHUNK),
            scanned: 0,
            out: Vec::with_capacity(CHUNK + 1),
            opts,
            caps: Capabilities::default(),
            greeting: String::new(),
            tls,
            peer_tls: None,
            mechanism: "",
            pending: VecDeque::new(),
            body: None,
            broken: false,
            count: None,
        }
    }

    /// What CAPA said after login (or before it, when the later CAPA was refused).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The text of the server greeting, after `+OK`.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// The session runs over TLS (implicit or after STLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The negotiated TLS version and the server's certificate (`None` in plaintext).
    pub fn peer_tls(&self) -> Option<&mailferry_model::tls::PeerTls> {
        self.peer_tls.as_ref()
    }

    /// The login mechanism used (`USER/PASS`, `APOP`, `SASL PLAIN`, `SASL XOAUTH2`).
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// RETR commands sent whose status has not been read yet.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    // ---- low-level I/O -------------------------------------------------------------

    pub(crate) fn fail<T>(&mut self, e: Pop3Error) -> Result<T> {
        self.broken = true;
        Err(e)
    }

    pub(crate) fn protocol<T>(&mut self, what: &str, line: &str) -> Result<T> {
        self.fail(Pop3Error::Protocol(format!("{what}: {:?}", clip(line))))
    }

    /// Read more bytes into `rbuf`.
    async fn fill(&mut self, during: &'static str) -> Result<()> {
        if self.rbuf.capacity() - self.rbuf.len() < CHUNK / 4 {
            // Reclaims the consumed front of the buffer instead of growing it.
            self.rbuf.reserve(CHUNK);
        }
        match timeout(self.opts.io_timeout, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => self.fail(Pop3Error::Timeout { what: during }),
            Ok(Err(e)) => self.fail(tls_error(e)),
            Ok(Ok(0)) => self.fail(Pop3Error::Closed { during }),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// One line without its line ending (CRLF, or a bare LF from a sloppy server).
    pub(crate) async fn read_line(&mut self, during: &'static str) -> Result<String> {
        loop {
            match wire::scan_line(&self.rbuf, self.scanned, self.opts.max_line) {
                Scan::Line { len } => {
                    self.scanned = 0;
                    let line = self.rbuf.split_to(len);
                    return Ok(wire::line_text(&line));
                }
                Scan::TooLong => return self.fail(Pop3Error::LineTooLong { limit: self.opts.max_line }),
                Scan::Partial => self.scanned = self.rbuf.len(),
            }
            self.fill(during).await?;
        }
    }

    /// Read a status line; garbage makes the session unusable.
    pub(crate) async fn read_status(&mut self, during: &'static str) -> Result<Status> {
        let line = self.read_line(during).await?;
        match wire::parse_status(&line) {
            Some(status) => Ok(status),
            None => self.protocol("expected +OK or -ERR", &line),
        }
    }

    /// Read a status line and turn `-ERR` into [`Pop3Error::Server`].
    async fn expect_ok(&mut self, command: &'static str, during: &'static str) -> Result<String> {
        match self.read_status(during).await? {
            Status::Ok(text) => Ok(text),
            Status::Err { code, text } => Err(Pop3Error::Server { command, code, text }),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match timeout(self.opts.io_timeout, write).await {
            Err(_) => self.fail(Pop3Error::Timeout { what: "sending a command" }),
            Ok(Err(e)) => self.fail(tls_error(e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Send one command. The encoded line is wiped afterwards: it may hold a credential.
    pub(crate) async fn send(&mut self, cmd: Command<'_>) -> Result<()> {
        self.usable()?;
        let mut line = Zeroizing::new(Vec::with_capacity(64));
        cmd.encode(&mut line).map_err(|e| Pop3Error::InvalidArgument { command: e.command })?;
        tracing::trace!(command = cmd.name(), "pop3 send");
        self.write_all(&line).await
    }

    fn usable(&self) -> Result<()> {
        if self.broken {
            return Err(Pop3Error::Unusable);
        }
        Ok(())
    }

    /// Read and discard every RETR response still owed: the rest of a body half-read,
    /// then each queued RETR's status and body. Streamed through the usual chunk buffer
    /// (never a whole message in memory) and under the usual per-read timeout and
    /// message size limit. A `-ERR` to one of them is just a reply read.
    pub(crate) async fn drain(&mut self) -> Result<()> {
        self.usable()?;
        let owed = self.pending.len() + usize::from(self.body.is_some());
        if owed == 0 {
            return Ok(());
        }
        tracing::debug!(responses = owed, "pop3 discarding outstanding RETR responses");
        if self.body.is_some() {
            while self.read_retr_chunk().await?.is_some() {}
        }
        while !self.pending.is_empty() {
            match self.read_retr_status().await {
                Ok(()) => while self.read_retr_chunk().await?.is_some() {},
                Err(Pop3Error::Server { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A command with a one-line reply, once the replies still owed have been read.
    pub(crate) async fn simple(&mut self, cmd: Command<'_>, during: &'static str) -> Result<String> {
        self.drain().await?;
        let name = cmd.name();
        self.send(cmd).await?;
        self.expect_ok(name, during).await
    }

    // ---- TRANSACTION commands (RFC 1939 §5) ----------------------------------------

    pub async fn noop(&mut self) -> Result<()> {
        self.simple(Command::Noop, "reading the NOOP reply").await.map(drop)
    }

    /// RSET: unmark every message marked deleted in this session.
    pub async fn rset(&mut self) -> Result<()> {
        self.simple(Command::Rset, "reading the RSET reply").await.map(drop)
    }

    /// DELE: mark message `n` deleted. Nothing is removed until [`Pop3Session::quit`]
    /// succeeds (RFC 1939 §6).
    pub async fn dele(&mut self, n: u32) -> Result<()> {
        self.simple(Command::Dele(n), "reading the DELE reply").await.map(drop)
    }

    /// QUIT: enter the UPDATE state. `Ok` only on `+OK`, which is what commits the DELEs
    /// (RFC 1939 §6); on any error assume none were removed. Closes the connection.
    /// RETR responses still outstanding (a caller stopping early) are read and discarded
    /// first, so the reply read is QUIT's own.
    pub async fn quit(mut self) -> Result<()> {
        self.simple(Command::Quit, "reading the QUIT reply").await?;
        // The deletes are committed; a failing close no longer matters.
        let _ = timeout(self.opts.io_timeout, self.stream.shutdown()).await;
        Ok(())
    }

    // ---- streamed, pipelined RETR --------------------------------------------------

    fn may_queue(&self, more: usize) -> Result<()> {
        self.usable()?;
        let outstanding = self.pending.len() + usize::from(self.body.is_some());
        if !self.caps.pipelining && outstanding + more > 1 {
            return Err(Pop3Error::Misuse(
                "the server does not advertise PIPELINING: read the previous RETR first",
            ));
        }
        Ok(())
    }

    /// Send `RETR n` and queue it. A second RETR before the first is fully read needs
    /// PIPELINING in [`Pop3Session::capabilities`].
    pub async fn send_retr(&mut self, n: u32) -> Result<()> {
        self.send_retr_many(&[n]).await
    }

    /// Send several RETR commands in one write (RFC 2449 §6.6). Keep the window modest
    /// (tens, not thousands): the server writes replies while we are still writing.
    pub async fn send_retr_many(&mut self, ns: &[u32]) -> Result<()> {
        if ns.is_empty() {
            return Ok(());
        }
        self.may_queue(ns.len())?;
        let mut buf = Vec::with_capacity(ns.len() * 16);
        for &n in ns {
            Command::Retr(n).encode(&mut buf).map_err(|e| Pop3Error::InvalidArgument { command: e.command })?;
        }
        tracing::trace!(count = ns.len(), "pop3 send RETR");
        self.write_all(&buf).await?;
        self.pending.extend(ns);
        Ok(())
    }

    /// Read the status of the oldest queued RETR. On `+OK` its body follows through
    /// [`Pop3Session::read_retr_chunk`]; a `-ERR` is [`Pop3Error::Server`] and the session
    /// stays usable (the next queued RETR is next).
    pub async fn read_retr_status(&mut self) -> Result<()> {
        self.usable()?;
        if self.body.is_some() {
            return Err(Pop3Error::Misuse("the previous message has not been read to its end"));
        }
        if self.pending.pop_front().is_none() {
            return Err(Pop3Error::Misuse("no RETR is outstanding"));
        }
        self.expect_ok("RETR", "reading a RETR reply").await?;
        self.body = Some(Body { unstuffer: Unstuffer::new(), bytes: 0, finished: false });
        Ok(())
    }

    /// The next chunk (at most 64 KiB, never empty) of the message being read, already
    /// un-stuffed, ending with the message's own final CRLF; `None` once it is complete.
    /// Bytes after the terminator stay buffered for the next reply.
    ///
    /// The chunks are exactly the bytes the server sent for the message, unstuffed,
    /// nothing else added or removed: the RFC 1939 §3 byte-stuffing dot is taken off
    /// dot-lines and the terminating `.CRLF` is left out, but the CRLF before it is kept
    /// (it ends the message's last line; for a message stored without a final line
    /// ending, it is the one the server added). So the sum of the chunk lengths is the
    /// exact unstuffed size, to compare with the LIST size (RFC 1939 §5), and the
    /// message ended with CRLF when the last chunk does; the caller can track both
    /// without any help from the session. Only `None` means the terminator arrived: an
    /// error before it means the message is incomplete.
    pub async fn read_retr_chunk(&mut self) -> Result<Option<&[u8]>> {
        self.usable()?;
        let Some(mut body) = self.body.take() else {
            return Err(Pop3Error::Misuse("no message is being read: call read_retr_status first"));
        };
        if body.finished {
            return Ok(None);
        }
        self.out.clear();
        self.scanned = 0;
        loop {
            if !self.rbuf.is_empty() {
                // One byte of headroom: `feed` may emit a held-back CR beyond its input.
                let take = self.rbuf.len().min(CHUNK - 1);
                let fed = body.unstuffer.feed(&self.rbuf[..take], &mut self.out);
                self.rbuf.advance(fed.consumed);
                body.bytes = body.bytes.saturating_add(self.out.len() as u64);
                if body.bytes > self.opts.max_message_bytes {
                    return self.fail(Pop3Error::MessageTooLarge { limit: self.opts.max_message_bytes });
                }
                if fed.done {
                    if self.out.is_empty() {
                        return Ok(None);
                    }
                    body.finished = true;
                }
                if !self.out.is_empty() {
                    self.body = Some(body);
                    return Ok(Some(&self.out));
                }
            }
            self.fill("reading a message").await?;
        }
    }

    /// RETR one message into memory (tests, small messages). Replies still owed are
    /// read and discarded first.
    pub async fn retr_to_vec(&mut self, n: u32) -> Result<Vec<u8>> {
        self.drain().await?;
        self.send_retr(n).await?;
        self.read_retr_status().await?;
        let mut msg = Vec::new();
        while let Some(chunk) = self.read_retr_chunk().await? {
            msg.extend_from_slice(chunk);
        }
        Ok(msg)
    }
}
