//! Throughput benchmark: 2,000 realistic messages (mostly 2–20 KB, some MB-sized
//! attachments, ~85 KB on average) Dovecot → Dovecot on loopback, next to the raw protocol
//! ceilings measured the same way.
//!
//!     cargo bench -p mailferry --bench migrate            # 2,000 messages
//!     MAILFERRY_BENCH_MESSAGES=500 cargo bench -p mailferry --bench migrate
//!
//! Prints msgs/s, MB/s and the peak RSS of the `mailferry migrate` process (from
//! getrusage(RUSAGE_CHILDREN) after it exits). Figures go to docs/PERFORMANCE.md.

use std::process::Command;
use std::time::{Duration, Instant};

use mailferry_tests::{realistic, Dovecot};

struct Row {
    name: &'static str,
    msgs: usize,
    bytes: u64,
    secs: f64,
    rss_mb: Option<f64>,
}

fn print(rows: &[Row]) {
    println!("\n| run | msgs | MB | seconds | msgs/s | MB/s | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.2} | {:.0} | {:.1} | {} |",
            r.name,
            r.msgs,
            r.bytes as f64 / 1e6,
            r.secs,
            r.msgs as f64 / r.secs,
            r.bytes as f64 / 1e6 / r.secs,
            r.rss_mb.map(|m| format!("{m:.1} MB")).unwrap_or_else(|| "—".into()),
        );
    }
}

/// Peak resident set (VmHWM) of a running process, in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

fn migrate(lab: &Dovecot, state: &std::path::Path, from: &str, to: &str, tls: bool) -> (Duration, f64, String) {
    migrate_with(lab, state, from, to, tls, &[])
}

fn migrate_with(lab: &Dovecot, state: &std::path::Path, from: &str, to: &str, tls: bool, extra: &[&str]) -> (Duration, f64, String) {
    let (from, to) = if tls {
        (format!("pop3s://{from}@127.0.0.1:{}", lab.pop3s_port()), format!("imaps://{to}@127.0.0.1:{}", lab.imaps_port()))
    } else {
        (format!("pop3://{from}@127.0.0.1:{}", lab.pop3_port()), format!("imap://{to}@127.0.0.1:{}", lab.imap_port()))
    };
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["migrate", "--from", &from, "--to", &to, "--json", "--allow-plaintext"])
        .args(extra)
        // The bench's own knobs are not config keys (the binary refuses unknown MAILFERRY_*).
        .env_remove("MAILFERRY_BENCH_MESSAGES")
        .env_remove("MAILFERRY_BENCH_REPEAT")
        .arg("--ca-file")
        .arg(lab.ca_file())
        .arg("--state")
        .arg(state)
        .args(["--from-password-env", "PW", "--to-password-env", "PW"])
        .env("PW", "bench-pw")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mailferry");
    // The high-water mark only grows; the last reading before exit is the peak.
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_rss_mb(pid).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    (elapsed, peak, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let n: usize = std::env::var("MAILFERRY_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let lab = Dovecot::start();
    for u in ["src", "dst", "dst-tls", "ceiling"] {
        lab.add_user(u, "bench-pw");
    }
    let msgs = realistic(n, 2026);
    let bytes: u64 = msgs.iter().map(|m| m.len() as u64).sum();
    lab.seed("src", &msgs);
    drop(msgs);
    // Build Dovecot's index so POP3 UIDL/LIST is not a cold scan of 2,000 files.
    lab.doveadm(&["force-resync", "-u", "src", "INBOX"]);
    lab.doveadm(&["fetch", "-u", "src", "uid size.virtual", "mailbox", "INBOX", "all"]);
    println!("corpus: {n} messages, {:.1} MB, {:.0} KB average", bytes as f64 / 1e6, bytes as f64 / n as f64 / 1024.0);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    rows.push(rt.block_on(ceilings::pop3_retr(&lab, n)));
    rows.push(rt.block_on(ceilings::imap_append(&lab)));

    let state = tempfile::tempdir().unwrap();
    let (t, rss, _) = migrate(&lab, &state.path().join("plain.db"), "src", "dst", false);
    rows.push(Row { name: "mailferry migrate (plaintext)", msgs: n, bytes, secs: t.as_secs_f64(), rss_mb: Some(rss) });
    let (t, rss, _) = migrate(&lab, &state.path().join("tls.db"), "src", "dst-tls", true);
    rows.push(Row { name: "mailferry migrate (TLS both sides)", msgs: n, bytes, secs: t.as_secs_f64(), rss_mb: Some(rss) });
    let (t, _, json) = migrate(&lab, &state.path().join("tls.db"), "src", "dst-tls", true);
    assert!(json.contains("\"copied\":0"), "the rerun copies nothing: {json}");
    rows.push(Row { name: "no-op rerun (TLS)", msgs: n, bytes: 0, secs: t.as_secs_f64(), rss_mb: None });
    assert_eq!(lab.message_count("dst"), n);
    assert_eq!(lab.message_count("dst-tls"), n);
    print(&rows);
    read_back_cost(&lab, n, bytes, state.path());
}

/// W1, one mailbox: the same plaintext migration with every copy read back and compared
/// (`--verify exact`, the default) and without read-back (`--verify none`), alternated
/// `MAILFERRY_BENCH_REPEAT` times (default 3) into fresh destinations: min–median–max.
fn read_back_cost(lab: &Dovecot, n: usize, bytes: u64, dir: &std::path::Path) {
    let repeat: usize = std::env::var("MAILFERRY_BENCH_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let mut rates: [(&str, Vec<f64>, Vec<f64>); 2] = [("--verify none", vec![], vec![]), ("--verify exact", vec![], vec![])];
    for i in 0..repeat {
        for (k, (flag, msgs_s, rss)) in rates.iter_mut().enumerate() {
            let user = format!("w1-{k}-{i}");
            lab.add_user(&user, "bench-pw");
            let level = flag.trim_start_matches("--verify ");
            let state = dir.join(format!("{user}.db"));
            let (t, peak, json) = migrate_with(lab, &state, "src", &user, false, &["--verify", level]);
            assert!(json.contains(&format!("\"copied\":{n}")), "{json}");
            assert_eq!(lab.message_count(&user), n);
            msgs_s.push(n as f64 / t.as_secs_f64());
            rss.push(peak);
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    println!("\nW1 read-back cost, plaintext, {n} messages, {:.1} MB, {repeat} runs each:", bytes as f64 / 1e6);
    println!("| run | msgs/s min–median–max | MB/s median | peak RSS max |");
    println!("|---|---|---:|---:|");
    let mut medians = Vec::new();
    for (flag, msgs_s, rss) in rates.iter_mut() {
        let (lo, med, hi) = stats(msgs_s);
        let (_, _, rss_hi) = stats(rss);
        medians.push(med);
        println!("| mailferry migrate {flag} | {lo:.0} – {med:.0} – {hi:.0} | {:.1} | {rss_hi:.1} MB |", med * bytes as f64 / n as f64 / 1e6);
    }
    println!("read-back keeps {:.0} % of the no-read-back rate (median / median)", 100.0 * medians[1] / medians[0]);
}

mod ceilings {
    //! Raw protocol ceilings on the same lab: what Dovecot can serve and accept with the
    //! best pipelining our clients know, with nothing else (no ledger, no digests).
    use super::*;
    use mailferry_imap::{AppendBody, AppendMessage, ImapOptions, ImapSession};
    use mailferry_model::{ImapAuth, ImapEndpoint, Pop3Auth, Pop3Endpoint, Security, TlsOptions};
    use mailferry_pop3::{Pop3Options, Pop3Session};
    use secrecy::SecretString;

    fn plain() -> TlsOptions {
        TlsOptions { allow_plaintext: true, ..TlsOptions::default() }
    }

    pub async fn pop3_retr(lab: &Dovecot, n: usize) -> Row {
        let ep = Pop3Endpoint {
            host: "127.0.0.1".into(),
            port: lab.pop3_port(),
            security: Security::None,
            username: "src".into(),
            secret: SecretString::from("bench-pw"),
            auth: Pop3Auth::Auto,
            tls: plain(),
        };
        let started = Instant::now();
        let mut pop = Pop3Session::connect(&ep, &Pop3Options::default()).await.unwrap();
        let listing = pop.uidl().await.unwrap();
        let numbers: Vec<u32> = listing.entries.iter().map(|(n, _)| *n).collect();
        let mut bytes = 0u64;
        for window in numbers.chunks(16) {
            pop.send_retr_many(window).await.unwrap();
            for _ in window {
                pop.read_retr_status().await.unwrap();
                while let Some(chunk) = pop.read_retr_chunk().await.unwrap() {
                    bytes += chunk.len() as u64;
                }
            }
        }
        pop.quit().await.unwrap();
        assert_eq!(numbers.len(), n);
        Row { name: "ceiling: pipelined UIDL+RETR (POP3, plaintext)", msgs: n, bytes, secs: started.elapsed().as_secs_f64(), rss_mb: None }
    }

    pub async fn imap_append(lab: &Dovecot) -> Row {
        let ep = ImapEndpoint {
            host: "127.0.0.1".into(),
            port: lab.imap_port(),
            security: Security::None,
            username: "ceiling".into(),
            credential: mailferry_model::Credential::Password(SecretString::from("bench-pw")),
            auth: ImapAuth::Auto,
            tls: plain(),
            folder: "INBOX".into(),
            flags: vec![],
        };
        let msgs: Vec<AppendMessage> = lab
            .messages("src")
            .into_iter()
            .map(|m| AppendMessage { body: AppendBody::Memory(m), flags: vec![], internal_date: None, has_nul: false })
            .collect();
        let bytes: u64 = msgs.iter().map(|m| m.body.len()).sum();
        let started = Instant::now();
        let mut appender = ImapSession::connect(&ep, &ImapOptions::default()).await.unwrap().into_appender();
        for batch in msgs.chunks(64) {
            appender.append_batch(batch).await.unwrap();
        }
        appender.logout().await;
        Row { name: "ceiling: MULTIAPPEND x64 (IMAP, plaintext)", msgs: msgs.len(), bytes, secs: started.elapsed().as_secs_f64(), rss_mb: None }
    }
}
