//! Archive benchmark: ingest 10,000 messages (30 % of them byte-identical duplicates from
//! other mailboxes, realistic compressible text with some attachments) into a local archive,
//! one `put` per message and in groups (`put_group`, 64 per group like the engine's
//! batches), then search and verify it.
//!
//!     cargo bench -p mailferry-archive --bench ingest
//!     MAILFERRY_BENCH_MESSAGES=2000 MAILFERRY_BENCH_REPEAT=5 cargo bench -p mailferry-archive --bench ingest
//!     MAILFERRY_BENCH_GROUP=128 MAILFERRY_BENCH_MODES=group cargo bench -p mailferry-archive --bench ingest
//!     MAILFERRY_BENCH_INDEX_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p mailferry-archive --bench ingest
//!
//! With `MAILFERRY_BENCH_INDEX_URL` the index is the shared PostgreSQL one (a fresh archive
//! schema per run, dropped afterwards), as workers on several machines would use it.
//!
//! Each ingest mode (`MAILFERRY_BENCH_MODES`, default `one,group`) runs `MAILFERRY_BENCH_REPEAT` times (default 3), each into a fresh
//! archive; prints min–median–max msgs/s and MB/s, the storage ratio (stored / logical
//! bytes), search latency (p50/p99 over a query mix) and verify throughput (MB/s) on the
//! last grouped archive, and peak RSS.

use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use mailferry_archive::{Archive, ArchiveConfig, DatabaseUrl, IndexConfig, MessageSource, Occurrence, SearchQuery};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

/// The i-th arrival: the first 70 % are distinct; the rest repeat earlier messages from
/// other mailboxes.
fn arrival(corpus: &[Bytes], i: usize) -> (MessageSource, Occurrence) {
    let unique = corpus.len();
    let msg = &corpus[if i < unique { i } else { (i * 7919) % unique }];
    let occ = Occurrence {
        source_host: "pop.example.com".into(),
        account: format!("user{}", i % 50),
        uidl: format!("uid-{i}"),
        job_id: Some(1),
        run_id: Some(1),
        retrieved_at: Utc::now(),
    };
    (MessageSource::Bytes(msg.clone()), occ)
}

/// min, median, max.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

struct Bench {
    index_url: Option<String>,
    total: usize,
    corpus: Vec<Bytes>,
    logical: u64,
}

impl Bench {
    /// Ingests everything into a fresh archive, `group` arrivals per call (0: one `put`
    /// each). Returns the elapsed seconds and the archive (with its directory).
    async fn ingest(&self, run: usize, group: usize) -> (f64, Archive, tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("bench-{}-{run}-{group}", std::process::id());
        let mut config = ArchiveConfig::local(name.clone(), dir.path().join("bench"));
        if let Some(url) = &self.index_url {
            config = config.with_index(IndexConfig::Postgres(DatabaseUrl::new(url.clone())));
        }
        let archive = Archive::open(config).await.unwrap();
        let started = Instant::now();
        if group == 0 {
            for i in 0..self.total {
                let (msg, occ) = arrival(&self.corpus, i);
                archive.put(msg, occ).await.unwrap();
            }
        } else {
            for start in (0..self.total).step_by(group) {
                let items: Vec<_> = (start..(start + group).min(self.total)).map(|i| arrival(&self.corpus, i)).collect();
                for r in archive.put_group(items).await.unwrap() {
                    r.unwrap();
                }
            }
        }
        (started.elapsed().as_secs_f64(), archive, dir, name)
    }

    /// Closes the archive and drops its schema; its directory is kept (by the caller) until
    /// the bench ends: deleting thousands of files just before the next run would make that
    /// run's file creations slower (ext4 skips recently freed inodes), which is the cleanup's
    /// cost, not ingest's.
    async fn cleanup(&self, archive: Archive, name: &str) {
        archive.close().await.unwrap();
        if let Some(url) = &self.index_url {
            drop_schema(url, name).await;
        }
    }
}

fn main() {
    let total = env_usize("MAILFERRY_BENCH_MESSAGES", 10_000);
    let repeat = env_usize("MAILFERRY_BENCH_REPEAT", 3);
    let group = env_usize("MAILFERRY_BENCH_GROUP", 64);
    let unique = total * 7 / 10;
    let corpus: Vec<Bytes> = mailferry_tests::realistic(unique, 2026).into_iter().map(Bytes::from).collect();
    let logical: u64 = (0..total).map(|i| corpus[if i < unique { i } else { (i * 7919) % unique }].len() as u64).sum();
    let index_url = std::env::var("MAILFERRY_BENCH_INDEX_URL").ok().filter(|u| !u.is_empty());
    let bench = Bench { index_url, total, corpus, logical };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // The corpus itself is held in memory by the bench; report RSS growth beyond it too.
        let rss_before = proc_status_mb("VmRSS:").unwrap_or(0.0);
        let mut rows = Vec::new();
        let mut last = None;
        let mut dirs = Vec::new();
        let modes = std::env::var("MAILFERRY_BENCH_MODES").unwrap_or_else(|_| "one,group".into());
        let modes = [("one", "one `put` per message".to_string(), 0), ("group", format!("`put_group`, {group} per group"), group)]
            .into_iter()
            .filter(|(m, ..)| modes.split(',').any(|x| x.trim() == *m))
            .map(|(_, label, g)| (label, g));
        for (label, g) in modes {
            let mut secs = Vec::new();
            for run in 0..repeat {
                let (s, archive, dir, name) = bench.ingest(run, g).await;
                eprintln!("{label}, run {}: {:.0} msgs/s ({s:.1} s)", run + 1, total as f64 / s);
                secs.push(s);
                if g != 0 && run + 1 == repeat {
                    last = Some((archive, dir, name));
                } else {
                    bench.cleanup(archive, &name).await;
                    dirs.push(dir);
                }
            }
            let (fast, mid, slow) = spread(secs.clone());
            let rate = |s: f64| total as f64 / s;
            let mbs = |s: f64| bench.logical as f64 / 1e6 / s;
            rows.push(format!(
                "| ingest, {label} | {:.0} – {:.0} – {:.0} msgs/s; {:.1} – {:.1} – {:.1} MB/s ({:.1} – {:.1} – {:.1} s) |",
                rate(slow), rate(mid), rate(fast), mbs(slow), mbs(mid), mbs(fast), fast, mid, slow
            ));
        }
        let Some((archive, _dir, name)) = last else { return };
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
        latencies.sort_by(|a, b| a.total_cmp(b));
        let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];

        let started = Instant::now();
        let report = archive.verify("bench").await.unwrap();
        let verify = started.elapsed().as_secs_f64();
        assert!(report.ok(), "verify found discrepancies: {:?}", report.discrepancies.first());
        bench.cleanup(archive, &name).await;
        drop(dirs);

        let index = if bench.index_url.is_some() { "PostgreSQL (shared)" } else { "SQLite (local)" };
        println!(
            "index: {index}; messages ingested: {total} ({unique} distinct), logical {:.1} MB; {repeat} runs per mode, min – median – max",
            bench.logical as f64 / 1e6
        );
        println!("| measure | value |");
        println!("|---|---|");
        for r in rows {
            println!("{r}");
        }
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
