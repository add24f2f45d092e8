//! Raw protocol ceilings on the same lab: what Dovecot can serve and accept with the best
//! pipelining our clients know, with nothing else (no ledger, no digests, no read-back).

use std::time::Instant;

use mailferry_imap::{AppendBody, AppendMessage, ImapOptions, ImapSession};
use mailferry_model::{ImapAuth, ImapEndpoint, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_pop3::{Pop3Options, Pop3Session};
use mailferry_tests::Dovecot;
use secrecy::SecretString;

fn plain() -> TlsOptions {
    TlsOptions { allow_plaintext: true, ..TlsOptions::default() }
}

pub fn pop3(lab: &Dovecot, user: &str) -> Pop3Endpoint {
    Pop3Endpoint {
        host: "127.0.0.1".into(),
        port: lab.pop3_port(),
        security: Security::None,
        username: user.into(),
        secret: SecretString::from("bench-pw"),
        auth: Pop3Auth::Auto,
        tls: plain(),
    }
}

pub fn imap(lab: &Dovecot, user: &str) -> ImapEndpoint {
    ImapEndpoint {
        host: "127.0.0.1".into(),
        port: lab.imap_port(),
        security: Security::None,
        username: user.into(),
        credential: mailferry_model::Credential::Password(SecretString::from("bench-pw")),
        auth: ImapAuth::Auto,
        tls: plain(),
        folder: "INBOX".into(),
        flags: vec![],
    }
}

/// UIDL, then every message by RETR, 16 in flight: seconds.
pub async fn pop3_retr(lab: &Dovecot, n: usize) -> f64 {
    let started = Instant::now();
    let mut pop = Pop3Session::connect(&pop3(lab, "src"), &Pop3Options::default()).await.expect("connect");
    let listing = pop.uidl().await.expect("UIDL");
    let numbers: Vec<u32> = listing.entries.iter().map(|(n, _)| *n).collect();
    for window in numbers.chunks(16) {
        pop.send_retr_many(window).await.expect("RETR");
        for _ in window {
            pop.read_retr_status().await.expect("RETR status");
            while pop.read_retr_chunk().await.expect("RETR body").is_some() {}
        }
    }
    pop.quit().await.expect("QUIT");
    assert_eq!(numbers.len(), n);
    started.elapsed().as_secs_f64()
}

/// The source's messages (read from its maildir beforehand, not timed) appended in
/// MULTIAPPEND batches of 64 into one folder of a fresh user over `connections`
/// connections at once, each taking the next batch: seconds.
pub async fn imap_append(lab: &Dovecot, user: &str, connections: usize) -> f64 {
    lab.add_user(user, "bench-pw");
    let msgs: Vec<AppendMessage> = lab
        .messages("src")
        .into_iter()
        .map(|m| AppendMessage { body: AppendBody::Memory(m), flags: vec![], internal_date: None, has_nul: false })
        .collect();
    let n = msgs.len();
    let batches = std::sync::Mutex::new(msgs.chunks(64).collect::<Vec<_>>().into_iter());
    let started = Instant::now();
    let lanes = (0..connections.max(1)).map(|_| async {
        let mut appender = ImapSession::connect(&imap(lab, user), &ImapOptions::default()).await.expect("connect").into_appender();
        loop {
            let next = batches.lock().expect("lock").next();
            let Some(batch) = next else { break };
            appender.append_batch(batch).await.expect("APPEND");
        }
        appender.logout().await;
    });
    futures::future::join_all(lanes).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(lab.message_count(user), n);
    let _ = std::fs::remove_dir_all(lab.home(user));
    secs
}
