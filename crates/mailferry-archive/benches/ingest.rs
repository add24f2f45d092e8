//! Archive benchmark: ingest 10,000 messages (30 % of them byte-identical duplicates from
//! other mailboxes, realistic compressible text with some attachments) into a local archive,
//! then search and verify it.
//!
//!     cargo bench -p mailferry-archive --bench ingest
//!     MAILFERRY_BENCH_MESSAGES=2000 cargo bench -p mailferry-archive --bench ingest
//!     MAILFERRY_BENCH_INDEX_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p mailferry-archive --bench ingest
//!
//! With `MAILFERRY_BENCH_INDEX_URL` the index is the shared PostgreSQL one (a fresh archive
//! schema per run, dropped afterwards), as workers on several machines would use it.
//!
//! Prints ingest msgs/s and MB/s, the storage ratio (stored / logical bytes), search latency
//! (p50/p99 over a query mix) and verify throughput (MB/s).

use std::time::Instant;

use chrono::Utc;
use mailferry_archive::{Archive, ArchiveConfig, DatabaseUrl, IndexConfig, Occurrence, SearchQuery};

fn main() {
    let total: usize = std::env::var("MAILFERRY_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let unique = total * 7 / 10;
    let corpus = mailferry_tests::realistic(unique, 2026);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let index_url = std::env::var("MAILFERRY_BENCH_INDEX_URL").ok().filter(|u| !u.is_empty());
        let name = format!("bench-{}", std::process::id());
        let mut config = ArchiveConfig::local(name.clone(), dir.path().join("bench"));
        if let Some(url) = &index_url {
            config = config.with_index(IndexConfig::Postgres(DatabaseUrl::new(url.clone())));
        }
        let archive = Archive::open(config).await.unwrap();
        // The corpus itself is held in memory by the bench; report RSS growth beyond it too.
        let rss_before = proc_status_mb("VmRSS:").unwrap_or(0.0);
        let mut logical = 0u64;
        let started = Instant::now();
        for i in 0..total {
            // The first 70 % are distinct; the rest repeat earlier messages from other mailboxes.
            let msg = &corpus[if i < unique { i } else { (i * 7919) % unique }];
            logical += msg.len() as u64;
            let occ = Occurrence {
                source_host: "pop.example.com".into(),
                account: format!("user{}", i % 50),
                uidl: format!("uid-{i}"),
                job_id: Some(1),
                run_id: Some(1),
                retrieved_at: Utc::now(),
            };
            archive.put(msg.clone(), occ).await.unwrap();
        }
        let ingest = started.elapsed().as_secs_f64();
        let stats = archive.stats().await.unwrap();

        let queries: Vec<SearchQuery> = vec![
            SearchQuery { text: Some("invoice".into()), ..Default::default() },
            SearchQuery { from: Some("alice".into()), ..Default::default() },
            SearchQuery { subject: Some("report".into()), ..Default::default() },
            SearchQuery { has_attachment: Some(true), ..Default::default() },
            SearchQuery { account: Some("user7".into()), ..Default::default() },
            SearchQuery { size_min: Some(100_000), ..Default::default() },
        ];
        let mut latencies = Vec::new();
        for _ in 0..20 {
            for q in &queries {
                let t = Instant::now();
                archive.search(q, 50, None).await.unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];

        let started = Instant::now();
        let report = archive.verify("bench").await.unwrap();
        let verify = started.elapsed().as_secs_f64();
        assert!(report.ok(), "verify found discrepancies: {:?}", report.discrepancies.first());

        if let Some(url) = &index_url {
            drop_schema(url, &name).await;
        }
        let index = if index_url.is_some() { "PostgreSQL (shared)" } else { "SQLite (local)" };
        println!("index: {index}; messages ingested: {total} ({unique} distinct), logical {:.1} MB", logical as f64 / 1e6);
        println!("| measure | value |");
        println!("|---|---|");
        println!("| ingest | {:.0} msgs/s, {:.1} MB/s ({ingest:.1} s) |", total as f64 / ingest, logical as f64 / 1e6 / ingest);
        println!(
            "| storage | {:.1} MB stored for {:.1} MB logical: ratio {:.3} (dedup ratio {:.2}) |",
            stats.stored_bytes as f64 / 1e6,
            stats.logical_bytes as f64 / 1e6,
            stats.storage_ratio,
            stats.dedup_ratio
        );
        println!("| search (6 query kinds × 20) | p50 {:.1} ms, p99 {:.1} ms |", p(0.5), p(0.99));
        println!(
            "| verify | {:.1} MB/s ({} blobs, {:.1} MB re-hashed in {verify:.1} s) |",
            report.bytes_checked as f64 / 1e6 / verify,
            report.blobs_checked,
            report.bytes_checked as f64 / 1e6
        );
        let peak = proc_status_mb("VmHWM:").unwrap_or(0.0);
        println!("| peak RSS (whole run) | {peak:.1} MB ({rss_before:.1} MB before ingest, corpus included; +{:.1} MB for ingest, search, verify) |", peak - rss_before);
    });
}

/// A `/proc/self/status` figure in MB (`VmHWM:` peak RSS, `VmRSS:` current), Linux only.
fn proc_status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Removes the bench archive's schema and registry row from the shared database.
async fn drop_schema(url: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let schema: String = sqlx::query_scalar("SELECT schema_name FROM mailferry_archives WHERE name = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await.unwrap();
    sqlx::query("DELETE FROM mailferry_archives WHERE name = $1").bind(name).execute(&mut conn).await.unwrap();
}
