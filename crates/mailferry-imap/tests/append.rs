//! APPEND against a scripted server: what the server confirmed is what we record, and
//! nothing the server says makes us allocate or wait without bound.

mod common;

use std::time::Duration;

use common::{send, Act, Server};
use mailferry_imap::{AppendBody, AppendMessage, AppendOutcome, ImapError, ImapSession};

const T: Duration = Duration::from_secs(5);

fn msg(n: usize) -> AppendMessage {
    AppendMessage {
        body: AppendBody::Memory(format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes()),
        flags: vec![],
        internal_date: None,
        has_nul: false,
    }
}

fn msgs(n: usize) -> Vec<AppendMessage> {
    (1..=n).map(msg).collect()
}

/// RFC 4315 §3: a set describing more UIDs than the APPEND carried is not believed, and is
/// never expanded; the tagged OK still confirms the message.
#[tokio::test]
async fn an_appenduid_beyond_the_batch_costs_only_the_uid() {
    let (port, server) = Server::new("LITERAL+ UIDPLUS", |c, _| {
        (c.name == "APPEND").then(|| vec![send(format!("{} OK [APPENDUID 9 1:4294967295] stored\r\n", c.tag))])
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let outcomes = appender.append_batch(&msgs(1)).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Appended { uid: None, uid_validity: Some(7) }]);
    appender.logout().await;
    server.await.unwrap();
}

/// MULTIAPPEND (RFC 3502) of two messages answered with one UID for both: no UIDs.
#[tokio::test]
async fn a_repeated_uid_is_not_given_to_two_messages() {
    let (port, server) = Server::new("LITERAL+ UIDPLUS MULTIAPPEND", |c, _| {
        (c.name == "APPEND").then(|| vec![send(format!("{} OK [APPENDUID 9 5,5] stored\r\n", c.tag))])
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let outcomes = appender.append_batch(&msgs(2)).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Appended { uid: None, uid_validity: Some(7) }; 2]);
    drop(appender);
    let seen = server.await.unwrap();
    assert_eq!(seen.iter().filter(|c| c.name == "APPEND").count(), 1, "one MULTIAPPEND");
    assert_eq!(seen.last().unwrap().literals.len(), 2);

    // And a believable one is used.
    let (port, server) = Server::new("LITERAL+ UIDPLUS MULTIAPPEND", |c, _| {
        (c.name == "APPEND").then(|| vec![send(format!("{} OK [APPENDUID 9 5:6] stored\r\n", c.tag))])
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let outcomes = appender.append_batch(&msgs(2)).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            AppendOutcome::Appended { uid: Some(5), uid_validity: Some(9) },
            AppendOutcome::Appended { uid: Some(6), uid_validity: Some(9) }
        ]
    );
    drop(appender);
    server.await.unwrap();
}

/// async-imap sizes its buffer by an announced literal before the bytes arrive: a greeting
/// announcing half a gigabyte is refused at once, as the server's fault.
#[tokio::test]
async fn a_huge_literal_before_login_is_refused_without_allocating() {
    let mut server = Server::new("", |_, _| None);
    server.greeting = b"* OK {536870000}\r\n".to_vec();
    let (port, _server) = server.start().await;
    let started = std::time::Instant::now();
    let err = ImapSession::connect(&common::endpoint(port), &common::options(T)).await.unwrap_err();
    assert!(matches!(err, ImapError::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("literal of 536870000 bytes"), "{err}");
    assert!(started.elapsed() < T);
}

/// An endless CAPABILITY line is cut off at the framing limit, not buffered.
#[tokio::test]
async fn an_endless_capability_line_is_refused() {
    let (port, _server) = Server::new("", |c, _| {
        (c.name == "CAPABILITY").then(|| {
            let mut acts = vec![send("* CAPABILITY IMAP4rev1")];
            acts.extend((0..64).map(|_| send(" ABCD".repeat(13_000))));
            acts.push(Act::Sleep(Duration::from_secs(10)));
            acts
        })
    })
    .start()
    .await;
    let err = ImapSession::connect(&common::endpoint(port), &common::options(T)).await.unwrap_err();
    assert!(err.to_string().contains("line longer than"), "{err}");
}

/// Untagged data with literals during an APPEND is skipped; an oversized one is refused.
#[tokio::test]
async fn untagged_literals_are_skipped_within_bounds() {
    let (port, server) = Server::new("LITERAL+", |c, n| {
        (c.name == "APPEND").then(|| match n {
            0 => vec![send(format!("* 1 FETCH (X {{3}}\r\nabc Y {{2}}\r\nde)\r\n{} OK done\r\n", c.tag))],
            _ => vec![send(format!("* 1 FETCH (X {{4294967296}}\r\n{} OK done\r\n", c.tag))],
        })
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let outcomes = appender.append_batch(&msgs(1)).await.unwrap();
    assert_eq!(outcomes, vec![AppendOutcome::Appended { uid: None, uid_validity: Some(7) }]);
    let err = appender.append_batch(&msgs(1)).await.unwrap_err();
    assert!(err.to_string().contains("unrequested literal of 4294967296 bytes"), "{err}");
    drop(appender);
    server.await.unwrap();
}

/// The tags of the APPENDs received so far, for a script that answers some of them later.
fn tag_log() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    std::sync::Arc::default()
}

/// Regression (issue 13): a LITERAL+ pipeline (RFC 7888) of five APPENDs; the server
/// confirms the first three, then the connection drops. Those three are stored at the
/// destination: the error must carry their outcomes, and leave the other two unknown.
#[tokio::test]
async fn confirmed_appends_survive_a_later_failure() {
    let tags = tag_log();
    let log = tags.clone();
    let (port, _server) = Server::new("LITERAL+ UIDPLUS", move |c, n| {
        (c.name == "APPEND").then(|| {
            log.lock().unwrap().push(c.tag.clone());
            if n < 4 {
                return vec![];
            }
            let t = log.lock().unwrap().clone();
            vec![
                send(format!("{} OK [APPENDUID 9 101] a\r\n{} OK [APPENDUID 9 102] b\r\n", t[0], t[1])),
                send(format!("{} OK [APPENDUID 9 103] c\r\n", t[2])),
                Act::Close,
            ]
        })
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let err = appender.append_batch(&msgs(5)).await.unwrap_err();
    let appended = |uid| Some(AppendOutcome::Appended { uid: Some(uid), uid_validity: Some(9) });
    assert_eq!(err.outcomes, vec![appended(101), appended(102), appended(103), None, None]);
    assert!(matches!(err.error, ImapError::Closed), "{:?}", err.error);
    assert_eq!(err.confirmed(), 3);
    assert!(err.to_string().contains("3 of 5 messages confirmed"), "{err}");
    assert_eq!(tags.lock().unwrap().len(), 5);
}

/// The same with synchronising literals, one APPEND at a time: two confirmed, the third
/// sent and never answered.
#[tokio::test]
async fn confirmed_synchronising_appends_survive_a_later_failure() {
    let (port, _server) = Server::new("UIDPLUS", move |c, n| {
        (c.name == "APPEND").then(|| match n {
            0 | 1 => vec![send(format!("{} OK [APPENDUID 9 {}] stored\r\n", c.tag, 201 + n))],
            _ => vec![Act::Close],
        })
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let err = appender.append_batch(&msgs(4)).await.unwrap_err();
    let appended = |uid| Some(AppendOutcome::Appended { uid: Some(uid), uid_validity: Some(9) });
    assert_eq!(err.outcomes, vec![appended(201), appended(202), None, None]);
}

/// A refused MULTIAPPEND (RFC 3502) falls back to single APPENDs; what those confirmed
/// before the drop, and the message refused before sending, are kept, in batch order.
#[tokio::test]
async fn the_fallback_after_a_refused_multiappend_keeps_its_outcomes() {
    let (port, _server) = Server::new("LITERAL+ MULTIAPPEND", move |c, n| {
        (c.name == "APPEND").then(|| match n {
            0 => vec![send(format!("{} NO [LIMIT] too many at once\r\n", c.tag))],
            1 => vec![send(format!("{} OK stored\r\n", c.tag))],
            2 => vec![send(format!("{} NO [TOOBIG] no\r\n", c.tag))],
            _ => vec![Act::Close],
        })
    })
    .start()
    .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let mut batch = msgs(4);
    batch[1].body = AppendBody::Memory(Vec::new());
    let err = appender.append_batch(&batch).await.unwrap_err();
    assert_eq!(
        err.outcomes,
        vec![
            Some(AppendOutcome::Appended { uid: None, uid_validity: Some(7) }),
            Some(AppendOutcome::Refused("message is empty".into())),
            Some(AppendOutcome::Refused("[TOOBIG] no".into())),
            None
        ]
    );
    assert_eq!(err.confirmed(), 1);
}

/// A MULTIAPPEND is one transaction: a drop before its tagged reply leaves every outcome
/// unknown (nothing is claimed either way).
#[tokio::test]
async fn a_multiappend_without_its_reply_is_unknown() {
    let (port, _server) = Server::new("LITERAL+ MULTIAPPEND", move |c, _| (c.name == "APPEND").then(|| vec![Act::Close]))
        .start()
        .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let err = appender.append_batch(&msgs(3)).await.unwrap_err();
    assert_eq!(err.outcomes, vec![None, None, None]);
}

/// A job whose target flags include `\Deleted` (any case) is refused before connecting;
/// and a message carrying it is refused before a byte of it is sent.
#[tokio::test]
async fn deleted_is_refused_as_a_target_flag() {
    let mut ep = common::endpoint(1);
    ep.flags = vec!["\\Seen".into(), "\\dELETED".into()];
    let err = ImapSession::connect(&ep, &common::options(T)).await.unwrap_err();
    assert!(matches!(err, ImapError::InvalidFlag(_)), "{err:?}");
    assert_eq!(err.class(), mailferry_model::ErrorClass::Fatal);
    assert!(err.to_string().contains("\\dELETED cannot be set on copied messages"), "{err}");

    let (port, server) = Server::new("LITERAL+", |c, _| (c.name == "APPEND").then(|| vec![send(format!("{} OK\r\n", c.tag))]))
        .start()
        .await;
    let mut appender = common::connect(port, T).await.into_appender();
    let mut m = msg(1);
    m.flags = vec!["\\Deleted".into()];
    let outcomes = appender.append_batch(&[m]).await.unwrap();
    assert!(matches!(&outcomes[0], AppendOutcome::Refused(why) if why.contains("cannot be set on copied messages")), "{outcomes:?}");
    appender.logout().await;
    assert!(!server.await.unwrap().iter().any(|c| c.name == "APPEND"));
}
