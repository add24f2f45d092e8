//! Service throughput: M mailboxes × N messages created through the HTTP API and drained by
//! the in-process workers of `mailferry serve` (SQLite, embedded default), at 1, 2 and 4
//! concurrent jobs per worker. Prints total msgs/s, MB/s, the p99 latency of
//! `GET /api/v1/jobs/{id}` measured while the jobs run, and the server's peak RSS.
//!
//!     cargo bench -p mailferry --bench service
//!     MAILFERRY_BENCH_MAILBOXES=50 MAILFERRY_BENCH_MESSAGES=200 cargo bench -p mailferry --bench service
//!     MAILFERRY_BENCH_MAILBOXES=4 MAILFERRY_BENCH_MESSAGES=2000 cargo bench -p mailferry --bench service
//!
//! Beside each row, the raw fleet ceiling at the same parallelism (fleet_ceiling.rs: the
//! same mailboxes moved by a bare pipelined RETR → MULTIAPPEND client, no ledger), measured
//! in the same session, and the service's share of it.

mod fleet_ceiling;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_tests::{realistic, Dovecot};
use serde_json::json;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let mailboxes = env_num("MAILFERRY_BENCH_MAILBOXES", 50);
    let per_box = env_num("MAILFERRY_BENCH_MESSAGES", 200);
    let lab = Dovecot::start();
    let mut bytes = 0u64;
    for i in 0..mailboxes {
        let src = format!("s{i}");
        lab.add_user(&src, "pw");
        let msgs = realistic(per_box, i as u64);
        bytes += msgs.iter().map(|m| m.len() as u64).sum::<u64>();
        lab.seed(&src, &msgs);
        lab.doveadm(&["force-resync", "-u", &src, "INBOX"]);
    }
    println!("corpus: {mailboxes} mailboxes × {per_box} messages, {:.1} MB", bytes as f64 / 1e6);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let msgs = mailboxes * per_box;
    let mut ceilings = Vec::new();
    for parallel in [1usize, 2, 4] {
        let secs = rt.block_on(fleet_ceiling::run(&lab, mailboxes, parallel, &format!("raw{parallel}-")));
        ceilings.push(msgs as f64 / secs);
        println!("raw fleet ceiling, {parallel} mailbox(es) at once: {:.0} msgs/s ({secs:.1} s)", msgs as f64 / secs);
    }
    println!("\n| jobs per worker | msgs | MB | seconds | msgs/s | MB/s | / raw fleet ceiling | GET /jobs/{{id}} p99 | peak RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (k, concurrency) in [1usize, 2, 4].into_iter().enumerate() {
        let data = tempfile::tempdir().unwrap();
        let env = [
            ("MAILFERRY_DATA_DIR", data.path().display().to_string()),
            ("MAILFERRY_WORKER__CONCURRENCY", concurrency.to_string()),
            ("MAILFERRY_WORKER__PER_HOST_LIMIT", "16".to_string()),
            ("MAILFERRY_LOG__FILTER", "warn".to_string()),
        ];
        let out = Command::new(env!("CARGO_BIN_EXE_mailferry")).args(["token", "create", "--scope", "admin"]).envs(env.clone()).output().unwrap();
        let token = String::from_utf8_lossy(&out.stdout).split_whitespace().last().unwrap().to_owned();
        let mut server = Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(env.clone())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        let pid = server.id();

        let (secs, p99, peak) = rt.block_on(async {
            let http = reqwest::Client::new();
            let started = Instant::now();
            let mut ids = Vec::new();
            for i in 0..mailboxes {
                // Each pass gets its own destination users so every pass copies everything.
                let dst = format!("d{concurrency}-{i}");
                lab.add_user(&dst, "pw");
                let body = json!({
                    "source": {"protocol": "pop3", "host": "127.0.0.1", "port": lab.pop3_port(), "security": "none", "username": format!("s{i}"), "password": "pw"},
                    "target": {"protocol": "imap", "host": "127.0.0.1", "port": lab.imap_port(), "security": "none", "username": dst, "password": "pw", "folder": "INBOX"},
                });
                let r = http.post(format!("{base}/api/v1/jobs")).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
                ids.push(r.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap());
            }
            let mut latencies = Vec::new();
            let mut peak = 0.0f64;
            loop {
                let mut done = 0;
                for id in &ids {
                    let t = Instant::now();
                    let job: serde_json::Value = http.get(format!("{base}/api/v1/jobs/{id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
                    latencies.push(t.elapsed());
                    match job["state"].as_str().unwrap() {
                        "succeeded" => done += 1,
                        "queued" | "running" => {}
                        other => panic!("job {id} ended {other}: {job}"),
                    }
                }
                peak = peak.max(peak_rss_mb(pid).unwrap_or(0.0));
                if done == ids.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let secs = started.elapsed().as_secs_f64();
            latencies.sort();
            (secs, latencies[latencies.len() * 99 / 100], peak)
        });
        let _ = server.kill();
        let _ = server.wait();
        println!(
            "| {concurrency} | {msgs} | {:.1} | {secs:.1} | {:.0} | {:.1} | {:.0} % | {:.1} ms | {peak:.1} MB |",
            bytes as f64 / 1e6,
            msgs as f64 / secs,
            bytes as f64 / 1e6 / secs,
            100.0 * msgs as f64 / secs / ceilings[k],
            p99.as_secs_f64() * 1000.0
        );
    }
}
