//! Property tests of the whole session against arbitrary server bytes (DESIGN §2,
//! invariant 7): whatever a server sends, cut into reads of whatever size, every call
//! returns a value or a typed error, never a panic or a hang, and what the session makes
//! of the bytes does not depend on how they were cut.
//!
//! The pure parsers have their own property tests next to them (`wire::reply`,
//! `wire::line`, `wire::dot`); this one feeds them through the session's buffering.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{Pop3Options, Pop3Session};

/// A server that has already said everything: `data`, handed out at most `size` bytes
/// per read, then end of stream. What the client writes is discarded.
struct Scripted {
    data: Vec<u8>,
    pos: usize,
    size: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = this.data.get(this.pos..).unwrap_or_default();
        let n = this.size.min(rest.len()).min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Small limits, so arbitrary input reaches them.
fn opts() -> Pop3Options {
    Pop3Options {
        max_line: 200,
        max_message_bytes: 2000,
        max_capa_lines: 6,
        max_capa_bytes: 300,
        listing_slack: 2,
        listing_bytes_per_line: 40,
        max_listing_lines: 20,
        ..Default::default()
    }
}

/// What one call gave, in a form that does not depend on read sizes.
fn outcome<T: std::fmt::Debug>(r: crate::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {e}"),
    }
}

/// Greeting, CAPA, STAT, UIDL, LIST, three RETRs (one without PIPELINING) of which `read` are read (the others are
/// left outstanding, as a caller stopping early does), DELE, QUIT: every step is tried
/// whatever happened before, since a broken session must refuse calls, not panic.
async fn drive(data: Vec<u8>, size: usize, pipelining: bool, read: usize) -> Vec<String> {
    let limit = opts().max_message_bytes;
    let mut s = Pop3Session::new(Box::new(Scripted { data, pos: 0, size }), opts(), false);
    let mut log = vec![outcome(s.read_greeting().await)];
    match s.capa().await {
        Ok(caps) => {
            log.push(format!("ok {caps:?}"));
            s.caps = caps;
        }
        Err(e) => log.push(format!("err {e}")),
    }
    s.caps.pipelining = pipelining;
    log.push(outcome(s.stat().await));
    log.push(outcome(s.uidl().await));
    log.push(outcome(s.list().await));
    let ns: &[u32] = if pipelining { &[1, 2, 3] } else { &[1] };
    log.push(outcome(s.send_retr_many(ns).await));
    for _ in 0..read {
        let status = s.read_retr_status().await;
        let ok = status.is_ok();
        log.push(outcome(status));
        if !ok {
            continue;
        }
        let mut body = Vec::new();
        let end = loop {
            match s.read_retr_chunk().await {
                Ok(Some(chunk)) => {
                    assert!(!chunk.is_empty() && chunk.len() <= crate::session::CHUNK);
                    body.extend_from_slice(chunk);
                    assert!(body.len() as u64 <= limit);
                }
                Ok(None) => break format!("body {body:?}"),
                // The bytes before an error depend on where reads were cut: not logged.
                Err(e) => break format!("err {e}"),
            }
        };
        log.push(end);
    }
    log.push(outcome(s.dele(1).await));
    log.push(outcome(s.quit().await));
    log
}

/// Bytes that look like POP3 often enough to get past the first replies.
fn server_bytes() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"+OK\r\n".to_vec()),
        Just(b"+OK 3 300\r\n".to_vec()),
        Just(b"-ERR [IN-USE] busy\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"1 abc\r\n".to_vec()),
        Just(b"2 20\r\n".to_vec()),
        Just(b"..x\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b".".to_vec()),
        Just("\u{a0}IMPLEMENTATION x\r\n".as_bytes().to_vec()),
        Just("\u{2003}SASL PLAIN\r\n".as_bytes().to_vec()),
        Just(b"4294967296 1\r\n".to_vec()),
        Just(b"1 18446744073709551616\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(token, 0..60).prop_map(|v| v.concat())
}

fn check_every_chunk_size(data: Vec<u8>, pipelining: bool, read: usize) -> std::result::Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let whole = rt.block_on(drive(data.clone(), usize::MAX, pipelining, read));
    for size in (1..=64).chain([100, 257, 511]) {
        let cut = rt.block_on(drive(data.clone(), size, pipelining, read));
        prop_assert_eq!(&cut, &whole, "read size {}", size);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn session_survives_pop3_like_bytes(data in server_bytes(), pipelining in any::<bool>(), read in 0usize..=3) {
        check_every_chunk_size(data, pipelining, read)?;
    }

    #[test]
    fn session_survives_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..1500), pipelining in any::<bool>(), read in 0usize..=3) {
        check_every_chunk_size(data, pipelining, read)?;
    }
}
