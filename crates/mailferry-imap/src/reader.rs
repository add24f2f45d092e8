//! Reading responses on the connection we drive ourselves (APPEND, the destination index):
//! lines and literals, each bounded in size and in time (DESIGN.md §2 invariants 4 and 7).
//!
//! Timeouts apply per response part, not per command: a line must arrive whole within the
//! I/O timeout, and a literal within the I/O timeout plus the time its announced length
//! takes at a floor rate. So a slow but moving server finishes a `UID FETCH 1:*` over a
//! large folder, and a server that trickles bytes or stalls is cut off.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::error::{ImapError, Result};
use crate::wire;

/// Longest response line we accept (literals aside).
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Largest literal we skip without having asked for it (unsolicited data): nothing that
/// legitimately arrives unasked is this large.
pub(crate) const MAX_SKIPPED_LITERAL: u64 = 1 << 20;
/// Line/literal pairs of one response we skip before calling the response hostile.
const MAX_SEGMENTS: usize = 1024;
/// The floor rate a literal's deadline allows for beyond the I/O timeout, in bytes/second.
const MIN_LITERAL_RATE: u64 = 64 * 1024;
/// No single wait is planned longer than this, whatever a length says.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Bytes read from the socket at a time.
const CHUNK: usize = 64 * 1024;

/// The read side of a connection: what arrived but was not consumed yet, and the timeout.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    timeout: Duration,
}

impl Reader {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self { buf: Vec::with_capacity(4096), timeout }
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// One line, without its CRLF. The whole line must arrive within the timeout.
    pub(crate) async fn line<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Vec<u8>> {
        let deadline = after(self.timeout);
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].windows(2).position(|w| w == b"\r\n") {
                let end = scanned + pos;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            scanned = self.buf.len().saturating_sub(1);
            if self.buf.len() > MAX_LINE {
                return Err(ImapError::Protocol(format!("reply line longer than {MAX_LINE} bytes")));
            }
            self.fill(stream, deadline, "waiting for the destination").await?;
        }
    }

    /// Exactly `len` literal bytes, handed to `each` chunk by chunk and never held whole.
    /// The caller has bounded `len`; the deadline grows with it (see the module docs).
    pub(crate) async fn literal<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        len: u64,
        mut each: impl FnMut(&[u8]),
    ) -> Result<()> {
        let deadline = after(self.timeout.saturating_add(Duration::from_secs(len / MIN_LITERAL_RATE)));
        let mut left = len;
        let buffered = usize::try_from(left).unwrap_or(usize::MAX).min(self.buf.len());
        each(&self.buf[..buffered]);
        self.buf.drain(..buffered);
        left -= buffered as u64;
        // The rest straight from the socket, never reading past the literal's end.
        let mut chunk = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        while left > 0 {
            let want = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = read_by(stream, &mut chunk[..want], deadline, self.timeout, "reading a literal from the destination")
                .await?;
            each(&chunk[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    /// Skip the rest of a response whose first line was `line`: the literals it announces
    /// (each at most [`MAX_SKIPPED_LITERAL`]) and the line that follows each of them.
    pub(crate) async fn skip_rest<S: AsyncRead + Unpin>(&mut self, stream: &mut S, line: &[u8]) -> Result<()> {
        let mut next = wire::trailing_literal(line);
        let mut segments = 0;
        while let Some(len) = next {
            if len > MAX_SKIPPED_LITERAL {
                return Err(ImapError::Protocol(format!(
                    "the server sent an unrequested literal of {len} bytes (at most {MAX_SKIPPED_LITERAL} accepted)"
                )));
            }
            segments += 1;
            if segments > MAX_SEGMENTS {
                return Err(ImapError::Protocol(format!("a response of more than {MAX_SEGMENTS} literals")));
            }
            self.literal(stream, len, |_| {}).await?;
            next = wire::trailing_literal(&self.line(stream).await?);
        }
        Ok(())
    }

    async fn fill<S: AsyncRead + Unpin>(&mut self, stream: &mut S, deadline: Instant, what: &'static str) -> Result<()> {
        let mut chunk = [0u8; 8192];
        let n = read_by(stream, &mut chunk, deadline, self.timeout, what).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// One read that must end by `deadline` and, stall or not, within `stall` of starting.
async fn read_by<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
    deadline: Instant,
    stall: Duration,
    what: &'static str,
) -> Result<usize> {
    let limit = deadline.min(after(stall));
    match tokio::time::timeout_at(limit, stream.read(buf)).await {
        Err(_) => Err(ImapError::Timeout(what)),
        Ok(Err(e)) => Err(ImapError::from_io(e)),
        Ok(Ok(0)) => Err(ImapError::Closed),
        Ok(Ok(n)) => Ok(n),
    }
}

fn after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(MAX_WAIT)).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_literals_and_skipping() {
        let data: &[u8] = b"* 1 FETCH (X {5}\r\nab\r\nc)\r\nA1 OK {3}\r\nxyzB1 OK\r\n";
        let mut s = data;
        let mut r = Reader::new(Duration::from_secs(5));
        let first = r.line(&mut s).await.unwrap();
        r.skip_rest(&mut s, &first).await.unwrap();
        let tagged = r.line(&mut s).await.unwrap();
        assert_eq!(tagged, b"A1 OK {3}");
        let mut got = Vec::new();
        r.literal(&mut s, 3, |b| got.extend_from_slice(b)).await.unwrap();
        assert_eq!(got, b"xyz");
        assert_eq!(r.line(&mut s).await.unwrap(), b"B1 OK");
        assert!(matches!(r.line(&mut s).await, Err(ImapError::Closed)));
    }

    #[tokio::test]
    async fn bounds() {
        let long = vec![b'x'; MAX_LINE + 10_000];
        let mut r = Reader::new(Duration::from_secs(5));
        assert!(matches!(r.line(&mut &long[..]).await, Err(ImapError::Protocol(_))));
        let mut r = Reader::new(Duration::from_secs(5));
        let huge: &[u8] = b"* 1 FETCH (X {4294967296}\r\n";
        let err = r.skip_rest(&mut &huge[..], b"* 1 FETCH (X {4294967296}").await.unwrap_err();
        assert!(err.to_string().contains("unrequested literal of 4294967296 bytes"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the bytes, reading them as responses ends in a value or a typed error.
        #[test]
        fn any_bytes_read_as_responses(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut s = &bytes[..];
                let mut r = Reader::new(Duration::from_secs(5));
                for _ in 0..1000 {
                    let Ok(line) = r.line(&mut s).await else { break };
                    if r.skip_rest(&mut s, &line).await.is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// A server that trickles one byte at a time, each well within the I/O timeout, is cut
    /// off when the line as a whole is late.
    #[tokio::test]
    async fn a_trickled_line_times_out_as_a_whole() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            loop {
                if server.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let mut r = Reader::new(Duration::from_millis(400));
        let started = std::time::Instant::now();
        assert!(matches!(r.line(&mut client).await, Err(ImapError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
