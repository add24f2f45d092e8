//! Issue 16: an archive opened read-only beside the process holding it (no search-index
//! writer lock; what the writer has not committed is found from the event log), the purge
//! plan (what goes, why, what a hold keeps) and the periodic purge's lease.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use mailferry_archive::{Archive, ArchiveConfig, HoldScope, SearchQuery};

fn subject(s: &str) -> SearchQuery {
    SearchQuery {
        subject: Some(s.into()),
        ..Default::default()
    }
}

async fn open_read_only(dir: &std::path::Path) -> Archive {
    Archive::open_read_only(ArchiveConfig::local("test", dir))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_read_only_handle_searches_beside_the_writer_and_sees_its_uncommitted_documents() {
    let dir = tempfile::tempdir().unwrap();
    // The writer commits its search index every 2 documents: one document stays pending.
    let writer = Archive::open(ArchiveConfig {
        search_commit_every: 2,
        ..ArchiveConfig::local("test", dir.path())
    })
    .await
    .unwrap();
    let invoice = writer
        .put(msg("a@x", "b@x", "Invoice one", "x"), occ("alice", "1"))
        .await
        .unwrap()
        .digest;
    writer
        .put(msg("a@x", "b@x", "Invoice two", "x"), occ("alice", "2"))
        .await
        .unwrap();
    let pending = writer
        .put(msg("a@x", "b@x", "Invoice three", "x"), occ("bob", "1"))
        .await
        .unwrap()
        .digest;

    // A second read-write open fails on tantivy's writer lock; a read-only one does not.
    let err = Archive::open(ArchiveConfig::local("test", dir.path()))
        .await
        .unwrap_err();
    assert!(err.is_held_elsewhere(), "{err}");
    let reader = open_read_only(dir.path()).await;
    assert!(reader.is_read_only());
    let page = reader.search(&subject("invoice"), 10, None).await.unwrap();
    assert_eq!(page.total, 3, "two committed documents and the pending one");
    let digests: Vec<_> = page.hits.iter().map(|h| h.occurrence.digest).collect();
    assert!(digests.contains(&pending) && digests.contains(&invoice));
    // Paging merges the on-disk and in-memory hits in occurrence order.
    let first = reader.search(&subject("invoice"), 2, None).await.unwrap();
    assert_eq!(first.hits.len(), 2);
    let rest = reader
        .search(&subject("invoice"), 2, first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.hits.len(), 1);
    assert_eq!(rest.hits[0].occurrence.digest, pending);
    assert!(rest.next_cursor.is_none());
    assert_eq!(reader.stats().await.unwrap().messages, 3);
    let report = reader.verify("reader").await.unwrap();
    assert!(report.ok(), "{:?}", report.discrepancies);

    // A purge after the writer's last commit hides the purged message from the on-disk
    // hits too (it is still in that index until the writer commits again).
    writer.set_retention(Some(1), "admin").await.unwrap();
    let mut db = raw_db(dir.path()).await;
    sqlx::query("UPDATE occurrences SET ingested_at = '2020-01-01T00:00:00.000Z' WHERE account = 'alice' AND uidl = '1'")
        .execute(&mut db)
        .await
        .unwrap();
    let report = writer.purge_expired("admin", "retention").await.unwrap();
    assert_eq!(report.purged, vec![invoice]);
    let later = open_read_only(dir.path()).await;
    let page = later.search(&subject("invoice"), 10, None).await.unwrap();
    assert_eq!(page.total, 2, "{page:?}");
    assert!(page.hits.iter().all(|h| h.occurrence.digest != invoice));

    // Purging needs the writer: refused read-only, whatever is due.
    writer.set_retention(Some(1), "admin").await.unwrap();
    sqlx::query("UPDATE occurrences SET ingested_at = '2020-01-01T00:00:00.000Z'")
        .execute(&mut db)
        .await
        .unwrap();
    let plan = later.purge_plan().await.unwrap();
    assert_eq!(plan.purge.len(), 2);
    assert!(later.purge_planned(&plan, "cli", "x").await.is_err());
    assert_eq!(writer.stats().await.unwrap().messages, 2, "nothing purged read-only");
}

#[tokio::test]
async fn the_purge_plan_says_what_goes_why_and_which_holds_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let plain = a.put(msg("a@x", "b@x", "Plain", "x"), occ("bob", "1")).await.unwrap().digest;
    let shared = msg("a@x", "b@x", "Shared", "x");
    let shared_d = a.put(shared.clone(), occ("bob", "2")).await.unwrap().digest;
    a.put(shared, occ("carol", "1")).await.unwrap();
    let fresh = a.put(msg("a@x", "b@x", "Fresh", "x"), occ("dave", "1")).await.unwrap().digest;
    let mut db = raw_db(dir.path()).await;
    sqlx::query("UPDATE occurrences SET ingested_at = '2020-01-01T00:00:00.000Z' WHERE account != 'dave'")
        .execute(&mut db)
        .await
        .unwrap();

    let none = a.purge_plan().await.unwrap();
    assert_eq!((none.retention_days, none.purge.len(), none.held.len()), (None, 0, 0));
    a.set_retention(Some(30), "admin").await.unwrap();
    let hold = a.place_hold(HoldScope::Account("carol".into()), "matter", "counsel").await.unwrap();
    let plan = a.purge_plan().await.unwrap();
    assert_eq!(plan.retention_days, Some(30));
    assert_eq!(plan.purge.iter().map(|i| i.digest).collect::<Vec<_>>(), vec![plain]);
    let item = &plan.purge[0];
    assert_eq!(item.accounts, vec!["bob".to_string()]);
    assert!(item.why.starts_with("retention of 30 days: last ingested 2020-01-01T00:00:00.000Z, before "), "{}", item.why);
    assert_eq!(plan.held.len(), 1);
    assert_eq!(plan.held[0].digest, shared_d);
    assert_eq!(plan.held[0].held_by, vec![hold.id]);
    let mut accounts = plan.held[0].accounts.clone();
    accounts.sort();
    assert_eq!(accounts, ["bob", "carol"]);
    assert!(plan.purge.iter().chain(&plan.held).all(|i| i.digest != fresh), "not expired");
    // The plan changed nothing; purging it does what it said.
    assert_eq!(a.stats().await.unwrap().messages, 3);
    let report = a.purge_planned(&plan, "cli", "retention of 30 days expired").await.unwrap();
    assert_eq!((report.purged, report.held), (vec![plain], 1));
    let again = a.purge_planned(&plan, "cli", "twice").await.unwrap();
    assert!(again.purged.is_empty(), "already purged: not purged (or logged) twice");
    let purges = a
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "purge")
        .count();
    assert_eq!(purges, 1);
}

#[tokio::test]
async fn the_periodic_purge_runs_once_per_interval_under_a_lease() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).await;
    let old = a.put(msg("a@x", "b@x", "Old", "x"), occ("bob", "1")).await.unwrap().digest;
    a.set_retention(Some(1), "admin").await.unwrap();
    let mut db = raw_db(dir.path()).await;
    let hour = Duration::from_secs(3600);

    // First pass: due (never ran), nothing expired yet.
    let r = a.purge_if_due("w1", hour).await.unwrap().expect("due");
    assert!(r.purged.is_empty());
    sqlx::query("UPDATE occurrences SET ingested_at = '2020-01-01T00:00:00.000Z'")
        .execute(&mut db)
        .await
        .unwrap();
    // Another process within the hour: not its turn.
    assert!(a.purge_if_due("w2", hour).await.unwrap().is_none());
    // A live lease held by someone else blocks even when due.
    let until = (Utc::now() + chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    sqlx::query("UPDATE upkeep SET holder = 'w3', lease_until = ?, last_finished_at = '2020-01-01T00:00:00.000Z'")
        .bind(&until)
        .execute(&mut db)
        .await
        .unwrap();
    assert!(a.purge_if_due("w2", hour).await.unwrap().is_none());
    // An expired lease (its holder died) is taken over.
    sqlx::query("UPDATE upkeep SET lease_until = '2020-01-01T00:00:00.000Z'")
        .execute(&mut db)
        .await
        .unwrap();
    let r = a.purge_if_due("w2", hour).await.unwrap().expect("taken over");
    assert_eq!(r.purged, vec![old]);
    let t = a.tombstone(&old).await.unwrap().unwrap();
    assert_eq!((t.purged_by.as_str(), t.reason.as_str()), ("retention", "retention of 1 days expired"));
    let (holder, finished): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT holder, last_finished_at FROM upkeep WHERE task = 'purge'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(holder, None, "released");
    assert!(finished.is_some_and(|f| f.as_str() > "2020-01-01"));
}

/// Two workers sharing one archive through PostgreSQL (each its own directory): started
/// together, exactly one of them purges. Needs `MAILFERRY_TEST_DATABASE_URL`.
#[tokio::test]
async fn workers_sharing_an_archive_purge_it_one_at_a_time() {
    use mailferry_archive::{BlobStoreConfig, DatabaseUrl, IndexConfig};
    use sqlx::Connection;
    let admin = std::env::var("MAILFERRY_TEST_DATABASE_URL")
        .expect("MAILFERRY_TEST_DATABASE_URL must point at PostgreSQL (postgres://postgres@127.0.0.1:5432/test)");
    let name = format!("mf_purge_lease_{}_{}", std::process::id(), Utc::now().timestamp_subsec_nanos());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.unwrap();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let blobs = std::sync::Arc::new(object_store::memory::InMemory::new());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let worker = |dir: std::path::PathBuf| {
        let (url, blobs) = (url.clone(), blobs.clone());
        async move {
            Archive::open(
                ArchiveConfig::local("legal", dir)
                    .with_index(IndexConfig::Postgres(DatabaseUrl::new(url)))
                    .with_blobs(BlobStoreConfig::Custom(blobs)),
            )
            .await
            .unwrap()
        }
    };
    let (w1, w2) = (worker(d1.path().into()).await, worker(d2.path().into()).await);
    let old = w1.put(msg("a@x", "b@x", "Old", "x"), occ("bob", "1")).await.unwrap().digest;
    w2.set_retention(Some(1), "admin").await.unwrap();
    let mut pg = sqlx::PgConnection::connect(&url).await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT schema_name FROM mailferry_archives WHERE name = 'legal'")
        .fetch_one(&mut pg)
        .await
        .unwrap();
    sqlx::query(&format!("UPDATE {schema}.occurrences SET ingested_at = '2020-01-01T00:00:00.000Z'"))
        .execute(&mut pg)
        .await
        .unwrap();

    let hour = Duration::from_secs(3600);
    let (r1, r2) = tokio::join!(w1.purge_if_due("w1", hour), w2.purge_if_due("w2", hour));
    let ran: Vec<_> = [r1.unwrap(), r2.unwrap()].into_iter().flatten().collect();
    assert_eq!(ran.len(), 1, "exactly one worker purged");
    assert_eq!(ran[0].purged, vec![old]);
    assert!(w1.purge_if_due("w1", hour).await.unwrap().is_none(), "not due again within the interval");
    let purges = w2.events(0, 100).await.unwrap().into_iter().filter(|e| e.kind == "purge").count();
    assert_eq!(purges, 1);
    drop((w1, w2, pg));
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await;
}
