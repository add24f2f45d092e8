//! The session against a scripted POP3 server on loopback (`common`): login, TLS, UIDL
//! and pipelined, streamed RETR.

mod common;

use common::*;
use mailferry_model::{ErrorClass, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_pop3::wire::{self, stuff};
use mailferry_pop3::{Pop3Error, Pop3Options, Pop3Session, RespCode};
use secrecy::SecretString;

#[tokio::test]
async fn uidl_and_pipelined_streamed_retr() {
    let big: Vec<u8> = (0..20_000).flat_map(|i| format!(".line {i}\r\n..\r\n.\r\n").into_bytes()).collect();
    let small = b"Subject: hi\r\n\r\n.hidden dot\r\n".to_vec();
    let mut steps = login("USER\r\nUIDL\r\nPIPELINING\r\n");
    // The listing is bounded by the message count: STAT first (RFC 1939 §8).
    steps.extend(stat(5));
    steps.extend([
        expect("UIDL"),
        send("+OK 5 messages\r\n1 aaa\r\n2 bbb\r\n3 aaa\r\n4 bad uid\r\n5 ccc\r\n.\r\n"),
        // All three RETRs arrive before the server answers any: they were pipelined.
        expect("RETR 1"),
        expect("RETR 2"),
        expect("RETR 5"),
        send([b"+OK\r\n".as_slice(), &stuff(&big), b"-ERR [SYS/PERM] gone\r\n+OK\r\n", &stuff(&small)].concat()),
        expect("DELE 1"),
        send("+OK\r\n"),
        expect("QUIT"),
        send("+OK bye\r\n"),
    ]);
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    assert!(s.capabilities().pipelining && s.capabilities().answered);

    let listing = s.uidl().await.unwrap();
    assert_eq!(listing.entries, vec![(2, "bbb".to_string()), (5, "ccc".to_string())]);
    assert_eq!(listing.duplicates, vec![("aaa".to_string(), vec![1, 3])]);
    assert_eq!(listing.invalid.len(), 1);
    assert_eq!(listing.invalid[0].0, 4);

    s.send_retr_many(&[1, 2, 5]).await.unwrap();
    assert_eq!(s.outstanding(), 3);
    s.read_retr_status().await.unwrap();
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = s.read_retr_chunk().await.unwrap() {
        assert!(!chunk.is_empty() && chunk.len() <= 64 * 1024);
        got.extend_from_slice(chunk);
        chunks += 1;
    }
    assert!(chunks > 1);
    assert_eq!(got, big);
    let err = s.read_retr_status().await.unwrap_err();
    assert!(matches!(err, Pop3Error::Server { command: "RETR", code: Some(RespCode::SysPerm), .. }), "{err}");
    s.read_retr_status().await.unwrap();
    let mut got = Vec::new();
    while let Some(chunk) = s.read_retr_chunk().await.unwrap() {
        got.extend_from_slice(chunk);
    }
    assert_eq!(got, small);
    s.dele(1).await.unwrap();
    s.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn legacy_server_without_capa() {
    let steps = vec![
        send("+OK POP3 ready\r\n"),
        expect("CAPA"),
        send("-ERR unknown command\r\n"),
        expect("USER user"),
        send("+OK\r\n"),
        expect(format!("PASS {PASSWORD}")),
        send("+OK\r\n"),
        expect("CAPA"),
        send("ERR what?\r\n"),
        expect("STAT"),
        send("+OK 2 320\r\n"),
        expect("LIST"),
        send("+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
        expect("RETR 1"),
        send("+OK\r\n.\r\n"),
    ];
    let (port, server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    assert!(!s.capabilities().answered);
    assert_eq!(s.stat().await.unwrap(), (2, 320));
    assert_eq!(s.list().await.unwrap(), vec![(1, 120), (2, 200)]);
    s.send_retr(1).await.unwrap();
    // No PIPELINING: a second RETR before the first is read is refused locally.
    assert!(matches!(s.send_retr(2).await, Err(Pop3Error::Misuse(_))));
    s.read_retr_status().await.unwrap();
    assert_eq!(s.read_retr_chunk().await.unwrap(), None, "an empty message");
    drop(s);
    server.await.unwrap();
}

#[tokio::test]
async fn close_mid_retr_is_closed_and_the_session_unusable() {
    let mut steps = login("USER\r\n");
    steps.extend([expect("RETR 1"), send("+OK\r\npartial line\r\nmore"), Step::Close]);
    let (port, _server) = serve(steps, None).await;
    let mut s = connect(port).await.unwrap();
    s.send_retr(1).await.unwrap();
    s.read_retr_status().await.unwrap();
    let mut got = Vec::new();
    let err = loop {
        match s.read_retr_chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(chunk),
            Ok(None) => panic!("a truncated message must not look complete"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Pop3Error::Closed { .. }), "{err}");
    assert_eq!(got, b"partial line\r\nmore");
    assert_eq!(err.class(), ErrorClass::Retryable);
    assert!(matches!(s.noop().await, Err(Pop3Error::Unusable)));
}

#[tokio::test]
async fn message_larger_than_the_limit() {
    let mut steps = login("USER\r\n");
    steps.extend([expect("RETR 1"), send([b"+OK\r\n".as_slice(), &stuff(&[b'x'; 100])].concat())]);
    let (port, _server) = serve(steps, None).await;
    let o = Pop3Options { max_message_bytes: 10, ..opts() };
    let mut s = Pop3Session::connect(&endpoint(port, Security::None, Pop3Auth::User), &o).await.unwrap();
    let err = s.retr_to_vec(1).await.unwrap_err();
    assert!(matches!(err, Pop3Error::MessageTooLarge { limit: 10 }), "{err}");
    assert!(matches!(s.noop().await, Err(Pop3Error::Unusable)));
}

#[tokio::test]
async fn never_ending_line_is_line_too_long() {
    let (port, _server) = serve(vec![send("+OK "), send(vec![b'a'; 100_000])], None).await;
    let err = connect(port).await.unwrap_err();
    assert!(matches!(err, Pop3Error::LineTooLong { limit: 8192 }), "{err}");
}

async fn login_refused(reply: &str) -> (Pop3Error, Vec<String>) {
    let steps = vec![
        send("+OK ready\r\n"),
        expect("CAPA"),
        send("+OK\r\nUSER\r\n.\r\n"),
        expect("USER user"),
        send("+OK\r\n"),
        expect(format!("PASS {PASSWORD}")),
        send(reply),
    ];
    let (port, server) = serve(steps, None).await;
    let err = connect(port).await.unwrap_err();
    (err, server.await.unwrap())
}

#[tokio::test]
async fn in_use_is_retryable_and_auth_is_fatal() {
    let (err, _) = login_refused("-ERR [IN-USE] mailbox locked\r\n").await;
    assert!(matches!(err, Pop3Error::AuthFailed { code: Some(RespCode::InUse), .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Retryable);

    for reply in ["-ERR [AUTH] invalid credentials\r\n", "-ERR bad login\r\n"] {
        let (err, _) = login_refused(reply).await;
        assert!(matches!(err, Pop3Error::AuthFailed { mechanism: "USER", .. }), "{err}");
        assert_eq!(err.class(), ErrorClass::Fatal);
        assert!(!err.to_string().contains(PASSWORD) && !format!("{err:?}").contains(PASSWORD));
    }
}

#[tokio::test]
async fn refused_stls_never_sends_credentials() {
    let steps = vec![
        send("+OK ready\r\n"),
        expect("CAPA"),
        send("+OK\r\nUSER\r\n.\r\n"),
        // Tried although CAPA does not list STLS.
        expect("STLS"),
        send("-ERR not here\r\n"),
    ];
    let (port, server) = serve(steps, None).await;
    let ep = endpoint(port, Security::Starttls, Pop3Auth::Auto);
    let err = Pop3Session::connect(&ep, &opts()).await.unwrap_err();
    assert!(matches!(err, Pop3Error::StlsUnavailable { .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
    let seen = server.await.unwrap();
    assert!(seen.iter().all(|l| !l.starts_with("USER") && !l.starts_with("PASS")), "{seen:?}");
}

#[tokio::test]
async fn plaintext_is_refused_unless_allowed() {
    let (port, server) = serve(vec![], None).await;
    let mut ep = endpoint(port, Security::None, Pop3Auth::User);
    ep.tls.allow_plaintext = false;
    let err = Pop3Session::connect(&ep, &opts()).await.unwrap_err();
    assert!(matches!(err, Pop3Error::PlaintextRefused), "{err}");
    server.abort();
}

#[tokio::test]
async fn sasl_plain_apop_and_xoauth2() {
    // Auto picks SASL PLAIN when advertised, with the initial response (RFC 5034).
    let plain = wire::sasl_plain("user", PASSWORD);
    let steps = vec![
        send("+OK ready\r\n"),
        expect("CAPA"),
        send("+OK\r\nSASL PLAIN\r\nUSER\r\n.\r\n"),
        expect(format!("AUTH PLAIN {}", plain.as_str())),
        send("+OK\r\n"),
        expect("CAPA"),
        send("-ERR\r\n"),
    ];
    let (port, server) = serve(steps, None).await;
    let s = connect(port).await.unwrap();
    assert!(s.capabilities().has_sasl("PLAIN"), "pre-login CAPA kept when the later one fails");
    drop(s);
    server.await.unwrap();

    // Auto picks APOP when CAPA offers neither USER nor PLAIN but the greeting has a stamp.
    let stamp = "<1896.697170952@dbc.mtview.ca.us>";
    let steps = vec![
        send(format!("+OK ready {stamp}\r\n")),
        expect("CAPA"),
        send("+OK\r\nUIDL\r\n.\r\n"),
        expect(format!("APOP user {}", wire::apop_digest(stamp, PASSWORD))),
        send("+OK\r\n"),
        expect("CAPA"),
        send("+OK\r\nUIDL\r\n.\r\n"),
    ];
    let (port, server) = serve(steps, None).await;
    connect(port).await.unwrap();
    server.await.unwrap();

    // A long XOAUTH2 token goes after the empty challenge; an error challenge gets an
    // empty line, then the -ERR is reported with the decoded detail.
    let token = "t".repeat(400);
    let mut ep = endpoint(0, Security::None, Pop3Auth::Xoauth2);
    ep.secret = SecretString::from(token.clone());
    let steps = vec![
        send("+OK ready\r\n"),
        expect("CAPA"),
        send("+OK\r\nSASL XOAUTH2\r\n.\r\n"),
        expect("AUTH XOAUTH2"),
        send("+ \r\n"),
        expect(wire::sasl_xoauth2("user", &token).as_str()),
        send("+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"),
        expect(""),
        send("-ERR authentication failed\r\n"),
    ];
    let (port, server) = serve(steps, None).await;
    ep.port = port;
    let err = Pop3Session::connect(&ep, &opts()).await.unwrap_err();
    assert!(matches!(err, Pop3Error::AuthFailed { mechanism: "XOAUTH2", .. }), "{err}");
    assert!(err.to_string().contains("401") && !err.to_string().contains(&token), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn implicit_tls_and_stls_to_an_ip_address() {
    let cert = cert();
    let trusted = |mut ep: Pop3Endpoint| {
        ep.tls = TlsOptions { extra_roots_pem: Some(cert.pem.clone().into_bytes()), ..Default::default() };
        ep
    };

    let mut steps = vec![Step::Tls];
    steps.extend(login("USER\r\nUIDL\r\n"));
    let (port, server) = serve(steps, Some(cert.server.clone())).await;
    let ep = trusted(endpoint(port, Security::Tls, Pop3Auth::Auto));
    let s = Pop3Session::connect(&ep, &opts()).await.unwrap();
    assert!(s.is_tls());
    drop(s);
    server.await.unwrap();

    // STLS, then CAPA again under TLS (RFC 2595 §4), then login.
    let mut steps = vec![send("+OK ready\r\n"), expect("CAPA"), send("+OK\r\nSTLS\r\n.\r\n"), expect("STLS"), send("+OK go\r\n"), Step::Tls];
    steps.extend(login("USER\r\n").into_iter().skip(1));
    let (port, server) = serve(steps, Some(cert.server.clone())).await;
    let ep = trusted(endpoint(port, Security::Starttls, Pop3Auth::Auto));
    let s = Pop3Session::connect(&ep, &opts()).await.unwrap();
    assert!(s.is_tls() && s.capabilities().user && !s.capabilities().stls);
    drop(s);
    server.await.unwrap();

    // An untrusted certificate is fatal.
    let (port, _server) = serve(vec![Step::Tls], Some(cert.server.clone())).await;
    let err = Pop3Session::connect(&endpoint(port, Security::Tls, Pop3Auth::Auto), &opts()).await.unwrap_err();
    assert!(matches!(err, Pop3Error::Tls { certificate: true, .. }), "{err}");
    assert_eq!(err.class(), ErrorClass::Fatal);
}
