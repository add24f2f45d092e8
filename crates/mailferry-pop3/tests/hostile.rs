//! The session against servers that misbehave (issue 13), scripted on loopback (`common`):
//! endless CAPA, UIDL and LIST replies must end in a typed error at the limit the request
//! implies, without reading on; and a session stopped early with pipelined RETRs still in
//! flight must still QUIT cleanly.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mailferry_pop3::wire::stuff;
use mailferry_pop3::{Pop3Error, Pop3Options, Pop3Session};

/// Within this the client must give up on an endless reply (the I/O timeout is 5 s, so
/// hitting it would not count).
const QUICKLY: Duration = Duration::from_secs(3);

fn flood(line: fn(u64) -> String) -> (Step, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    (Step::Flood { line, written: Arc::clone(&written) }, written)
}

/// Run `f` against the session; it must fail quickly with [`Pop3Error::ReplyTooLong`]
/// for `command`. Then, holding the connection open, the server must end up blocked:
/// the client stopped reading at the limit. Returns the error text and what the server
/// managed to write.
async fn assert_cut_off(command: &str, written: &AtomicU64, started: Instant, err: Pop3Error) -> (String, u64) {
    assert!(started.elapsed() < QUICKLY, "took {:?}: {err}", started.elapsed());
    assert!(matches!(&err, Pop3Error::ReplyTooLong { command: c, .. } if *c == command), "{err}");
    assert!(err.class().is_retryable() && !err.leaves_session_usable());
    let total = until_blocked(written).await;
    (err.to_string(), total)
}

#[tokio::test]
async fn endless_uidl_listing_stops_at_the_stat_count() {
    let (step, written) = flood(|n| format!("{} uid-{n}\r\n", n + 1));
    let mut steps = login("USER\r\nUIDL\r\n");
    steps.extend(stat(5));
    steps.extend([expect("UIDL"), send("+OK\r\n"), step]);
    let (port, _server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    let started = Instant::now();
    let err = s.uidl().await.unwrap_err();
    let (text, total) = assert_cut_off("UIDL", &written, started, err).await;
    assert_eq!(
        text,
        "the POP3 server's UIDL reply is longer than 21 lines (STAT counted 5 messages, plus 16 of slack); \
         it sent line 22: \"22 uid-21\""
    );
    // The cap is 21 lines of at most 256 bytes; the server got far more than that out
    // before it blocked, so the listing did not simply end there.
    assert!(total > 20 * 21 * 256, "the server wrote only {total} bytes");
    assert!(matches!(s.noop().await, Err(Pop3Error::Unusable)));
}

#[tokio::test]
async fn endless_list_stops_at_the_byte_cap() {
    // Few lines, but long ones: the byte cap ends it, not the line count.
    let (step, written) = flood(|n| format!("{} 100 {}\r\n", n + 1, "x".repeat(1000)));
    let mut steps = login("USER\r\n");
    steps.extend(stat(2));
    steps.extend([expect("LIST"), send("+OK\r\n"), step]);
    let (port, _server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    let started = Instant::now();
    let err = s.list().await.unwrap_err();
    let (text, total) = assert_cut_off("LIST", &written, started, err).await;
    assert!(
        text.starts_with(
            "the POP3 server's LIST reply is longer than 4608 bytes (256 bytes for each of the 18 lines allowed); \
             it had sent 5040 bytes by line 5: \"5 100 xxx"
        ),
        "{text}"
    );
    assert!(total > 20 * 4608, "the server wrote only {total} bytes");
}

#[tokio::test]
async fn endless_capa_list_before_login() {
    let (step, written) = flood(|n| format!("X-CAPABILITY-{n}\r\n"));
    let steps = vec![send("+OK ready\r\n"), expect("CAPA"), send("+OK\r\n"), step];
    let (port, server) = serve(steps, None).await;
    let started = Instant::now();
    let err = connect(port).await.unwrap_err();
    // `connect` dropped the session, so the server's writes fail rather than block.
    assert!(started.elapsed() < QUICKLY, "took {:?}", started.elapsed());
    assert!(matches!(&err, Pop3Error::ReplyTooLong { command: "CAPA", .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the POP3 server's CAPA reply is longer than 256 lines (the limit for a capability list); \
         it sent line 257: \"X-CAPABILITY-256\""
    );
    let seen = server.await.unwrap();
    assert_eq!(seen, ["CAPA"], "nothing after CAPA, no credentials");
    assert!(written.load(std::sync::atomic::Ordering::SeqCst) > 256 * 20);
}

#[tokio::test]
async fn stat_is_asked_once_and_bounds_both_listings() {
    let mut steps = login("USER\r\nUIDL\r\n");
    steps.extend(stat(2));
    steps.extend([
        expect("UIDL"),
        send("+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        expect("LIST"),
        send("+OK\r\n1 10\r\n2 20\r\n.\r\n"),
        expect("QUIT"),
        send("+OK\r\n"),
    ]);
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    assert_eq!(s.uidl().await.unwrap().entries, [(1, "a".to_string()), (2, "b".to_string())]);
    assert_eq!(s.list().await.unwrap(), [(1, 10), (2, 20)]);
    s.quit().await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.iter().filter(|l| *l == "STAT").count(), 1, "{seen:?}");
}

#[tokio::test]
async fn a_listing_within_the_slack_is_accepted() {
    // STAT says 1, the server lists 1 + 16 lines: a slightly wrong count is tolerated.
    let listing: String = (1..=17).map(|n| format!("{n} {}\r\n", n * 10)).collect();
    let mut steps = login("USER\r\n");
    steps.extend(stat(1));
    steps.extend([expect("LIST"), send(format!("+OK\r\n{listing}.\r\n"))]);
    let (port, _server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    assert_eq!(s.list().await.unwrap().len(), 17);
}

/// Four RETRs pipelined: a small message, a large one, a refused one, a small one.
fn retr_replies(big: &[u8]) -> Vec<u8> {
    [b"+OK\r\n".as_slice(), &stuff(b"one\r\n"), b"+OK\r\n", &stuff(big), b"-ERR [SYS/PERM] gone\r\n+OK\r\n", &stuff(b"four\r\n")]
        .concat()
}

fn big_message() -> Vec<u8> {
    (0..30_000).flat_map(|i| format!(".line {i} of a large message\r\n").into_bytes()).collect()
}

#[tokio::test]
async fn quit_with_pipelined_retrs_outstanding() {
    let big = big_message();
    let mut steps = login("USER\r\nPIPELINING\r\n");
    steps.extend([
        expect("RETR 1"),
        expect("RETR 2"),
        expect("RETR 3"),
        expect("RETR 4"),
        send(retr_replies(&big)),
        expect("QUIT"),
        send("+OK bye\r\n"),
    ]);
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    s.send_retr_many(&[1, 2, 3, 4]).await.unwrap();
    s.read_retr_status().await.unwrap();
    assert_eq!(s.read_retr_chunk().await.unwrap(), Some(b"one\r\n".as_slice()));
    assert_eq!(s.read_retr_chunk().await.unwrap(), None);
    // The caller stops here (cancel, pause, SIGTERM) with three responses in flight.
    assert_eq!(s.outstanding(), 3);
    s.quit().await.unwrap();
    let seen = server.await.unwrap();
    assert_eq!(seen.last().map(String::as_str), Some("QUIT"), "{seen:?}");
}

#[tokio::test]
async fn any_command_first_drains_a_half_read_body_and_the_queue() {
    let big = big_message();
    let mut steps = login("USER\r\nPIPELINING\r\n");
    steps.extend([
        expect("RETR 1"),
        expect("RETR 2"),
        expect("RETR 3"),
        expect("RETR 4"),
        send(retr_replies(&big)),
        expect("NOOP"),
        send("+OK\r\n"),
        expect("RETR 4"),
        send([b"+OK\r\n".as_slice(), &stuff(b"four\r\n")].concat()),
        expect("QUIT"),
        send("+OK bye\r\n"),
    ]);
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    s.send_retr_many(&[1, 2, 3, 4]).await.unwrap();
    s.read_retr_status().await.unwrap();
    while s.read_retr_chunk().await.unwrap().is_some() {}
    // Message 2 (about 1 MB) half-read: one chunk, then the caller moves on.
    s.read_retr_status().await.unwrap();
    let first = s.read_retr_chunk().await.unwrap().unwrap();
    assert!(first.len() < big.len());
    s.noop().await.unwrap();
    assert_eq!(s.outstanding(), 0);
    // Still in step with the server: the next reply is the next command's.
    assert_eq!(s.retr_to_vec(4).await.unwrap(), b"four\r\n");
    s.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn draining_keeps_the_message_size_limit() {
    let mut steps = login("USER\r\n");
    steps.extend([expect("RETR 1"), send([b"+OK\r\n".as_slice(), &stuff(&[b'x'; 100])].concat())]);
    let (port, _server) = serve(steps, None).await;
    let o = Pop3Options { max_message_bytes: 10, ..opts() };
    let ep = endpoint(port, mailferry_model::Security::None, mailferry_model::Pop3Auth::User);
    let mut s = Pop3Session::connect(&ep, &o).await.unwrap();
    s.send_retr(1).await.unwrap();
    let err = s.quit().await.unwrap_err();
    assert!(matches!(err, Pop3Error::MessageTooLarge { limit: 10 }), "{err}");
}

#[tokio::test]
async fn a_refused_retr_while_draining_is_just_a_reply() {
    let mut steps = login("USER\r\n");
    steps.extend([expect("RETR 9"), send("-ERR [SYS/PERM] no such message\r\n"), expect("DELE 1"), send("+OK\r\n")]);
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    s.send_retr(9).await.unwrap();
    s.dele(1).await.unwrap();
    drop(s);
    let seen = server.await.unwrap();
    assert_eq!(&seen[seen.len() - 2..], ["RETR 9", "DELE 1"]);
}
