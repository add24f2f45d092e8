//! IMAP responses (crates/mailferry-imap/src/{wire,reader,fetch,guard,mutf7}.rs and the
//! capability list of session.rs): the fuzz input is what a destination server says.
//!
//! * every line through `parse_line`, `trailing_literal` and `parse_appenduid` (for a
//!   message count the input picks), with what each returns checked against the line;
//! * the APPEND path's reply loop on the reader (lines, untagged responses with their
//!   literals skipped, the tagged reply's APPENDUID), the same whatever the read size;
//! * the destination index's FETCH parser on the bytes as a response skeleton;
//! * the framing guard on the bytes async-imap reads, the same verdict however split;
//! * modified UTF-7 mailbox names: decode never panics, encode then decode is exact.
//!
//! What async-imap parses (CAPABILITY and the rest of the session set-up) is the
//! imap_capability target.
#![no_main]

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mailferry_imap::fuzzing::{self, Reader};
use mailferry_imap::mutf7;
use mailferry_imap::wire::{self, Line};
use tokio::io::{AsyncRead, ReadBuf};

/// What the server sent, at most `size` bytes per read, then end of stream.
struct Scripted<'a> {
    data: &'a [u8],
    size: usize,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn check_appenduid(code: &str, expected: usize) {
    match wire::parse_appenduid(code, expected) {
        Ok(Some(a)) => {
            assert_eq!(a.uids.len(), expected, "one UID per message");
            assert!(a.uid_validity > 0 && a.uids.iter().all(|&u| u > 0));
            let mut sorted = a.uids.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), expected, "no UID twice");
        }
        Ok(None) => assert!(!code.split_ascii_whitespace().next().is_some_and(|k| k.eq_ignore_ascii_case("APPENDUID"))),
        Err(_) => {}
    }
}

fn check_line(line: &[u8], expected: usize) {
    match wire::parse_line(line) {
        Ok(Line::Continuation) => assert!(line.starts_with(b"+")),
        Ok(Line::Untagged) => assert!(line.starts_with(b"* ")),
        Ok(Line::Tagged { tag, code, text, .. }) => {
            assert!(!tag.is_empty() && tag.is_ascii() && line.starts_with(tag.as_bytes()));
            if let Some(code) = code {
                check_appenduid(&code, expected);
            }
            let _ = text.len();
        }
        // Invalid bytes become U+FFFD: count characters, not bytes.
        Err(e) => assert!(e.chars().count() < 260, "error messages quote at most 200 bytes of the line"),
    }
    if let Some(n) = wire::trailing_literal(line) {
        assert!(line.ends_with(b"}"));
        assert!(n.to_string().len() <= 20);
    }
    check_appenduid(&String::from_utf8_lossy(line), expected);
    if let Ok(Some(f)) = fuzzing::parse_fetch(line) {
        assert!(f.seq > 0 && f.uid != Some(0));
    }
}

/// The shape of `Appender::await_tagged`: untagged responses are skipped with their
/// literals, a continuation is noted, the first tagged reply ends it.
async fn replies(data: &[u8], size: usize, expected: usize) -> Vec<String> {
    let mut stream = Scripted { data, size };
    let mut reader = Reader::new(Duration::from_secs(60));
    let mut log = Vec::new();
    for _ in 0..64 {
        let line = match reader.line(&mut stream).await {
            Ok(l) => l,
            Err(e) => {
                log.push(format!("err {e}"));
                break;
            }
        };
        match wire::parse_line(&line) {
            Ok(Line::Untagged) => match reader.skip_rest(&mut stream, &line).await {
                Ok(()) => log.push("untagged".into()),
                Err(e) => {
                    log.push(format!("err {e}"));
                    break;
                }
            },
            Ok(Line::Continuation) => log.push("continue".into()),
            Ok(Line::Tagged { tag, status, code, text }) => {
                let uid = code.as_deref().map(|c| format!("{:?}", wire::parse_appenduid(c, expected)));
                log.push(format!("{tag} {status:?} {uid:?} {text}"));
                break;
            }
            Err(e) => {
                log.push(format!("bad {e}"));
                break;
            }
        }
    }
    log
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime"))
}

fuzz_target!(|data: &[u8]| {
    // Two bytes of set-up: read size / split point, and the number of messages an APPEND
    // carried (1..=64); the rest is what the server sent.
    let [split, count, bytes @ ..] = data else { return };
    let size = usize::from(*split) + 1;
    let expected = usize::from(count & 0x3f) + 1;

    for line in bytes.split(|&b| b == b'\n') {
        check_line(line.strip_suffix(b"\r").unwrap_or(line), expected);
    }
    let _ = fuzzing::parse_fetch(bytes);

    let rt = runtime();
    let whole = rt.block_on(replies(bytes, usize::MAX, expected));
    let cut = rt.block_on(replies(bytes, size, expected));
    assert_eq!(cut, whole, "read size {size}");


    let at = usize::from(*split).min(bytes.len());
    let (a, b) = bytes.split_at(at);
    assert_eq!(fuzzing::frame_guard([bytes]), fuzzing::frame_guard([a, b]), "split at {at}");

    let text = String::from_utf8_lossy(bytes);
    let _ = mutf7::decode(&text);
    assert_eq!(mutf7::decode(&mutf7::encode(&text)).as_deref(), Some(&*text));
});
