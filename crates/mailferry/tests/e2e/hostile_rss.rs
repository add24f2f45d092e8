//! Memory stays flat whatever a hostile source sends (issue 13 §2): the `mailferry`
//! process's peak resident set, read from /proc while it runs, against a scripted POP3
//! server that answers one command with a line of 64 MiB without an end. A client that
//! buffered the line would grow by the line; ours stops at its line limit, fails the run
//! with a clear sentence and stays where a normal run stays.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use mailferry_tests::fake::ANY_CONN;
use mailferry_tests::{FakeConfig, FakePop3, FakeScript};

/// Exit status, stderr and the peak resident set (VmHWM, MB) of one `mailferry migrate`
/// from the scripted server into the lab.
fn migrate_from(lab: &Lab, fake: &FakePop3) -> (i32, String, f64) {
    let from = format!("pop3://u@127.0.0.1:{}", fake.port());
    let to = lab.to_tls("INBOX");
    let mut child = lab
        .command(&["--from", &from, "--to", &to, "--allow-plaintext", "--attempts", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailferry");
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait().expect("wait").is_none() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        peak = peak.max(kb.unwrap_or(0.0) / 1024.0);
        std::thread::sleep(Duration::from_millis(2));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), peak)
}

// The scripted server runs on this test's runtime; the blocking waits below are short
// (the child process does the work), so a multi-threaded runtime keeps it answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_line_from_the_source_leaves_memory_flat() {
    let lab = Lab::start();
    let msgs: Vec<Vec<u8>> = (0..20).map(|i| format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()).collect();
    // A normal run against the same scripted server: where memory stays.
    let normal = FakePop3::start(FakeConfig::new("u", SRC_PW, msgs.clone()));
    let (code, stderr, baseline) = tokio::task::block_in_place(|| migrate_from(&lab, &normal));
    assert_eq!(code, 0, "{stderr}");

    for command in ["UIDL", "LIST", "RETR"] {
        let mut cfg = FakeConfig::new("u", SRC_PW, msgs.clone());
        cfg.script = FakeScript { endless_line_on: Some((ANY_CONN, command.into())), ..Default::default() };
        let hostile = FakePop3::start(cfg);
        let (code, stderr, peak) = tokio::task::block_in_place(|| migrate_from(&lab, &hostile));
        assert_eq!(code, 1, "{command}: the run fails\n{stderr}");
        assert!(stderr.contains("line") || stderr.contains("long"), "{command}: a clear sentence: {stderr}");
        eprintln!("{command}: peak RSS {peak:.1} MB, a normal run {baseline:.1} MB");
        assert!(
            peak < baseline + 24.0,
            "{command}: peak RSS {peak:.1} MB against {baseline:.1} MB for a normal run (the server sent up to 64 MiB)"
        );
    }
}
