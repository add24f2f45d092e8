//! Verified means read back (issue 14): a copy is `verified` only once its bytes, read back
//! from the destination, match what was sent; only verified copies are deleted at the
//! source. The destination here lies on the way back: a proxy rewrites bytes the server
//! sends (FETCH bodies), so APPENDs land intact but read-backs differ.

use std::time::Duration;

use mailferry_engine::{run_job, Outcome};
use mailferry_model::{DeletePolicy, LedgerState, VerifyLevel};
use mailferry_store::Store;
use mailferry_tests::fake::{FakeConfig, FakePop3};
use mailferry_tests::normalize_crlf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::lying::{config, job, setup};

/// Forwards to `target`, replacing `from` with `to` (same length) in what the server sends.
async fn rewriting_proxy(target: u16, from: &'static [u8], to: &'static [u8]) -> u16 {
    proxy(target, from, to, false).await
}

/// Forwards to `target`, replacing `from` with `to` in what the client sends (`upstream`)
/// or in what the server sends.
async fn proxy(target: u16, from: &'static [u8], to: &'static [u8], upstream: bool) -> u16 {
    assert_eq!(from.len(), to.len());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else { continue };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            // `sr → cw` is the rewritten direction.
            let (mut cr, mut cw, mut sr, mut sw) = if upstream { (sr, sw, cr, cw) } else { (cr, cw, sr, sw) };
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                // A marker split across reads is still found: see `keep` below.
                let mut pending: Vec<u8> = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    pending.extend_from_slice(&buf[..n]);
                    let mut i = 0;
                    while i + from.len() <= pending.len() {
                        if &pending[i..i + from.len()] == from {
                            pending[i..i + from.len()].copy_from_slice(to);
                            i += from.len();
                        } else {
                            i += 1;
                        }
                    }
                    // Hold back only a tail that could start the marker.
                    let keep = (1..from.len().min(pending.len() + 1))
                        .rev()
                        .find(|&k| pending[pending.len() - k..] == from[..k])
                        .unwrap_or(0);
                    let out: Vec<u8> = pending.drain(..pending.len() - keep).collect();
                    if cw.write_all(&out).await.is_err() {
                        break;
                    }
                }
                let _ = cw.write_all(&pending).await;
                let _ = cw.shutdown().await;
            });
        }
    });
    port
}

fn mail(i: usize, marked: bool) -> Vec<u8> {
    let word = if marked { "ORIGINAL" } else { "harmless" };
    format!("Message-ID: <v{i}@fake>\r\nSubject: v{i}\r\n\r\nbody {i} {word}\r\n").into_bytes()
}

#[tokio::test]
async fn a_copy_that_reads_back_different_is_not_verified_and_not_deleted() {
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..6).map(|i| mail(i, i % 3 == 0)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs.clone()));
    let proxy = rewriting_proxy(s.dovecot.imap_port(), b"ORIGINAL", b"REWRITTN").await;
    let mut drain = job(&s, fake.port(), DeletePolicy::AfterVerified);
    if let mailferry_engine::Target::Imap(t) = &mut drain.target {
        t.port = proxy;
    }
    let report = run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Partial, "{report:?}");
    let mut failed: Vec<&str> = report.summary.failures.iter().map(|f| f.uidl.as_str()).collect();
    failed.sort_unstable();
    assert_eq!(failed, ["uid-1", "uid-4"], "{:?}", report.summary.failures);
    assert!(report.summary.failures.iter().all(|f| f.error.contains("does not match") && f.error.contains("sha256")));
    let left: Vec<String> = fake.remaining().into_iter().map(|(u, _)| u).collect();
    assert_eq!(left, ["uid-1", "uid-4"], "copies that did not read back intact stay at the source");
    // The destination holds all six, intact: only the way back lied.
    assert_eq!(s.dovecot.messages("dst").len(), 6);
    let ledger = s.store.ledger(1).await.unwrap();
    let state = |u: &str| ledger.iter().find(|e| e.uidl == u).unwrap().state;
    assert_eq!(state("uid-1"), LedgerState::Copied);
    assert_eq!(state("uid-2"), LedgerState::SourceDeleted);

    // A weaker level chosen explicitly (same size): the next pass verifies and deletes them.
    drain.verify = VerifyLevel::Size;
    let again = run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()).await.unwrap();
    assert_eq!((again.outcome, again.summary.copied, again.summary.failed), (Outcome::Succeeded, 0, 0), "{again:?}");
    assert!(fake.remaining().is_empty());
    assert_eq!(s.dovecot.messages("dst").len(), 6, "nothing appended twice");
}

#[tokio::test]
async fn copies_recorded_before_read_back_existed_are_read_back_before_a_deleting_pass() {
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| mail(i, false)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs.clone()));
    let keep = job(&s, fake.port(), DeletePolicy::Keep);
    run_job(s.store.clone(), &keep, &config(), None, CancellationToken::new()).await.unwrap();
    // As an older version left them: copied, never read back.
    let url = format!("sqlite://{}", s.state_path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let n = sqlx::query("UPDATE ledger SET state = 'copied', readback_digest = NULL, verified_at = NULL")
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 4);
    // Two of them as a destination without UIDPLUS leaves them: no UID known, so they are
    // located by Message-ID and size (UID SEARCH HEADER) before they are read back.
    let n = sqlx::query("UPDATE ledger SET dest_uid = NULL, dest_uidvalidity = NULL WHERE uidl IN ('uid-1', 'uid-3')")
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 2);
    drop(conn);

    let cutover = job(&s, fake.port(), DeletePolicy::AfterVerified);
    let report = tokio::time::timeout(Duration::from_secs(60), run_job(s.store.clone(), &cutover, &config(), None, CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied, report.summary.deleted), (Outcome::Succeeded, 0, 4), "{report:?}");
    let ledger = s.store.ledger(1).await.unwrap();
    assert!(ledger.iter().all(|e| e.state == LedgerState::SourceDeleted), "{ledger:?}");
    assert!(fake.remaining().is_empty());
    let mut dst = s.dovecot.messages("dst");
    dst.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| normalize_crlf(m)).collect();
    want.sort();
    assert_eq!(dst, want);
}

#[tokio::test]
async fn verify_none_reads_nothing_back_and_leaves_copies_unverified() {
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| mail(i, true)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs));
    // Every read-back would differ: with `none` nothing is read back, so nothing fails.
    let proxy = rewriting_proxy(s.dovecot.imap_port(), b"ORIGINAL", b"REWRITTN").await;
    let mut drain = job(&s, fake.port(), DeletePolicy::Keep);
    drain.verify = VerifyLevel::None;
    if let mailferry_engine::Target::Imap(t) = &mut drain.target {
        t.port = proxy;
    }
    let report = run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()).await.unwrap();
    assert_eq!((report.outcome, report.summary.copied, report.summary.failed), (Outcome::Succeeded, 4, 0), "{report:?}");
    let ledger = s.store.ledger(1).await.unwrap();
    assert!(ledger.iter().all(|e| e.state == LedgerState::Copied), "copied, never verified: {ledger:?}");
    assert_eq!(s.dovecot.messages("dst").len(), 4);
}

/// A destination without UIDPLUS: two proxies hide the capability and rename the
/// APPENDUID response code, so the client learns no UID for any copy.
#[tokio::test]
async fn without_uidplus_copies_are_located_by_message_id_verified_and_deleted() {
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..5).map(|i| mail(i, false)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs.clone()));
    let inner = rewriting_proxy(s.dovecot.imap_port(), b"APPENDUID", b"XPPENDUID").await;
    let outer = rewriting_proxy(inner, b"UIDPLUS", b"XIDPLUS").await;
    let mut drain = job(&s, fake.port(), DeletePolicy::AfterVerified);
    if let mailferry_engine::Target::Imap(t) = &mut drain.target {
        t.port = outer;
    }
    let report = tokio::time::timeout(Duration::from_secs(60), run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied, report.summary.deleted), (Outcome::Succeeded, 5, 5), "{report:?}");
    let ledger = s.store.ledger(1).await.unwrap();
    assert!(ledger.iter().all(|e| e.state == LedgerState::SourceDeleted), "{ledger:?}");
    assert!(ledger.iter().all(|e| e.dest_uid.is_none()), "no APPENDUID reached the client: {ledger:?}");
    assert!(fake.remaining().is_empty());
    let mut dst = s.dovecot.messages("dst");
    dst.sort();
    let mut want: Vec<Vec<u8>> = msgs.iter().map(|m| normalize_crlf(m)).collect();
    want.sort();
    assert_eq!(dst, want, "each exactly once");
}

/// The receipt a run leaves: signed, every message listed with its read-back digest, and a
/// copy that failed verification listed with the reason; any change to it is detected.
#[tokio::test]
async fn a_run_leaves_a_signed_receipt_that_names_every_message() {
    use mailferry_proof::{check_receipt, Receipt, ReceiptSigner};
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..6).map(|i| mail(i, i == 2)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs));
    let proxy = rewriting_proxy(s.dovecot.imap_port(), b"ORIGINAL", b"REWRITTN").await;
    let mut drain = job(&s, fake.port(), DeletePolicy::AfterVerified);
    if let mailferry_engine::Target::Imap(t) = &mut drain.target {
        t.port = proxy;
    }
    let signer = std::sync::Arc::new(ReceiptSigner::generate());
    let mut cfg = config();
    cfg.receipts = Some(signer.clone());
    let report = run_job(s.store.clone(), &drain, &cfg, None, CancellationToken::new()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Partial);

    let read = |run: Option<i64>| {
        let store = s.store.clone();
        async move {
            let mut r = mailferry_engine::receipt::ReceiptReader::open(store, report.job, run).await.unwrap().expect("a receipt");
            let mut text = String::new();
            while let Some(chunk) = r.next_chunk().await.unwrap() {
                text.push_str(&chunk);
            }
            text
        }
    };
    let text = read(None).await;
    let receipt = Receipt::parse(text.as_bytes()).unwrap();
    let key = signer.public_key();
    let verdict = check_receipt(&receipt, Some(&key));
    assert!(verdict.is_valid(), "{:?}", verdict.findings);
    assert_eq!((receipt.header.job, receipt.header.run, receipt.header.outcome.as_str()), (report.job, report.run, "partial"));
    assert_eq!(receipt.entries.len(), 6);
    let c = &receipt.header.counts;
    assert_eq!((c.source_deleted, c.copied, c.entries), (5, 1, 6), "{c:?}");
    for line in &receipt.entries {
        let e = &line.entry;
        assert_eq!((e.source.host.as_str(), e.source.account.as_str()), ("127.0.0.1", "u"));
        let dest = e.destination.as_ref().expect("a destination");
        assert!(dest.uid.is_some() && dest.uidvalidity.is_some(), "{e:?}");
        assert_eq!((dest.account.as_str(), dest.folder.as_str()), ("dst", "INBOX"));
        if e.source.uidl == "uid-3" {
            assert_eq!((e.status.as_str(), e.source_action.as_str()), ("copied", "kept"));
            assert!(e.reason.as_deref().is_some_and(|r| r.contains("does not match")), "{e:?}");
            assert_ne!(e.readback_sha256, e.sent_sha256, "both digests recorded");
        } else {
            assert_eq!((e.status.as_str(), e.source_action.as_str()), ("source-deleted", "deleted"));
            assert_eq!(e.readback_sha256, e.sent_sha256);
            assert_eq!(e.verification.as_deref(), Some("exact"));
            assert!(e.deleted_at.is_some() && e.verified_at.is_some());
        }
    }
    // One changed byte in an entry is found and named; another key does not verify it.
    let tampered = text.replacen("\"size\":", "\"size\":1", 1);
    let bad = check_receipt(&Receipt::parse(tampered.as_bytes()).unwrap(), Some(&key));
    assert!(bad.findings.iter().any(|f| f.to_string().contains("uid-")), "{:?}", bad.findings);
    let other = ReceiptSigner::generate().public_key();
    assert!(!check_receipt(&receipt, Some(&other)).is_valid());

    // A rerun that changes nothing still gets its own signed receipt, same root.
    let again = run_job(s.store.clone(), &drain, &cfg, None, CancellationToken::new()).await.unwrap();
    let second = Receipt::parse(read(None).await.as_bytes()).unwrap();
    assert_eq!(second.header.run, again.run);
    assert!(check_receipt(&second, Some(&key)).is_valid());
    assert_eq!(second.entries, receipt.entries, "the same entries");
    // ...pointing at the earlier run's entries: a no-op rerun keeps no entry lines.
    assert!(s.store.receipt_lines(again.run, -1, 10).await.unwrap().is_empty(), "the rerun stored entry lines of its own");
    let first_again = Receipt::parse(read(Some(report.run)).await.as_bytes()).unwrap();
    assert_eq!(first_again, receipt, "an earlier run's receipt does not change");
}

/// A destination that rewrites messages on the way in (as Gmail and Microsoft 365 rewrite
/// headers): a crash leaves copies in doubt, no digest can match them, and the job declared
/// `--verify body`. The copies are located by Message-ID and INTERNALDATE, not appended
/// again.
#[tokio::test]
async fn in_doubt_copies_on_a_rewriting_destination_are_located_not_duplicated() {
    let s = setup().await;
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| mail(i, true)).collect();
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs));
    let rewriting = proxy(s.dovecot.imap_port(), b"ORIGINAL", b"REWRITTN", true).await;
    let mut drain = job(&s, fake.port(), DeletePolicy::Keep);
    drain.verify = VerifyLevel::None;
    if let mailferry_engine::Target::Imap(t) = &mut drain.target {
        t.port = rewriting;
    }
    run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()).await.unwrap();
    assert!(s.dovecot.messages("dst").iter().all(|m| m.windows(8).any(|w| w == b"REWRITTN")), "stored rewritten");
    // As a crash between APPEND and its record leaves them: in doubt, no UID known.
    let url = format!("sqlite://{}", s.state_path().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    let n = sqlx::query("UPDATE ledger SET state = 'copying', dest_uid = NULL, dest_uidvalidity = NULL, copied_at = NULL")
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 4);
    drop(conn);

    drain.verify = VerifyLevel::Body;
    let report = run_job(s.store.clone(), &drain, &config(), None, CancellationToken::new()).await.unwrap();
    assert_eq!((report.summary.copied, report.summary.already_present), (0, 4), "{report:?}");
    assert_eq!(s.dovecot.messages("dst").len(), 4, "nothing appended twice");
    let ledger = s.store.ledger(1).await.unwrap();
    assert!(ledger.iter().all(|e| e.state == LedgerState::Copied && e.dest_uid.is_some()), "{ledger:?}");
}
