//! The raw fleet ceiling (issue 18.4): what this machine can move with Dovecot on it when
//! nothing but the protocols runs. Every mailbox at once (at most `parallel` at a time):
//! pipelined RETR (16 in flight) feeding MULTIAPPEND batches of 64 on one connection per
//! mailbox, retrieval and appending overlapped, no ledger, no digests, no read-back.

use std::sync::Arc;
use std::time::Instant;

use mailferry_imap::{AppendBody, AppendMessage, ImapOptions, ImapSession};
use mailferry_model::{Credential, ImapAuth, ImapEndpoint, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_pop3::{Pop3Options, Pop3Session};
use mailferry_tests::Dovecot;
use secrecy::SecretString;
use tokio::sync::{mpsc, Semaphore};

fn plain() -> TlsOptions {
    TlsOptions { allow_plaintext: true, ..TlsOptions::default() }
}

/// One mailbox: `src` drained into `dst`; the number of messages moved.
async fn one(pop3_port: u16, imap_port: u16, src: String, dst: String) -> usize {
    let pop_ep = Pop3Endpoint {
        host: "127.0.0.1".into(),
        port: pop3_port,
        security: Security::None,
        username: src,
        secret: SecretString::from("pw"),
        auth: Pop3Auth::Auto,
        tls: plain(),
    };
    let imap_ep = ImapEndpoint {
        host: "127.0.0.1".into(),
        port: imap_port,
        security: Security::None,
        username: dst,
        credential: Credential::Password(SecretString::from("pw")),
        auth: ImapAuth::Auto,
        tls: plain(),
        folder: "INBOX".into(),
        flags: vec![],
    };
    let (tx, mut rx) = mpsc::channel::<Vec<AppendMessage>>(2);
    let append = tokio::spawn(async move {
        let mut appender = ImapSession::connect(&imap_ep, &ImapOptions::default()).await.expect("IMAP").into_appender();
        let mut n = 0;
        while let Some(batch) = rx.recv().await {
            appender.append_batch(&batch).await.expect("APPEND");
            n += batch.len();
        }
        appender.logout().await;
        n
    });
    let mut pop = Pop3Session::connect(&pop_ep, &Pop3Options::default()).await.expect("POP3");
    let numbers: Vec<u32> = pop.uidl().await.expect("UIDL").entries.iter().map(|(n, _)| *n).collect();
    let mut batch = Vec::with_capacity(64);
    for window in numbers.chunks(16) {
        pop.send_retr_many(window).await.expect("RETR");
        for _ in window {
            pop.read_retr_status().await.expect("RETR status");
            let mut body = Vec::new();
            while let Some(chunk) = pop.read_retr_chunk().await.expect("RETR body") {
                body.extend_from_slice(&chunk);
            }
            batch.push(AppendMessage { body: AppendBody::Memory(body), flags: vec![], internal_date: None, has_nul: false });
            if batch.len() == 64 {
                tx.send(std::mem::take(&mut batch)).await.expect("appender");
            }
        }
    }
    if !batch.is_empty() {
        tx.send(batch).await.expect("appender");
    }
    drop(tx);
    pop.quit().await.expect("QUIT");
    append.await.expect("append task")
}

/// Every `s{i}` drained into a fresh `{prefix}{i}`, at most `parallel` mailboxes at once:
/// seconds for all.
pub async fn run(lab: &Dovecot, mailboxes: usize, parallel: usize, prefix: &str) -> f64 {
    for i in 0..mailboxes {
        lab.add_user(&format!("{prefix}{i}"), "pw");
    }
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..mailboxes)
        .map(|i| {
            let gate = Arc::clone(&gate);
            let (p, m) = (lab.pop3_port(), lab.imap_port());
            let (src, dst) = (format!("s{i}"), format!("{prefix}{i}"));
            tokio::spawn(async move {
                let _slot = gate.acquire_owned().await.expect("gate");
                one(p, m, src, dst).await
            })
        })
        .collect();
    let mut moved = 0;
    for t in tasks {
        moved += t.await.expect("mailbox task");
    }
    let secs = started.elapsed().as_secs_f64();
    for i in 0..mailboxes {
        let _ = std::fs::remove_dir_all(lab.home(&format!("{prefix}{i}")));
    }
    assert!(moved > 0);
    secs
}
