//! Throughput benchmark (issue 18): one mailbox Dovecot → Dovecot on loopback through the
//! `mailferry migrate` binary, beside the raw protocol ceilings measured in the same
//! session, each figure min–median–max over repeated runs.
//!
//!     cargo bench -p mailferry --bench migrate                               # W1: 2,000 realistic messages
//!     MAILFERRY_BENCH_CORPUS=w1-10k cargo bench -p mailferry --bench migrate # 10,000 realistic
//!     MAILFERRY_BENCH_CORPUS=100k cargo bench -p mailferry --bench migrate   # 100,000 small
//!
//! Knobs: `MAILFERRY_BENCH_REPEAT` (runs per figure, default 3), `MAILFERRY_BENCH_SESSIONS`
//! (APPEND sessions compared, default `1,4`), `MAILFERRY_BENCH_TLS=0` (skip the TLS runs),
//! `MAILFERRY_BENCH_READBACK=1` (also `--verify none` against `--verify exact`).
//!
//! Prints msgs/s, MB/s, the ratio to the ceiling, the peak RSS (VmHWM) of the `mailferry`
//! process and its CPU seconds per 1,000 messages. Figures go to docs/PERFORMANCE.md.

mod ceilings;
mod runs;

use mailferry_tests::{realistic, Dovecot};
use runs::{Figure, Migrate};

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// 100,000 small messages: a few headers and 1–3 KB of text, distinct Message-IDs.
fn small(n: usize) -> Vec<Vec<u8>> {
    let mut rng = mailferry_tests::corpus::XorShift::new(18);
    (0..n)
        .map(|i| {
            let body_len = rng.range(1000, 3000) as usize;
            let line = "The quick brown fox jumps over the lazy dog, again and again.\r\n";
            let body: String = line.repeat(body_len / line.len() + 1);
            format!(
                "From: sender{}@example.com\r\nTo: user@example.org\r\nSubject: small message {i}\r\nDate: {}\r\nMessage-ID: <small-{i}@bench.example>\r\n\r\n{body}",
                i % 97,
                mailferry_tests::corpus::rfc2822(1_600_000_000 + i as u64 * 60),
            )
            .into_bytes()
        })
        .collect()
}

fn main() {
    let corpus = std::env::var("MAILFERRY_BENCH_CORPUS").unwrap_or_else(|_| "w1".into());
    let repeat: usize = env_or("MAILFERRY_BENCH_REPEAT", 3usize).max(1);
    let sessions: Vec<usize> = std::env::var("MAILFERRY_BENCH_SESSIONS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let msgs = match corpus.as_str() {
        "w1" => realistic(env_or("MAILFERRY_BENCH_MESSAGES", 2000), 2026),
        "w1-10k" => realistic(10_000, 2026),
        "100k" => small(100_000),
        other => panic!("MAILFERRY_BENCH_CORPUS: w1, w1-10k or 100k, not {other:?}"),
    };
    let n = msgs.len();
    let bytes: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    let lab = Dovecot::start();
    lab.add_user("src", "bench-pw");
    lab.seed("src", &msgs);
    drop(msgs);
    // Dovecot's index built, so UIDL/LIST is not a cold scan of every file.
    lab.doveadm(&["force-resync", "-u", "src", "INBOX"]);
    lab.doveadm(&["fetch", "-u", "src", "uid size.virtual", "mailbox", "INBOX", "all"]);
    println!("corpus {corpus}: {n} messages, {:.1} MB, {:.1} KB average", bytes as f64 / 1e6, bytes as f64 / n as f64 / 1024.0);
    println!("{repeat} runs per figure; APPEND sessions compared: {sessions:?}\n");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let most = sessions.iter().copied().max().unwrap_or(4);
    let mut ceiling_retr = Figure::new("ceiling: pipelined UIDL+RETR (POP3)", n, bytes);
    let mut ceiling_one = Figure::new("ceiling: MULTIAPPEND x64, 1 connection", n, bytes);
    let mut ceiling_n = Figure::new_owned(format!("ceiling: MULTIAPPEND x64, {most} connections, one folder"), n, bytes);
    for i in 0..repeat {
        ceiling_retr.add(rt.block_on(ceilings::pop3_retr(&lab, n)), None, None);
        ceiling_one.add(rt.block_on(ceilings::imap_append(&lab, &format!("c1-{i}"), 1)), None, None);
        ceiling_n.add(rt.block_on(ceilings::imap_append(&lab, &format!("cn-{i}"), most)), None, None);
    }
    let ceiling = ceiling_retr.median_rate().min(ceiling_n.median_rate());

    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    let mut plain: Vec<Figure> = sessions.iter().map(|s| Figure::new_owned(format!("migrate, {s} APPEND session(s)"), n, bytes)).collect();
    let tls = env_or("MAILFERRY_BENCH_TLS", 1u8) != 0;
    let mut over_tls = Figure::new_owned(format!("migrate over TLS both sides, {most} sessions"), n, bytes);
    let mut rerun = Figure::new("no-op rerun (copies nothing)", n, 0);
    for i in 0..repeat {
        // Interleaved (A B A B): the machine's noise spreads over every variant alike.
        for (k, s) in sessions.iter().enumerate() {
            let run = Migrate::new(&lab, dir.path(), &format!("p{s}-{i}"), false).sessions(*s);
            let (secs, rss, cpu, json) = run.run();
            assert!(json.contains(&format!("\"copied\":{n}")), "{json}");
            assert_eq!(lab.message_count(&run.user), n, "every message exactly once");
            plain[k].add(secs, Some(rss), Some(cpu));
            if k == 0 {
                let (secs, _, _, json) = run.run();
                assert!(json.contains("\"copied\":0"), "the rerun copies nothing: {json}");
                rerun.add(secs, None, None);
            }
            run.clear();
        }
        if tls {
            let run = Migrate::new(&lab, dir.path(), &format!("tls-{i}"), true).sessions(most);
            let (secs, rss, cpu, json) = run.run();
            assert!(json.contains(&format!("\"copied\":{n}")), "{json}");
            over_tls.add(secs, Some(rss), Some(cpu));
            run.clear();
        }
    }
    rows.push(ceiling_retr);
    rows.push(ceiling_one);
    rows.push(ceiling_n);
    rows.extend(plain);
    if tls {
        rows.push(over_tls);
    }
    rows.push(rerun);
    runs::print(&rows, ceiling);
    if env_or("MAILFERRY_BENCH_READBACK", 0u8) != 0 {
        runs::read_back_cost(&lab, n, bytes, dir.path(), repeat, most);
    }
}
