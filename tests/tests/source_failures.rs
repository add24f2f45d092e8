//! Source failures real Dovecot will not produce on demand, from the scriptable fake POP3
//! server, draining into the lab's real Dovecot IMAP: the engine retries what is
//! retryable, stops at once on what is fatal, and the result is still exactly once.

use std::sync::Arc;
use std::time::Duration;

use mailferry_engine::{run_job, DrainJob, EngineConfig, EngineError, Outcome, RetryPolicy, Target};
use mailferry_model::{DeletePolicy, ErrorClass, ImapAuth, ImapEndpoint, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
use mailferry_store::SqliteStore;
use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript, ANY_CONN};
use mailferry_tests::{normalize_crlf, Dovecot};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

struct Setup {
    dovecot: Dovecot,
    _state: tempfile::TempDir,
    store: Arc<SqliteStore>,
}

async fn setup() -> Setup {
    let dovecot = Dovecot::start();
    dovecot.add_user("dst", "dst-pw");
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&state.path().join("state.db")).await.unwrap());
    Setup { dovecot, _state: state, store }
}

fn messages(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("Message-ID: <f{i}@fake>\r\nSubject: m{i}\r\n\r\n.leading dot\r\n{}\r\n", "x".repeat(3000)).into_bytes())
        .collect()
}

fn job(s: &Setup, fake: &FakePop3, delete: DeletePolicy) -> DrainJob {
    let plain = TlsOptions { allow_plaintext: true, ..TlsOptions::default() };
    DrainJob {
        job_id: None,
        save_rotated: None,
        source: Pop3Endpoint {
            host: "127.0.0.1".into(),
            port: fake.port(),
            security: Security::None,
            username: "u".into(),
            secret: SecretString::from("p"),
            auth: Pop3Auth::Auto,
            tls: plain.clone(),
        },
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

fn config(attempts: u32) -> EngineConfig {
    let mut c = EngineConfig {
        retry: RetryPolicy { attempts, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) },
        ..EngineConfig::default()
    };
    c.pop3.io_timeout = Duration::from_secs(5);
    c
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_mid_retr_is_retried_and_still_exactly_once() {
    let s = setup().await;
    let msgs = messages(5);
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.script = FakeScript { drop_mid_retr: Some((0, 3, 1500)), pipelining: true, ..Default::default() };
    let fake = FakePop3::start(cfg);

    let report = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::AfterVerified), &config(3), None, CancellationToken::new()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert_eq!(report.summary.copied, 5);
    assert_eq!(fake.connections(), 2, "one retry after the drop");
    assert_eq!(sorted(s.dovecot.messages("dst")), sorted(msgs.iter().map(|m| normalize_crlf(m)).collect()));
    assert!(fake.remaining().is_empty(), "after-verified deleted every copied message on the successful pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_is_retried() {
    let s = setup().await;
    let mut cfg = FakeConfig::new("u", "p", messages(2));
    cfg.script = FakeScript { pass_reply: Some((0, "-ERR [IN-USE] maildrop locked".into())), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let report = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::Keep), &config(3), None, CancellationToken::new()).await.unwrap();
    assert_eq!(report.summary.copied, 2);
    assert_eq!(fake.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_fatal_at_once() {
    let s = setup().await;
    let mut cfg = FakeConfig::new("u", "p", messages(2));
    cfg.script = FakeScript { pass_reply: Some((ANY_CONN, "-ERR [AUTH] invalid credentials".into())), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let err = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::AfterVerified), &config(5), None, CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(matches!(err, EngineError::Source { .. }), "{err}");
    assert!(err.to_string().contains("u@127.0.0.1"), "{err}");
    assert_eq!(fake.connections(), 1, "no retry of a fatal error");
    assert_eq!(fake.remaining().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_endless_replies_fail_cleanly_without_deleting() {
    let s = setup().await;
    let mut cfg = FakeConfig::new("u", "p", messages(2));
    cfg.script = FakeScript { garbage_after_command: Some((ANY_CONN, "UIDL".into(), "HELLO WORLD\r\n".into())), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let err = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::AfterVerified), &config(2), None, CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("HELLO") || err.to_string().to_lowercase().contains("unexpected"), "{err}");
    assert_eq!(fake.connections(), 2, "retried up to the limit");

    let mut cfg = FakeConfig::new("u", "p", messages(2));
    cfg.script = FakeScript { endless_line_on: Some((ANY_CONN, "RETR".into())), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let err = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::AfterVerified), &config(1), None, CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("long") || err.to_string().contains("large"), "{err}");
    assert_eq!(fake.remaining().len(), 2);
    assert_eq!(s.dovecot.messages("dst").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_uidls_are_reported_and_left_in_place() {
    let s = setup().await;
    let msgs = messages(4);
    let mut cfg = FakeConfig::new("u", "p", msgs.clone());
    cfg.uidls = Some(vec!["a".into(), "dup".into(), "dup".into(), "d".into()]);
    cfg.script = FakeScript { no_capa: true, ..Default::default() };
    let fake = FakePop3::start(cfg);
    let report = run_job(s.store.clone(), &job(&s, &fake, DeletePolicy::AfterVerified), &config(1), None, CancellationToken::new()).await.unwrap();
    assert_eq!(report.outcome, Outcome::Partial);
    assert_eq!(report.summary.copied, 2);
    assert_eq!(report.summary.failed, 1);
    assert!(report.summary.failures[0].error.contains("dup"), "{:?}", report.summary.failures);
    let left: Vec<String> = fake.remaining().into_iter().map(|(u, _)| u).collect();
    assert_eq!(left, ["dup", "dup"], "only the copied messages were deleted");
}
