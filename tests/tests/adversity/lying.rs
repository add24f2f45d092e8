//! Servers that lie (DESIGN.md §2 invariant 7): a retrieval that disagrees with the
//! server's own LIST size, or a UIDL that now names other bytes, is never taken as a
//! completed copy and never DELEd on the strength of an old one.

use std::sync::Arc;
use std::time::Duration;

use mailferry_engine::{run_job, DrainJob, EngineConfig, Outcome, RetryPolicy, Target};
use mailferry_model::{DeletePolicy, ImapAuth, ImapEndpoint, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_store::SqliteStore;
use mailferry_tests::fake::{ApproximateList, CutRetr, FakeConfig, FakePop3, FakeScript};
use mailferry_tests::{normalize_crlf, Dovecot};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

pub struct Setup {
    pub dovecot: Dovecot,
    _state: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
}

impl Setup {
    /// The ledger database file.
    pub fn state_path(&self) -> std::path::PathBuf {
        self._state.path().join("state.db")
    }
}

pub async fn setup() -> Setup {
    let dovecot = Dovecot::start();
    dovecot.add_user("dst", "dst-pw");
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&state.path().join("state.db")).await.unwrap());
    Setup { dovecot, _state: state, store }
}

pub fn messages(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("Message-ID: <{tag}{i}@fake>\r\nSubject: {tag}{i}\r\n\r\n{}\r\n", "x".repeat(3000 + i)).into_bytes())
        .collect()
}

/// A plaintext POP3 source on loopback (the scripted server's or the lab's).
pub fn plain_source(pop_port: u16, user: &str, password: &str) -> Pop3Endpoint {
    Pop3Endpoint {
        host: "127.0.0.1".into(),
        port: pop_port,
        security: Security::None,
        username: user.into(),
        secret: SecretString::from(password),
        auth: Pop3Auth::Auto,
        tls: TlsOptions { allow_plaintext: true, ..TlsOptions::default() },
    }
}

pub fn job(s: &Setup, pop_port: u16, delete: DeletePolicy) -> DrainJob {
    let plain = TlsOptions { allow_plaintext: true, ..TlsOptions::default() };
    DrainJob {
        job_id: None,
        save_rotated: None,
        source: plain_source(pop_port, "u", "p"),
        target: Target::Imap(ImapEndpoint {
            host: "127.0.0.1".into(),
            port: s.dovecot.imap_port(),
            security: Security::None,
            username: "dst".into(),
            credential: mailferry_model::Credential::Password(SecretString::from("dst-pw")),
            auth: ImapAuth::Auto,
            tls: plain,
            folder: "INBOX".into(),
            flags: vec![],
        }),
        delete,
        dry_run: false,
        max_message_bytes: None,
        verify: Default::default(),
    }
}

pub fn config() -> EngineConfig {
    let mut c = EngineConfig {
        retry: RetryPolicy { attempts: 2, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) },
        ..EngineConfig::default()
    };
    c.pop3.io_timeout = Duration::from_secs(5);
    c
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

fn cut(msg: u32, times: usize) -> FakeScript {
    FakeScript { pipelining: true, cut_retr: Some(CutRetr { msg, keep: 200, times, done: Default::default() }), ..Default::default() }
}

#[tokio::test]
async fn a_message_the_server_cuts_is_never_copied_nor_deleted() {
    let s = setup().await;
    let msgs = messages(3, "cut");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = cut(2, usize::MAX);
    let fake = FakePop3::start(cfg);

    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Partial, "{report:?}");
    assert_eq!(report.summary.failed, 1);
    let failure = &report.summary.failures[0];
    assert_eq!(failure.uidl, "uid-2");
    assert!(failure.error.contains("LIST size"), "{}", failure.error);
    let left: Vec<String> = fake.remaining().into_iter().map(|(u, _)| u).collect();
    assert_eq!(left, vec!["uid-2".to_string()], "the cut message stays at the source, the others are deleted");
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(vec![normalize_crlf(&msgs[0]), normalize_crlf(&msgs[2])]));
}

#[tokio::test]
async fn a_message_cut_once_is_retrieved_again_and_copied_whole() {
    let s = setup().await;
    let msgs = messages(3, "once");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = cut(1, 1);
    let fake = FakePop3::start(cfg);

    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied), (Outcome::Succeeded, 3), "{report:?}");
    assert!(fake.remaining().is_empty());
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(msgs.iter().map(|m| normalize_crlf(m)).collect()));
}

#[tokio::test]
async fn a_reused_uidl_is_copied_as_a_new_message_before_it_is_deleted() {
    let s = setup().await;
    let msgs = messages(2, "old");
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs.clone()));
    let first = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::Keep), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(first.summary.copied, 2);

    // The server now gives uid-1 to other bytes (of another size).
    let other = b"Message-ID: <new@fake>\r\nSubject: other bytes\r\n\r\nnot the message first copied\r\n".to_vec();
    fake.replace("uid-1", other.clone());
    let second =
        run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
            .await
            .unwrap();
    assert_eq!((second.outcome, second.summary.copied), (Outcome::Succeeded, 1), "{second:?}");
    // Reported where the admin reads the run's outcome, with both sizes.
    assert_eq!(second.summary.reused.len(), 1, "{:?}", second.summary);
    let reuse = &second.summary.reused[0];
    assert_eq!(reuse.uidl, "uid-1");
    assert!(reuse.error.contains("reused UIDL") && reuse.error.contains(&format!("{} bytes", other.len())), "{}", reuse.error);
    let json = serde_json::to_value(&second.summary).unwrap();
    assert_eq!(json["reused"][0]["uidl"], "uid-1", "{json}");
    assert!(first.summary.reused.is_empty() && serde_json::to_value(&first.summary).unwrap().get("reused").is_none());
    assert!(fake.remaining().is_empty(), "deleted, each after its own copy");
    let mut expected = msgs.iter().map(|m| normalize_crlf(m)).collect::<Vec<_>>();
    expected.push(other);
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(expected), "the new bytes arrived, the old copy stays");
}

#[tokio::test]
async fn a_message_over_the_clients_size_cap_is_skipped_by_its_list_size_not_fatal() {
    let s = setup().await;
    let mut msgs = messages(2, "big");
    let small = b"Message-ID: <small@fake>\r\nSubject: small\r\n\r\nfits\r\n".to_vec();
    msgs.push(small.clone());
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs));
    let mut config = config();
    config.pop3.max_message_bytes = 2000;
    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config, None, CancellationToken::new())
        .await
        .expect("a message over the cap is skipped, not the end of the job");
    assert_eq!((report.outcome, report.summary.copied, report.summary.skipped), (Outcome::Succeeded, 1, 2), "{report:?}");
    assert!(report.summary.skips.iter().all(|f| f.error.contains("pop3.max_message_bytes")), "{:?}", report.summary.skips);
    assert_eq!(fake.remaining().len(), 2, "skipped messages stay at the source");
    assert_eq!(s.dovecot.messages("dst"), vec![small]);
}

fn approximate(msg: u32, unstable: bool) -> FakeScript {
    FakeScript {
        pipelining: true,
        approximate_list: Some(ApproximateList { msg, under: 10, unstable, retrievals: Default::default() }),
        ..Default::default()
    }
}

/// Where the DELE of `msg` and its RETRs fall among the commands the server received.
fn retr_and_dele(fake: &FakePop3, msg: u32) -> (Vec<usize>, Option<usize>) {
    let commands = fake.commands();
    let retr: Vec<usize> = commands.iter().enumerate().filter(|(_, c)| **c == format!("RETR {msg}")).map(|(i, _)| i).collect();
    (retr, commands.iter().position(|c| *c == format!("DELE {msg}")))
}

#[tokio::test]
async fn approximate_list_sizes_copy_after_two_identical_retrievals() {
    let s = setup().await;
    let msgs = messages(3, "approx");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = approximate(2, false);
    let fake = FakePop3::start(cfg);

    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied, report.summary.failed), (Outcome::Succeeded, 3, 0), "{report:?}");
    let (retr, dele) = retr_and_dele(&fake, 2);
    assert_eq!(retr.len(), 2, "retrieved twice: {:?}", fake.commands());
    assert!(dele.is_some_and(|d| d > retr[1]), "deleted only after the second, identical retrieval: {:?}", fake.commands());
    assert!(fake.remaining().is_empty());
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(msgs.iter().map(|m| normalize_crlf(m)).collect()));
}

#[tokio::test]
async fn approximate_list_sizes_with_retrievals_that_differ_keep_the_message() {
    let s = setup().await;
    let msgs = messages(3, "unstable");
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = approximate(2, true);
    let fake = FakePop3::start(cfg);

    let report = run_job(s.store.clone(), &job(&s, fake.port(), DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.outcome, report.summary.copied, report.summary.failed), (Outcome::Partial, 2, 1), "{report:?}");
    assert_eq!(report.summary.failures[0].uidl, "uid-2");
    assert!(report.summary.failures[0].error.contains("LIST size"), "{}", report.summary.failures[0].error);
    let (retr, dele) = retr_and_dele(&fake, 2);
    assert_eq!((retr.len(), dele), (2, None), "retrieved twice, never deleted: {:?}", fake.commands());
    let left: Vec<String> = fake.remaining().into_iter().map(|(u, _)| u).collect();
    assert_eq!(left, vec!["uid-2".to_string()], "kept at the source");
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(vec![normalize_crlf(&msgs[0]), normalize_crlf(&msgs[2])]));
}

#[tokio::test]
async fn a_dry_run_does_not_count_messages_over_the_clients_cap_as_deletions() {
    let s = setup().await;
    let mut msgs = messages(2, "big");
    msgs.push(b"Message-ID: <small@fake>\r\nSubject: small\r\n\r\nfits\r\n".to_vec());
    let fake = FakePop3::start(FakeConfig::new("u", "p", msgs));
    let mut config = config();
    config.pop3.max_message_bytes = 2000;
    let mut dry = job(&s, fake.port(), DeletePolicy::AfterVerified);
    dry.dry_run = true;
    let report = run_job(s.store.clone(), &dry, &config, None, CancellationToken::new()).await.unwrap();
    assert_eq!((report.summary.copied, report.summary.deleted), (3, 1), "only the small one would be deleted: {report:?}");
}
