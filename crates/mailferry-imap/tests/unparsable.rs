//! Replies async-imap's parser (imap-proto 0.17.0) panics on, found by fuzzing
//! (fuzz/fuzz_targets/imap_capability.rs): a response code followed directly by a non-ASCII
//! byte is sliced inside that character. While async-imap reads (greeting, login,
//! CAPABILITY, SELECT), such a reply must end the connection with a protocol error, never
//! a panic.

mod common;

use std::time::Duration;

use common::{endpoint, options, send, Server};
use mailferry_imap::{ImapError, ImapSession};

const T: Duration = Duration::from_secs(5);

/// Connect; a panic fails the test. A session, should the parser learn to read the reply,
/// or a protocol error are both fine.
async fn connect_to(server: Server) {
    let (port, _server) = server.start().await;
    match ImapSession::connect(&endpoint(port), &options(T)).await {
        Ok(_) => {}
        Err(ImapError::Protocol(why)) => eprintln!("protocol error: {why}"),
        Err(e) => panic!("not a protocol error: {e:?}"),
    }
}

/// Regression (issue 13, fuzzing): each of these panicked inside `ImapSession::connect`.
#[tokio::test]
async fn a_reply_the_parser_cannot_handle_is_a_protocol_error() {
    // In the greeting: a valid UTF-8 character right after the code, and a byte that is not UTF-8.
    for greeting in [&b"* OK [ALERT]\xc3\xa9 welcome\r\n"[..], b"* OK [CAPABILITY IMAP4rev1]\xff\r\n"] {
        let mut server = Server::new("", |_, _| None);
        server.greeting = greeting.to_vec();
        connect_to(server).await;
    }
    // In the tagged reply to LOGIN, and in an untagged reply to SELECT.
    let login = Server::new("", |c, _| (c.name == "LOGIN").then(|| vec![send(format!("{} OK [ALERT]\u{fc}\r\n", c.tag))]));
    connect_to(login).await;
    let select = Server::new("", |c, _| {
        (c.name == "SELECT").then(|| vec![send(format!("* OK [UIDVALIDITY 7]\u{e9}\r\n{} OK selected\r\n", c.tag))])
    });
    connect_to(select).await;
}
