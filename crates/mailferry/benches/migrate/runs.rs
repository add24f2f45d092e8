//! Running `mailferry migrate` as an admin would, and the figures: min–median–max of each.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_tests::Dovecot;

/// One figure: repeated runs of the same thing.
pub struct Figure {
    name: String,
    msgs: usize,
    bytes: u64,
    secs: Vec<f64>,
    rss_mb: Vec<f64>,
    cpu_secs: Vec<f64>,
}

fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

impl Figure {
    pub fn new(name: &str, msgs: usize, bytes: u64) -> Self {
        Self::new_owned(name.to_owned(), msgs, bytes)
    }

    pub fn new_owned(name: String, msgs: usize, bytes: u64) -> Self {
        Self { name, msgs, bytes, secs: vec![], rss_mb: vec![], cpu_secs: vec![] }
    }

    pub fn add(&mut self, secs: f64, rss_mb: Option<f64>, cpu_secs: Option<f64>) {
        self.secs.push(secs);
        self.rss_mb.extend(rss_mb);
        self.cpu_secs.extend(cpu_secs);
    }

    pub fn median_rate(&self) -> f64 {
        let rates: Vec<f64> = self.secs.iter().map(|s| self.msgs as f64 / s).collect();
        spread(&rates).1
    }
}

/// The table: each figure's rate and, for migrations, its ratio to `ceiling` (msgs/s, the
/// lower of the source's and the destination's ceilings).
pub fn print(rows: &[Figure], ceiling: f64) {
    println!("| run | msgs/s min – median – max | MB/s (median) | seconds (median) | / ceiling | peak RSS (max) | CPU s per 1,000 msgs (median) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let rates: Vec<f64> = r.secs.iter().map(|s| r.msgs as f64 / s).collect();
        let (lo, med, hi) = spread(&rates);
        let (_, secs, _) = spread(&r.secs);
        let mbs = if r.bytes > 0 { format!("{:.1}", r.bytes as f64 / 1e6 / secs) } else { "—".into() };
        let ratio = if r.name.starts_with("migrate") { format!("{:.0} %", 100.0 * med / ceiling) } else { "—".into() };
        let rss = if r.rss_mb.is_empty() { "—".into() } else { format!("{:.1} MB", spread(&r.rss_mb).2) };
        let cpu = if r.cpu_secs.is_empty() { "—".into() } else { format!("{:.2}", spread(&r.cpu_secs).1 * 1000.0 / r.msgs as f64) };
        let rate = if r.bytes == 0 { format!("{:.3} s – {secs:.3} s – {:.3} s", spread(&r.secs).0, spread(&r.secs).2) } else { format!("{lo:.0} – {med:.0} – {hi:.0}") };
        println!("| {} | {rate} | {mbs} | {secs:.2} | {ratio} | {rss} | {cpu} |", r.name);
    }
    println!("\nceiling for the ratios: {ceiling:.0} msgs/s (the lower of the POP3 and the N-connection APPEND medians)");
}

/// Peak resident set (VmHWM) of a running process, in MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// User plus system CPU seconds of a running process (/proc/PID/stat, in clock ticks of
/// 1/100 s on Linux).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// One `mailferry migrate` of the lab's `src` into a fresh destination user.
pub struct Migrate<'a> {
    lab: &'a Dovecot,
    pub user: String,
    state: PathBuf,
    tls: bool,
    sessions: Option<usize>,
    extra: Vec<String>,
}

impl<'a> Migrate<'a> {
    pub fn new(lab: &'a Dovecot, dir: &Path, user: &str, tls: bool) -> Self {
        lab.add_user(user, "bench-pw");
        Self { lab, user: user.into(), state: dir.join(format!("{user}.db")), tls, sessions: None, extra: vec![] }
    }

    pub fn sessions(mut self, n: usize) -> Self {
        self.sessions = Some(n);
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    /// Seconds, peak RSS (MB), CPU seconds, the JSON report.
    pub fn run(&self) -> (f64, f64, f64, String) {
        let lab = self.lab;
        let (from, to) = if self.tls {
            (format!("pop3s://src@127.0.0.1:{}", lab.pop3s_port()), format!("imaps://{}@127.0.0.1:{}", self.user, lab.imaps_port()))
        } else {
            (format!("pop3://src@127.0.0.1:{}", lab.pop3_port()), format!("imap://{}@127.0.0.1:{}", self.user, lab.imap_port()))
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailferry"));
        cmd.args(["migrate", "--from", &from, "--to", &to, "--json", "--allow-plaintext"])
            .args(&self.extra)
            .arg("--ca-file")
            .arg(lab.ca_file())
            .arg("--state")
            .arg(&self.state)
            .args(["--from-password-env", "PW", "--to-password-env", "PW"])
            .env("PW", "bench-pw")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The bench's own knobs are not config keys (the binary refuses unknown MAILFERRY_*).
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("MAILFERRY_BENCH_")) {
            cmd.env_remove(k);
        }
        if let Some(n) = self.sessions {
            cmd.env("MAILFERRY_WORKER__PIPELINE__APPEND_SESSIONS", n.to_string());
        }
        let started = Instant::now();
        let mut child = cmd.spawn().expect("run mailferry");
        // The high-water mark only grows; the last reading before exit is the peak.
        let pid = child.id();
        let (mut peak, mut cpu) = (0.0f64, 0.0f64);
        while child.try_wait().expect("wait").is_none() {
            peak = peak.max(peak_rss_mb(pid).unwrap_or(0.0));
            cpu = cpu.max(cpu_secs(pid).unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = started.elapsed().as_secs_f64();
        let out = child.wait_with_output().expect("output");
        assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        (secs, peak, cpu, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Remove the destination's mail (the disk holds one copy at a time).
    pub fn clear(&self) {
        let _ = std::fs::remove_dir_all(self.lab.home(&self.user));
    }
}

/// W1 with every copy read back and compared (`--verify exact`, the default) and without
/// read-back (`--verify none`), alternated `repeat` times into fresh destinations.
pub fn read_back_cost(lab: &Dovecot, n: usize, bytes: u64, dir: &Path, repeat: usize, sessions: usize) {
    let mut rows = vec![Figure::new("migrate --verify none", n, bytes), Figure::new("migrate --verify exact", n, bytes)];
    for i in 0..repeat {
        for (k, level) in ["none", "exact"].iter().enumerate() {
            let run = Migrate::new(lab, dir, &format!("rb-{level}-{i}"), false).sessions(sessions).arg("--verify").arg(level);
            let (secs, rss, cpu, json) = run.run();
            assert!(json.contains(&format!("\"copied\":{n}")), "{json}");
            rows[k].add(secs, Some(rss), Some(cpu));
            run.clear();
        }
    }
    println!("\nread-back cost, plaintext, {sessions} APPEND sessions:");
    let ceiling = rows[0].median_rate();
    print(&rows, ceiling);
    println!("(ratios here are to the --verify none median)");
}
