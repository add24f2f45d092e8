//! One archive shared by several processes through a PostgreSQL index (DESIGN.md §5): each
//! `Archive` handle below stands for a worker on its own machine (own data dir, own search
//! index), all writing to the same PostgreSQL schema and the same object store. Needs
//! `MAILFERRY_TEST_DATABASE_URL` (fails without it; each test creates and drops a database).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::*;
use mailferry_archive::{
    shared_archive_names, Archive, ArchiveConfig, BlobStoreConfig, DatabaseUrl, Discrepancy, HoldScope,
    IndexConfig, SearchQuery,
};
use object_store::memory::InMemory;
use sqlx::Connection;

struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    async fn create() -> Self {
        let admin_url = std::env::var("MAILFERRY_TEST_DATABASE_URL").expect(
            "MAILFERRY_TEST_DATABASE_URL is not set: the shared-index tests need PostgreSQL, e.g. \
             postgres://postgres@127.0.0.1:5432/test (each test creates and drops its own database)",
        );
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("mf_archive_{}_{}_{nanos}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let mut url = url::Url::parse(&admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        TestDb { admin_url, name, url: url.to_string() }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([&self.admin_url, "-qc", &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)])
            .output();
    }
}

/// A "worker": its own directory (search index, spool), the shared index and blob store.
async fn worker(db: &TestDb, blobs: &Arc<InMemory>, dir: &std::path::Path) -> Archive {
    Archive::open(
        ArchiveConfig::local("legal", dir)
            .with_index(IndexConfig::Postgres(DatabaseUrl::new(db.url.clone())))
            .with_blobs(BlobStoreConfig::Custom(blobs.clone())),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_share_one_archive_exactly_once_with_a_linear_chain() {
    let db = TestDb::create().await;
    let blobs = Arc::new(InMemory::new());
    let (d1, d2, d3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(worker(&db, &blobs, d1.path()), worker(&db, &blobs, d2.path()));
    let (a, b) = (Arc::new(a), Arc::new(b));

    // Both workers ingest at once: 40 mailboxes' worth of overlapping mail. Every message
    // goes to two accounts (same bytes → one blob), and both workers race on the same
    // (host, account, UIDL) for half of them (a lease takeover replaying a message).
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        for (w, account) in [(&a, "alice"), (&b, "bob")] {
            let w = Arc::clone(w);
            let m = msg("x@example.com", "y@example.com", &format!("Shared {i}"), &format!("body number {i}"));
            tasks.push(tokio::spawn(async move { w.put(m, occ(account, &i.to_string())).await.unwrap() }));
        }
        if i % 2 == 0 {
            let w = Arc::clone(&b);
            let m = msg("x@example.com", "y@example.com", &format!("Shared {i}"), &format!("body number {i}"));
            tasks.push(tokio::spawn(async move { w.put(m, occ("alice", &i.to_string())).await.unwrap() }));
        }
    }
    let mut new_occurrences = 0;
    let mut new_blobs = 0;
    for t in tasks {
        let r = t.await.unwrap();
        new_occurrences += u32::from(r.occurrence_new);
        new_blobs += u32::from(r.stored_new);
    }
    assert_eq!(new_occurrences, 80, "each (account, UIDL) recorded exactly once");
    assert_eq!(new_blobs, 40, "identical bytes stored once across workers");
    let stats = b.stats().await.unwrap();
    assert_eq!((stats.messages, stats.occurrences), (40, 80));

    // The chain is one line although two processes appended to it concurrently.
    let rep = a.verify("auditor").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    assert_eq!(rep.blobs_checked, 40);

    // A third process (the API) searches what the workers ingested, and keeps up with
    // later ingests without reopening.
    let api = worker(&db, &blobs, d3.path()).await;
    let q = SearchQuery { subject: Some("Shared 7".into()), ..Default::default() };
    let page = api.search(&q, 10, None).await.unwrap();
    let accounts: HashSet<_> = page.hits.iter().map(|h| h.occurrence.account.clone()).collect();
    assert_eq!(accounts, HashSet::from(["alice".to_string(), "bob".to_string()]));
    a.put(msg("x@example.com", "z@example.com", "Late arrival", "after the API opened"), occ("carol", "1"))
        .await
        .unwrap();
    let q = SearchQuery { subject: Some("Late arrival".into()), ..Default::default() };
    assert_eq!(api.search(&q, 10, None).await.unwrap().hits.len(), 1);

    // Holds and policy set in one process bind purges run in another.
    b.set_retention(Some(1), "officer").await.unwrap();
    b.place_hold(HoldScope::Account("bob".into()), "litigation", "officer").await.unwrap();
    let report = a
        .purge_expired_as_of(chrono::Utc::now() + chrono::Duration::days(3), "officer", "expired")
        .await
        .unwrap();
    assert_eq!(report.purged.len(), 1, "only carol's message is unheld: {report:?}");
    assert_eq!(report.held, 40);
    // The API's search index learns of the purge from the log.
    assert!(api.search(&q, 10, None).await.unwrap().hits.is_empty());

    assert_eq!(shared_archive_names(&DatabaseUrl::new(db.url.clone())).await.unwrap(), vec!["legal".to_string()]);
    for h in [a, b] {
        Arc::try_unwrap(h).ok().unwrap().close().await.unwrap();
    }
    api.close().await.unwrap();
}

#[tokio::test]
async fn tampering_with_the_shared_index_is_detected() {
    let db = TestDb::create().await;
    let blobs = Arc::new(InMemory::new());
    let dir = tempfile::tempdir().unwrap();
    let a = worker(&db, &blobs, dir.path()).await;
    for i in 0..5 {
        a.put(msg("a@x", "b@x", &format!("m{i}"), "text"), occ("alice", &i.to_string())).await.unwrap();
    }
    assert!(a.verify("t").await.unwrap().ok());
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT schema_name FROM mailferry_archives WHERE name = 'legal'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // Someone with database access removes one arrival and its log record.
    sqlx::query(&format!("DELETE FROM {schema}.occurrences WHERE uidl = '2'")).execute(&mut conn).await.unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(!rep.ok());
    sqlx::query(&format!("DELETE FROM {schema}.events WHERE seq = 3")).execute(&mut conn).await.unwrap();
    let rep = a.verify("t").await.unwrap();
    assert!(
        rep.discrepancies.iter().any(|d| matches!(d, Discrepancy::Chain(_))),
        "{:?}",
        rep.discrepancies
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_ingesting_overlapping_groups_record_each_arrival_once() {
    let db = TestDb::create().await;
    let blobs = Arc::new(InMemory::new());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = tokio::join!(worker(&db, &blobs, d1.path()), worker(&db, &blobs, d2.path()));
    // Both workers ingest the same 3 groups of 20 arrivals at once (a lease takeover
    // replaying a batch), plus their own account's copy of the same bytes.
    let group = |account: &'static str, g: u32| -> Vec<(mailferry_archive::MessageSource, mailferry_archive::Occurrence)> {
        (g * 20..g * 20 + 20)
            .flat_map(|i| {
                let m = msg("x@example.com", "y@example.com", &format!("Group {i}"), &format!("body {i}"));
                [(m.clone().into(), occ("shared", &i.to_string())), (m.into(), occ(account, &i.to_string()))]
            })
            .collect()
    };
    let (mut new_occ, mut new_blobs) = (0, 0);
    for g in 0..3 {
        let (ra, rb) = tokio::join!(a.put_group(group("alice", g)), b.put_group(group("bob", g)));
        for r in ra.unwrap().into_iter().chain(rb.unwrap()) {
            let r = r.unwrap();
            new_occ += u32::from(r.occurrence_new);
            new_blobs += u32::from(r.stored_new);
        }
    }
    assert_eq!(new_occ, 180, "60 shared + 60 alice + 60 bob, each recorded once");
    assert_eq!(new_blobs, 60, "identical bytes stored once across workers");
    let rep = a.verify("auditor").await.unwrap();
    assert!(rep.ok(), "{:?}", rep.discrepancies);
    a.close().await.unwrap();
    b.close().await.unwrap();
}
