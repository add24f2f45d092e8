//! The destination index against a scripted server: literals bounded by what the server
//! itself announced, timeouts per response rather than per FETCH, and nothing a server
//! repeats counted twice.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{send, Act, Command, Server};
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(5);

fn is_sizes(c: &Command) -> bool {
    c.name == "UID" && c.line.to_ascii_uppercase().contains("RFC822.SIZE")
}

fn is_body(c: &Command) -> bool {
    c.name == "UID" && c.line.to_ascii_uppercase().contains("BODY.PEEK[]")
}

/// The UID a `UID FETCH <uid> BODY.PEEK[]` asks for.
fn asked_uid(c: &Command) -> u32 {
    c.line.split(' ').nth(3).and_then(|u| u.parse().ok()).expect("one UID per body FETCH")
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

const M4: &[u8] = b"Subject: four\r\n\r\nbody four\r\n";
const M9: &[u8] = b"Subject: nine\r\n\r\nbody nine, longer\r\n";

/// Regression (issue 13): one timeout covered the whole `UID FETCH 1:*`, so a large folder
/// on a slow server could never be indexed. Each response now has the timeout to itself.
#[tokio::test]
async fn the_timeout_is_per_response_not_per_fetch() {
    let mut server = Server::new("", |c, _| {
        is_sizes(c).then(|| {
            let mut acts = Vec::new();
            for n in 1..=5 {
                acts.push(Act::Sleep(Duration::from_millis(300)));
                acts.push(send(format!("* {n} FETCH (UID {n} RFC822.SIZE 100)\r\n")));
            }
            acts.push(send(format!("{} OK done\r\n", c.tag)));
            acts
        })
    });
    server.exists = 5;
    let (port, _server) = server.start().await;
    let mut session = common::connect(port, Duration::from_secs(1)).await;
    let wanted: HashSet<u64> = [7].into();
    let index = session.build_index(Some(&wanted)).await.expect("1.5 s of FETCH responses, none later than 1 s");
    assert_eq!(index.scanned(), 0);
}

/// Regression (issue 13): the server chose the size of a `BODY[]` literal; now it may not
/// exceed the RFC822.SIZE the same server announced for that message.
#[tokio::test]
async fn a_body_literal_larger_than_announced_is_refused() {
    let mut server = Server::new("", |c, _| {
        if is_sizes(c) {
            return Some(vec![send(format!("* 1 FETCH (UID 4 RFC822.SIZE 10)\r\n{} OK done\r\n", c.tag))]);
        }
        is_body(c).then(|| {
            let mut acts = vec![send("* 1 FETCH (UID 4 BODY[] {200000}\r\n")];
            acts.push(send(vec![b'x'; 200_000]));
            acts.push(send(format!(")\r\n{} OK done\r\n", c.tag)));
            acts
        })
    });
    server.exists = 1;
    let (port, _server) = server.start().await;
    let mut session = common::connect(port, T).await;
    let err = session.build_index(None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("200000") && text.contains("RFC822.SIZE 10"), "{text}");
}

/// Digests are of the exact bytes; the UID may come after the literal (RFC 3501 §7.4.2
/// fixes no order); unsolicited FETCH data is ignored; a FETCH response the server repeats
/// does not make one destination message vouch for two source messages.
#[tokio::test]
async fn digests_each_destination_message_once() {
    let mut server = Server::new("", |c, _| {
        if is_sizes(c) {
            let t = &c.tag;
            return Some(vec![send(format!(
                "* 1 FETCH (UID 4 RFC822.SIZE {})\r\n* 2 FETCH (FLAGS (\\Seen) UID 9 RFC822.SIZE {})\r\n\
                 * 2 FETCH (UID 9 RFC822.SIZE {})\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* 3 EXISTS\r\n{t} OK done\r\n",
                M4.len(),
                M9.len(),
                M9.len()
            ))]);
        }
        is_body(c).then(|| {
            let t = &c.tag;
            match asked_uid(c) {
                4 => vec![
                    send("* 2 FETCH (FLAGS (\\Seen))\r\n"),
                    send(format!("* 1 FETCH (BODY[] {{{}}}\r\n", M4.len())),
                    send(M4),
                    send(format!(" UID 4)\r\n{t} OK done\r\n")),
                ],
                _ => vec![
                    send(format!("* 2 FETCH (UID 9 FLAGS (\\Seen) BODY[] {{{}}}\r\n", M9.len())),
                    send(M9),
                    send(format!(")\r\n{t} OK done\r\n")),
                ],
            }
        })
    });
    server.exists = 2;
    let (port, server) = server.start().await;
    let mut session = common::connect(port, T).await;
    let mut index = session.build_index(None).await.unwrap();
    assert_eq!(index.scanned(), 2);
    assert_eq!(index.claim(&sha(M4)), Some(4));
    assert_eq!(index.claim(&sha(M9)), Some(9));
    assert_eq!(index.claim(&sha(M9)), None, "one destination copy vouches for one source message");
    drop(session);
    let seen = server.await.unwrap();
    assert_eq!(seen.iter().filter(|c| is_body(c)).count(), 2, "each UID fetched once");
}

/// A literal announced far beyond anything (4 GB) is refused before a byte of it is read.
#[tokio::test]
async fn a_huge_body_literal_is_refused_at_once() {
    let mut server = Server::new("", |c, _| {
        if is_sizes(c) {
            return Some(vec![send(format!("* 1 FETCH (UID 4 RFC822.SIZE 100)\r\n{} OK done\r\n", c.tag))]);
        }
        is_body(c).then(|| vec![send("* 1 FETCH (UID 4 BODY[] {4000000000}\r\n"), Act::Sleep(Duration::from_secs(30))])
    });
    server.exists = 1;
    let (port, _server) = server.start().await;
    let mut session = common::connect(port, T).await;
    let started = std::time::Instant::now();
    let err = session.build_index(None).await.unwrap_err();
    assert!(err.to_string().contains("4000000000"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A server that answers `UID FETCH 1:*` with far more messages than the folder holds is
/// stopped, not listed to the end.
#[tokio::test]
async fn more_fetch_responses_than_messages_is_an_error() {
    let mut server = Server::new("", |c, _| {
        is_sizes(c).then(|| {
            let lines: String = (1..=50_000).map(|n| format!("* 1 FETCH (UID {n} RFC822.SIZE 100)\r\n")).collect();
            vec![send(lines), send(format!("{} OK done\r\n", c.tag))]
        })
    });
    server.exists = 1;
    let (port, _server) = server.start().await;
    let mut session = common::connect(port, T).await;
    let wanted: HashSet<u64> = [7].into();
    let err = session.build_index(Some(&wanted)).await.unwrap_err();
    assert!(err.to_string().contains("messages"), "{err}");
}

/// A message announced above `max_message_bytes` is not read back at all.
#[tokio::test]
async fn messages_above_the_cap_are_not_read_back() {
    let mut server = Server::new("", |c, _| {
        if is_sizes(c) {
            return Some(vec![send(format!("* 1 FETCH (UID 4 RFC822.SIZE 5000)\r\n{} OK done\r\n", c.tag))]);
        }
        is_body(c).then(|| vec![send(format!("{} NO not expected\r\n", c.tag))])
    });
    server.exists = 1;
    let (port, server) = server.start().await;
    let mut opts = common::options(T);
    opts.max_message_bytes = 4096;
    let mut session = mailferry_imap::ImapSession::connect(&common::endpoint(port), &opts).await.unwrap();
    let index = session.build_index(None).await.unwrap();
    assert_eq!(index.scanned(), 0);
    drop(session);
    assert!(!server.await.unwrap().iter().any(is_body));
}
