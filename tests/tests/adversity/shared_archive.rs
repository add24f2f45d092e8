//! One archive shared by several ledgers (issue 13): job ids are unique per ledger only, so
//! two `--state` files (or the CLI beside the service) writing into one archive each have a
//! job 1, and the archive's occurrence key (host, account, UIDL) has no port. An occurrence
//! "of job 1" may then be another source's message: it must never stand in for this
//! source's copy, or a message whose own bytes were never archived is DELEd.

use std::sync::Arc;

use mailferry_archive::{Archive, ArchiveConfig};
use mailferry_engine::{run_job, ArchiveTarget, DrainJob, Outcome, Target};
use mailferry_model::DeletePolicy;
use mailferry_store::SqliteStore;
use mailferry_tests::fake::{FakeConfig, FakePop3};
use tokio_util::sync::CancellationToken;

use crate::lying::{config, plain_source};

fn archive_job(pop_port: u16, archive: &Arc<Archive>, delete: DeletePolicy) -> DrainJob {
    DrainJob {
        job_id: None,
        save_rotated: None,
        source: plain_source(pop_port, "u", "p"),
        target: Target::Archive(ArchiveTarget { name: "shared".into(), archive: Arc::clone(archive) }),
        delete,
        dry_run: false,
        max_message_bytes: None,
        verify: Default::default(),
    }
}

/// A fresh ledger (its own `--state` file): its first job is job 1.
async fn ledger(dir: &tempfile::TempDir, name: &str) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(&dir.path().join(name)).await.unwrap())
}

#[tokio::test]
async fn another_ledgers_job_1_never_vouches_for_this_sources_message() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(Archive::open(ArchiveConfig::local("shared", dir.path().join("archive"))).await.unwrap());

    // Ledger A, job 1: source 127.0.0.1:P1, account u, uid-1 archived (and kept).
    let first = b"Message-ID: <a@one>\r\nSubject: first source\r\n\r\nbody AAAA\r\n".to_vec();
    let one = FakePop3::start(FakeConfig::new("u", "p", vec![first.clone()]));
    let a = ledger(&dir, "a.db").await;
    let report = run_job(a, &archive_job(one.port(), &archive, DeletePolicy::Keep), &config(), None, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.job, report.summary.copied), (1, 1), "{report:?}");

    // Ledger B, also job 1: another source on the same host (another port), same account,
    // same UIDL, same size, other bytes. Its message must not be taken as archived.
    let second = b"Message-ID: <b@two>\r\nSubject: other source\r\n\r\nbody BBBB\r\n".to_vec();
    assert_eq!(first.len(), second.len(), "the same LIST size");
    let two = FakePop3::start(FakeConfig::new("u", "p", vec![second.clone()]));
    let b = ledger(&dir, "b.db").await;
    let report =
        run_job(b, &archive_job(two.port(), &archive, DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
            .await
            .unwrap();
    assert_eq!(report.job, 1, "the collision this test is about");
    assert_eq!(two.remaining(), vec![("uid-1".to_string(), second.clone())], "not deleted: its own bytes were never archived");
    assert!(!two.commands().iter().any(|c| c.starts_with("DELE")), "{:?}", two.commands());
    assert_eq!((report.outcome, report.summary.copied, report.summary.failed), (Outcome::Partial, 0, 1), "{report:?}");
    assert!(report.summary.failures[0].error.contains("different bytes"), "{:?}", report.summary.failures);

    // Ledger C, job 1: a third source whose uid-1 has exactly the archived bytes: put()
    // finds them, so the copy is confirmed and deleted at the source.
    let three = FakePop3::start(FakeConfig::new("u", "p", vec![first.clone()]));
    let c = ledger(&dir, "c.db").await;
    let report =
        run_job(c, &archive_job(three.port(), &archive, DeletePolicy::AfterVerified), &config(), None, CancellationToken::new())
            .await
            .unwrap();
    assert_eq!((report.outcome, report.summary.failed), (Outcome::Succeeded, 0), "{report:?}");
    assert!(three.remaining().is_empty(), "its own bytes are in the archive: deleted after verification");
}
