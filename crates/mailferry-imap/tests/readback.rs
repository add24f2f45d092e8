//! Reading copies back after APPEND, against a scripted server: digests of the exact bytes
//! whatever the order of the items, only the UIDs asked for, bodies of the wrong size
//! reported as such without being held, and every server answer bounded.

mod common;

use std::time::{Duration, Instant};

use common::{send, Act, Command, Server};
use mailferry_imap::{Appender, ImapError, ReadBack};
use sha2::{Digest, Sha256};

const T: Duration = Duration::from_secs(5);

const M5: &[u8] = b"Subject: five\r\n\r\nbody five\r\n";
const M6: &[u8] = b"Subject: six\r\n\r\nbody six, a little longer\r\n";
const M9: &[u8] = b"Subject: nine\r\n\r\nbody nine\r\n";

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn is_fetch(c: &Command) -> bool {
    c.name == "UID" && c.line.to_ascii_uppercase().contains(" UID FETCH ")
}

fn is_search(c: &Command) -> bool {
    c.name == "UID" && c.line.to_ascii_uppercase().contains(" UID SEARCH ")
}

/// A FETCH response with the UID first, then the body literal.
fn body_first_uid(seq: u32, uid: u32, body: &[u8]) -> Vec<Act> {
    vec![send(format!("* {seq} FETCH (UID {uid} BODY[] {{{}}}\r\n", body.len())), send(body), send(")\r\n")]
}

async fn start(server: Server) -> (Appender, tokio::task::JoinHandle<Vec<Command>>) {
    let (port, handle) = server.start().await;
    (common::connect(port, T).await.into_appender(), handle)
}

async fn commands(appender: Appender, server: tokio::task::JoinHandle<Vec<Command>>) -> Vec<Command> {
    drop(appender);
    server.await.unwrap()
}

/// Three copies in one `UID FETCH 5:6,9 (UID BODY.PEEK[])`: the digests are those of the
/// bytes (sha2 over the same bytes), whether the UID comes before or after the body
/// (RFC 3501 fixes no order); a flag update, a body for a UID not asked for and an EXISTS
/// in between change nothing. Results come in the caller's order.
#[tokio::test]
async fn three_copies_with_their_digests() {
    let server = Server::new("LITERAL+ UIDPLUS", |c, _| {
        is_fetch(c).then(|| {
            let mut acts = body_first_uid(1, 5, M5);
            acts.push(send("* 1 FETCH (FLAGS (\\Seen))\r\n"));
            acts.push(send(format!("* 2 FETCH (BODY[] {{{}}}\r\n", M6.len())));
            acts.push(send(M6));
            acts.push(send(" UID 6 FLAGS ())\r\n* 4 EXISTS\r\n"));
            acts.extend(body_first_uid(3, 7, b"not asked for"));
            acts.extend(body_first_uid(4, 9, M9));
            acts.push(send(format!("{} OK done\r\n", c.tag)));
            acts
        })
    });
    let (mut appender, server) = start(server).await;
    let got = appender.read_back(&[(9, M9.len() as u64), (5, M5.len() as u64), (6, M6.len() as u64)]).await.unwrap();
    assert_eq!(
        got,
        vec![
            ReadBack { uid: 9, sha256: sha(M9), body_sha256: mailferry_imap::BodyHasher::of(M9), size: M9.len() as u64  },
            ReadBack { uid: 5, sha256: sha(M5), body_sha256: mailferry_imap::BodyHasher::of(M5), size: M5.len() as u64  },
            ReadBack { uid: 6, sha256: sha(M6), body_sha256: mailferry_imap::BodyHasher::of(M6), size: M6.len() as u64  },
        ]
    );
    assert!(got[0].matches(M9.len() as u64, &sha(M9)));
    let seen = commands(appender, server).await;
    let fetches: Vec<&Command> = seen.iter().filter(|c| is_fetch(c)).collect();
    assert_eq!(fetches.len(), 1);
    assert!(fetches[0].line.ends_with("UID FETCH 5:6,9 (UID BODY.PEEK[])"), "{}", fetches[0].line);
}

/// A copy the server sends no body for (it is gone) is absent; so is one answered only
/// with a flag update.
#[tokio::test]
async fn a_missing_copy_is_absent() {
    let server = Server::new("UIDPLUS", |c, _| {
        is_fetch(c).then(|| {
            let mut acts = body_first_uid(1, 5, M5);
            acts.push(send("* 2 FETCH (UID 6 FLAGS (\\Seen))\r\n"));
            acts.push(send(format!("{} OK done\r\n", c.tag)));
            acts
        })
    });
    let (mut appender, _server) = start(server).await;
    let got = appender.read_back(&[(5, M5.len() as u64), (6, 10), (7, 10)]).await.unwrap();
    assert_eq!(got, vec![ReadBack { uid: 5, sha256: sha(M5), body_sha256: mailferry_imap::BodyHasher::of(M5), size: M5.len() as u64  }]);
}

/// RFC 3516: `BINARY.PEEK[]`, answered with a literal8 `~{n}` holding a NUL byte, body
/// before UID. Without BINARY on offer, nothing is sent.
#[tokio::test]
async fn binary_with_a_literal8() {
    const NUL: &[u8] = b"Subject: nul\r\n\r\nab\0cd\r\n";
    let server = Server::new("UIDPLUS BINARY", |c, _| {
        is_fetch(c).then(|| {
            vec![
                send(format!("* 1 FETCH (BINARY[] ~{{{}}}\r\n", NUL.len())),
                send(NUL),
                send(format!(" UID 3)\r\n{} OK done\r\n", c.tag)),
            ]
        })
    });
    let (mut appender, server) = start(server).await;
    assert!(appender.has_binary());
    let got = appender.read_back_binary(&[(3, NUL.len() as u64)]).await.unwrap();
    assert_eq!(got, vec![ReadBack { uid: 3, sha256: sha(NUL), body_sha256: mailferry_imap::BodyHasher::of(NUL), size: NUL.len() as u64  }]);
    let seen = commands(appender, server).await;
    assert!(seen.iter().any(|c| is_fetch(c) && c.line.ends_with("UID FETCH 3 (UID BINARY.PEEK[])")));

    let server = Server::new("UIDPLUS", |_, _| None);
    let (mut appender, server) = start(server).await;
    assert!(!appender.has_binary());
    assert!(matches!(appender.read_back_binary(&[(3, 10)]).await, Err(ImapError::NotSent(_))));
    assert!(!commands(appender, server).await.iter().any(is_fetch));
}

/// A body of another length than what we sent is not our message: it is reported with
/// the length the server sent and the digest of those bytes (hashed in passing, never
/// held), so it cannot match, and the other copies are read as usual.
#[tokio::test]
async fn a_body_of_another_size_is_a_mismatch() {
    let long = vec![b'x'; 200_000];
    let long2 = long.clone();
    let server = Server::new("UIDPLUS", move |c, _| {
        is_fetch(c).then(|| {
            let mut acts = body_first_uid(1, 5, &long2);
            acts.extend(body_first_uid(2, 6, M6));
            acts.push(send(format!("{} OK done\r\n", c.tag)));
            acts
        })
    });
    let (mut appender, _server) = start(server).await;
    let got = appender.read_back(&[(5, M5.len() as u64), (6, M6.len() as u64)]).await.unwrap();
    assert_eq!(got[0], ReadBack { uid: 5, sha256: sha(&long), body_sha256: mailferry_imap::BodyHasher::of(&long), size: 200_000  });
    assert!(!got[0].matches(M5.len() as u64, &sha(M5)));
    assert!(got[1].matches(M6.len() as u64, &sha(M6)));
}

/// A body literal above `max_message_bytes` is refused as soon as it is announced, before
/// a byte of it is read: the server then stalls, and the error comes at once.
#[tokio::test]
async fn a_body_above_the_cap_is_refused_unread() {
    let server = Server::new("UIDPLUS", |c, _| {
        is_fetch(c).then(|| vec![send("* 1 FETCH (UID 5 BODY[] {4000000000}\r\n"), Act::Sleep(Duration::from_secs(30))])
    });
    let (port, _server) = server.start().await;
    let mut opts = common::options(T);
    opts.max_message_bytes = 100_000;
    let session = mailferry_imap::ImapSession::connect(&common::endpoint(port), &opts).await.unwrap();
    let mut appender = session.into_appender();
    let started = Instant::now();
    let err = appender.read_back(&[(5, 30)]).await.unwrap_err();
    assert!(err.to_string().contains("4000000000") && err.to_string().contains("100000"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// NO is an error (after the commands in flight are answered, so the connection stays in
/// step and the next read-back works); BAD is an error.
#[tokio::test]
async fn no_and_bad_are_errors() {
    let server = Server::new("UIDPLUS", |c, n| {
        is_fetch(c).then(|| match n {
            0 => vec![send(format!("{} NO [SERVERBUG] cannot fetch\r\n", c.tag))],
            1 => {
                let mut acts = body_first_uid(300, 300, M5);
                acts.push(send(format!("{} OK done\r\n", c.tag)));
                acts
            }
            2 => {
                let mut acts = body_first_uid(1, 5, M5);
                acts.push(send(format!("{} OK done\r\n", c.tag)));
                acts
            }
            _ => vec![send(format!("{} BAD what\r\n", c.tag))],
        })
    });
    let (mut appender, server) = start(server).await;
    // 300 UIDs: two commands in flight, the first refused.
    let copies: Vec<(u32, u64)> = (1..=300).map(|u| (u, 10)).collect();
    let err = appender.read_back(&copies).await.unwrap_err();
    assert!(matches!(&err, ImapError::Refused { command: "UID FETCH", text } if text.contains("[SERVERBUG] cannot fetch")), "{err}");
    let got = appender.read_back(&[(5, M5.len() as u64)]).await.unwrap();
    assert_eq!(got, vec![ReadBack { uid: 5, sha256: sha(M5), body_sha256: mailferry_imap::BodyHasher::of(M5), size: M5.len() as u64  }]);
    let err = appender.read_back(&[(5, M5.len() as u64)]).await.unwrap_err();
    assert!(matches!(err, ImapError::Protocol(ref t) if t.contains("BAD")), "{err}");
    let seen = commands(appender, server).await;
    let sets: Vec<String> = seen.iter().filter(|c| is_fetch(c)).map(|c| c.line.split(' ').nth(3).unwrap().to_owned()).collect();
    assert_eq!(sets, ["1:256", "257:300", "5", "5"]);
}

/// Many copies go out in chunks of 256 UIDs, pipelined, and all come back.
#[tokio::test]
async fn many_copies_in_chunks() {
    fn body(uid: u32) -> Vec<u8> {
        format!("Subject: {uid}\r\n\r\nbody {uid}\r\n").into_bytes()
    }
    let server = Server::new("UIDPLUS", |c, _| {
        is_fetch(c).then(|| {
            let set = c.line.split(' ').nth(3).unwrap();
            let (lo, hi) = set.split_once(':').unwrap();
            let mut acts: Vec<Act> = (lo.parse::<u32>().unwrap()..=hi.parse().unwrap())
                .flat_map(|u| body_first_uid(u, u, &body(u)))
                .collect();
            acts.push(send(format!("{} OK done\r\n", c.tag)));
            acts
        })
    });
    let (mut appender, server) = start(server).await;
    let copies: Vec<(u32, u64)> = (1..=600).map(|u| (u, body(u).len() as u64)).collect();
    let got = appender.read_back(&copies).await.unwrap();
    assert_eq!(got.len(), 600);
    assert!(got.iter().zip(1..).all(|(r, u)| r.uid == u && r.matches(body(u).len() as u64, &sha(&body(u)))));
    assert_eq!(commands(appender, server).await.iter().filter(|c| is_fetch(c)).count(), 3);
}

/// Nothing to read back, nothing sent; UID 0 (no message has it) is refused unsent.
#[tokio::test]
async fn nothing_to_read_back_sends_nothing() {
    let (mut appender, server) = start(Server::new("UIDPLUS", |_, _| None)).await;
    assert!(appender.read_back(&[]).await.unwrap().is_empty());
    assert!(appender.sizes(&[]).await.unwrap().is_empty());
    assert!(matches!(appender.read_back(&[(0, 10)]).await, Err(ImapError::NotSent(_))));
    assert!(!commands(appender, server).await.iter().any(is_fetch));
}

/// A server that answers with far more FETCH responses than UIDs asked is stopped.
#[tokio::test]
async fn more_fetch_responses_than_asked_is_an_error() {
    let server = Server::new("UIDPLUS", |c, _| {
        is_fetch(c).then(|| {
            let lines: String = (1..=5_000).map(|n| format!("* 1 FETCH (UID {n} FLAGS ())\r\n")).collect();
            vec![send(lines), send(format!("{} OK done\r\n", c.tag))]
        })
    });
    let (mut appender, _server) = start(server).await;
    let err = appender.read_back(&[(5, 10)]).await.unwrap_err();
    assert!(err.to_string().contains("more than 1001 FETCH responses"), "{err}");
}

/// `UID SEARCH HEADER Message-ID "<id>"` with the id quoted: no result, one, many (across
/// two SEARCH responses, sorted, repeats once); an id with a line break is not sent; more
/// than 10,000 results is an error.
#[tokio::test]
async fn search_by_message_id() {
    let server = Server::new("", |c, n| {
        is_search(c).then(|| {
            let t = &c.tag;
            match n {
                0 => vec![send(format!("* SEARCH\r\n{t} OK done\r\n"))],
                1 => vec![send(format!("* 3 EXISTS\r\n* SEARCH 17\r\n{t} OK done\r\n"))],
                2 => vec![send(format!("* SEARCH 9 4\r\n* 2 FETCH (FLAGS (\\Seen))\r\n* SEARCH 12 4\r\n{t} OK done\r\n"))],
                3 => {
                    let half = |r: std::ops::RangeInclusive<u32>| -> String { r.map(|u| format!(" {u}")).collect() };
                    vec![send(format!("* SEARCH{}\r\n* SEARCH{}\r\n{t} OK done\r\n", half(1..=5000), half(5001..=10_001)))]
                }
                _ => vec![send(format!("{t} NO [BADCHARSET] no\r\n"))],
            }
        })
    });
    let (mut appender, server) = start(server).await;
    assert_eq!(appender.search_message_id("<none@x>").await.unwrap(), Vec::<u32>::new());
    assert_eq!(appender.search_message_id("<one@x>").await.unwrap(), vec![17]);
    assert_eq!(appender.search_message_id("<a\"b\\c@x>").await.unwrap(), vec![4, 9, 12]);
    let err = appender.search_message_id("<many@x>").await.unwrap_err();
    assert!(err.to_string().contains("more than 10000 UIDs"), "{err}");
    // The response was read to its end: the connection is in step for the next command.
    assert!(matches!(appender.search_message_id("<a@x>").await, Err(ImapError::Refused { command: "UID SEARCH", .. })));
    let seen = commands(appender, server).await;
    let searches: Vec<&str> = seen.iter().filter(|c| is_search(c)).map(|c| c.line.as_str()).collect();
    assert_eq!(searches.len(), 5);
    assert!(searches[0].ends_with(" UID SEARCH HEADER Message-ID \"<none@x>\""), "{}", searches[0]);
    assert!(searches[2].ends_with(r#" UID SEARCH HEADER Message-ID "<a\"b\\c@x>""#), "{}", searches[2]);

    let server = Server::new("", |c, _| is_search(c).then(|| vec![send(format!("{} NO [BADCHARSET] no\r\n", c.tag))]));
    let (mut appender, server) = start(server).await;
    for bad in ["<a\r\nb@x>", "<a\nb@x>", "<a\0b@x>", "", "<é@x>"] {
        assert!(matches!(appender.search_message_id(bad).await, Err(ImapError::NotSent(_))), "{bad:?}");
    }
    assert!(matches!(appender.search_message_id("<a@x>").await, Err(ImapError::Refused { command: "UID SEARCH", .. })));
    assert_eq!(commands(appender, server).await.iter().filter(|c| is_search(c)).count(), 1, "only the valid id was sent");
}

/// `UID FETCH <set> (UID RFC822.SIZE)`: sizes in the caller's order, a UID gone absent,
/// UIDs not asked for and flag updates ignored.
#[tokio::test]
async fn sizes_of_candidates() {
    let server = Server::new("", |c, _| {
        is_fetch(c).then(|| {
            vec![send(format!(
                "* 1 FETCH (UID 4 RFC822.SIZE 100)\r\n* 2 FETCH (RFC822.SIZE 250 UID 12)\r\n* 3 FETCH (UID 13 RFC822.SIZE 7)\r\n\
                 * 2 FETCH (FLAGS (\\Seen))\r\n{} OK done\r\n",
                c.tag
            ))]
        })
    });
    let (mut appender, server) = start(server).await;
    assert_eq!(appender.sizes(&[12, 4, 9]).await.unwrap(), vec![(12, 250), (4, 100)]);
    let seen = commands(appender, server).await;
    assert!(seen.iter().any(|c| is_fetch(c) && c.line.ends_with("UID FETCH 4,9,12 (UID RFC822.SIZE)")));
}
