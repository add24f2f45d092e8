//! A whole POP3 session against a hostile server (crates/mailferry-pop3/src/session.rs,
//! listing.rs, connect.rs): the fuzz input is everything the server says, handed out in
//! reads of a size the input chooses. Greeting, CAPA, STAT, UIDL, LIST, RETR (pipelined or
//! not, read or left outstanding), DELE and QUIT are each tried whatever happened before.
//! Never a panic or a hang, bodies within the size limit, and the outcome does not depend
//! on how the bytes were cut into reads.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use mailferry_pop3::{fuzzing, Pop3Options};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A server that has already said everything: `data`, at most `size` bytes per read, then
/// end of stream. What the client writes is discarded.
struct Scripted {
    data: Vec<u8>,
    pos: usize,
    size: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.data[this.pos..];
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

/// Small limits, so that fuzz inputs reach them.
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

fn outcome<T: std::fmt::Debug>(r: mailferry_pop3::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("err {e}"),
    }
}

async fn drive(data: Vec<u8>, size: usize, pipelining: bool, read: usize) -> Vec<String> {
    let limit = opts().max_message_bytes;
    let mut s = fuzzing::session(Scripted { data, pos: 0, size }, opts());
    let mut log = vec![outcome(fuzzing::read_greeting(&mut s).await)];
    log.push(outcome(fuzzing::capa(&mut s, pipelining).await));
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
                    assert!(!chunk.is_empty());
                    body.extend_from_slice(chunk);
                    assert!(body.len() as u64 <= limit, "a body past max_message_bytes");
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

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
}

fuzz_target!(|data: &[u8]| {
    // One byte of set-up: read size (1..=64), pipelining, RETRs read (0..=3).
    let [setup, bytes @ ..] = data else { return };
    let size = usize::from(setup & 0x3f) + 1;
    let pipelining = setup & 0x40 != 0;
    let read = if pipelining { usize::from(setup >> 7) * 3 } else { usize::from(setup >> 7) };
    let rt = runtime();
    let whole = rt.block_on(drive(bytes.to_vec(), usize::MAX, pipelining, read));
    let cut = rt.block_on(drive(bytes.to_vec(), size, pipelining, read));
    assert_eq!(cut, whole, "read size {size}");
});
