//! The dashboard and the API docs in a real browser: headless Chromium (Debian's
//! `chromium`) driven by `playwright-core` from `web/tests/dashboard.test.mjs` and
//! `web/tests/api_docs.test.mjs`, against a real `mailferry serve` with the lab Dovecot
//! behind it. Each test prepares the mailboxes and the server, runs `node --test` with
//! their coordinates in the environment, and fails when it fails.
//!
//! Needs `chromium` and `web/tests/node_modules` (`./scripts/test` installs both; when only
//! the node modules are missing this test runs `npm ci` itself). Screenshots of every main
//! view land in `target/screenshots/`, failure screenshots in `target/screenshots/failures/`.

// The helpers of the end-to-end tests (tests/e2e/common/). This test is a binary of its
// own, apart from `e2e`: it alone needs Chromium and Node.js, and its page timeouts are
// safer when no other test shares the cores (cargo runs test binaries one at a time).
#[path = "../e2e/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::server::Server;
use common::{Lab, DST_PW, SRC_PW};
use mailferry_tests::realistic;

const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `web/tests/node_modules`, installed from the lock file when missing.
fn ensure_node_modules(tests_dir: &Path) {
    if tests_dir.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(tests_dir)
        .output()
        .expect("npm (Node.js 20+) is needed for the browser tests: apt-get install nodejs npm");
    assert!(out.status.success(), "npm ci in {}: {}", tests_dir.display(), String::from_utf8_lossy(&out.stderr));
}

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n").into_bytes()).collect()
}

/// One browser test at a time: the page timeouts assume the cores are theirs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Chromium is there and `web/tests/node_modules` too: the repository's root.
fn browser_ready() -> PathBuf {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser tests need Debian's chromium (apt-get install chromium; ./scripts/test does it)"
    );
    let root = repo_root();
    ensure_node_modules(&root.join("web/tests"));
    root
}

/// The server log's last 40 lines, for a failure message.
fn log_tail(server: &Server) -> String {
    let logs = server.logs();
    logs.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Swagger UI at /api/docs/ (issue 16): opened from the dashboard's `<noscript>` link with
/// no token, it lists every operation of /api/openapi.json with no console error (the CSP
/// refuses nothing), and "Try it out" of `GET /api/v1/jobs` after "Authorize" answers 200.
#[test]
fn api_docs_in_headless_chromium() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = browser_ready();
    let lab = Lab::start();
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let shots = root.join("target/screenshots");
    let user_data = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "api_docs.test.mjs"])
        .current_dir(root.join("web/tests"))
        .env("BASE_URL", &server.base)
        .env("TOKEN", &server.token)
        .env("CHROMIUM", CHROMIUM)
        .env("FAILURE_DIR", shots.join("failures"))
        .env("USER_DATA_ROOT", user_data.path())
        .output()
        .expect("run node (Node.js 20+)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the API docs tests failed ({}); screenshots in {}\n--- server log (tail) ---\n{}",
        out.status,
        shots.join("failures").display(),
        log_tail(&server)
    );
    assert!(!server.logs().contains(&server.token), "the API token reached the logs");
}

#[test]
fn dashboard_in_headless_chromium() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = browser_ready();
    let tests_dir = root.join("web/tests");

    let lab = Lab::start();
    // `src` → `dst`: the job made from the form; big enough to watch its progress move.
    lab.dovecot.seed("src", &realistic(200, 3));
    // `big` → `bigdst`: long enough to still be running when the test cancels it.
    lab.dovecot.add_user("big", SRC_PW);
    lab.dovecot.add_user("bigdst", DST_PW);
    lab.dovecot.seed("big", &realistic(1500, 1));
    // The batch's mailboxes.
    for user in ["b1", "b2"] {
        lab.dovecot.add_user(user, SRC_PW);
        lab.dovecot.add_user(&format!("{user}dst"), DST_PW);
        lab.dovecot.seed(user, &small(5, user));
    }
    // `arch1`, `arch2` → archive `legal`: two mailboxes sharing a message (dedup, two
    // occurrences), one with HTML that must show as text.
    let shared = b"From: Carol <carol@example.com>\r\nTo: legal@example.com\r\nSubject: Quarterly invoice\r\n\
        Message-ID: <inv1@lab>\r\nDate: Mon, 4 Mar 2024 10:00:00 +0000\r\n\r\nPlease pay the zeppelin invoice.\r\n"
        .to_vec();
    let html = b"From: Mallory <mallory@example.com>\r\nSubject: Totally safe\r\n\r\n<img src=x onerror=alert(1)><b>bold?</b>\r\n".to_vec();
    for (user, own) in [("arch1", html), ("arch2", b"Subject: Lunch\r\n\r\nTacos?\r\n".to_vec())] {
        lab.dovecot.add_user(user, SRC_PW);
        lab.dovecot.seed(user, &[shared.clone(), own]);
    }
    let server = Server::start(&lab.dovecot, None, &[], &[]);

    let shots = root.join("target/screenshots");
    let user_data = tempfile::tempdir().unwrap();
    let out = Command::new("node")
        .args(["--test", "--test-reporter=spec", "dashboard.test.mjs"])
        .current_dir(&tests_dir)
        .env("BASE_URL", &server.base)
        .env("TOKEN", &server.token)
        .env("LAB_HOST", "127.0.0.1")
        .env("POP3S_PORT", lab.dovecot.pop3s_port().to_string())
        .env("IMAPS_PORT", lab.dovecot.imaps_port().to_string())
        .env("SRC_PW", SRC_PW)
        .env("DST_PW", DST_PW)
        .env("LAB_CA_FILE", lab.dovecot.ca_file())
        .env("CHROMIUM", CHROMIUM)
        .env("SCREENSHOT_DIR", &shots)
        .env("FAILURE_DIR", shots.join("failures"))
        .env("USER_DATA_ROOT", user_data.path())
        .output()
        .expect("run node (Node.js 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the dashboard tests failed ({}); screenshots in {}\n--- server log (tail) ---\n{}",
        out.status,
        shots.join("failures").display(),
        log_tail(&server)
    );
    // The token typed into the page never reaches the server's logs.
    assert!(!server.logs().contains(&server.token), "the API token reached the logs");
}
