//! The API contract (issue 16): schemathesis 4 runs every check (status codes, content
//! types, headers, response schemas, schema-violating requests refused, schema-valid ones
//! accepted, auth ignored, use after free, ...) through its examples, coverage, fuzzing and
//! stateful phases against a real `mailferry serve` on SQLite, with `openapi/openapi.json`
//! as the server publishes it. Any failure fails the test and is printed.
//!
//! Nothing leaves the machine: the server runs without workers (`--no-workers`), so no job
//! the fuzzer creates ever connects, and its network policy allows 127.0.0.0/8 while
//! denying every other IPv4 address and global IPv6, so jobs naming other hosts are
//! refused at creation; preflight (`?preflight=true`, which probes the mailboxes from the
//! API process) checks the same policy, so it reaches loopback ports at most. The
//! failed-authentication limit is off (the fuzzer sends invalid
//! tokens on purpose). schemathesis is installed with pip into a venv under the target
//! directory when missing (scripts/test does the same before the suite).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::server::bin;

/// Every IPv4 address but 127.0.0.0/8, and global unicast IPv6 (the other IPv6 blocks are
/// on the API's built-in deny list already).
const DENY_ALL_BUT_LOOPBACK: &str = "0.0.0.0/2,64.0.0.0/3,96.0.0.0/4,112.0.0.0/5,120.0.0.0/6,124.0.0.0/7,126.0.0.0/8,128.0.0.0/1,2000::/3";

/// What schemathesis is told beyond the command line. Positive data: the schema cannot say
/// everything `validate` checks (the network policy, the plaintext allow-list, password or
/// OAuth2, `verify: none` only with `delete: keep`, opaque cursors, integers written as
/// `1.0`), so a schema-valid request may still be answered 422, as documented on every
/// such operation; any other refusal (400, 405, 413, 415, 500, ...) still fails the check.
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"#;

fn target_dir() -> PathBuf {
    // CARGO_BIN_EXE_mailferry is <target>/<profile>/mailferry.
    let exe = Path::new(bin());
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("the binary lives under the target directory")
}

/// `<target>/schemathesis-venv/bin/schemathesis`, installed with pip when missing.
fn schemathesis() -> PathBuf {
    let venv = target_dir().join("schemathesis-venv");
    let exe = venv.join("bin").join("schemathesis");
    if exe.exists() {
        return exe;
    }
    let out = Command::new("python3").args(["-m", "venv"]).arg(&venv).output().expect("python3");
    assert!(out.status.success(), "python3 -m venv: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", "schemathesis>=4,<5"])
        .output()
        .expect("pip");
    assert!(out.status.success(), "pip install schemathesis: {}", String::from_utf8_lossy(&out.stderr));
    assert!(exe.exists(), "pip installed schemathesis but not {}", exe.display());
    exe
}

#[test]
fn schemathesis_finds_nothing_against_the_real_server() {
    let st = schemathesis();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("MAILFERRY_DATA_DIR", data.path().display().to_string()),
        ("MAILFERRY_NETWORK__ALLOW", "127.0.0.0/8,localhost".to_owned()),
        ("MAILFERRY_NETWORK__DENY", DENY_ALL_BUT_LOOPBACK.to_owned()),
        ("MAILFERRY_API__AUTH_FAILURE_LIMIT", "0".to_owned()),
        ("MAILFERRY_LOG__FILTER", "warn".to_owned()),
    ];
    let out = Command::new(bin()).args(["token", "create", "--scope", "admin"]).envs(env.clone()).output().unwrap();
    assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).split_whitespace().last().expect("token printed last").to_owned();

    let log = std::fs::File::create(data.path().join("serve.log")).unwrap();
    let mut server = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-workers"])
        .envs(env.clone())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    let _stop = KillOnDrop(server);
    assert!(base.starts_with("http://127.0.0.1:"), "unexpected first line {line:?}");

    let config = data.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let junit = data.path().join("junit.xml");
    let run = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("{base}/api/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--phases", "examples,coverage,fuzzing,stateful"])
        // One worker: with two threads, hypothesis describing its filters parses source with
        // `ast.parse` concurrently, which CPython 3.11 can fail ("AST constructor recursion
        // depth mismatch"), a tool error unrelated to the API.
        .args(["--max-examples", "20", "--max-time", "150", "--workers", "1", "--request-timeout", "10"])
        // Revoking tokens: the fuzzer would revoke its own (an id it read from GET /tokens),
        // and every later request would test nothing but 401. The API tests cover it.
        .args(["--exclude-operation-id", "delete_token"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .current_dir(data.path())
        .output()
        .expect("schemathesis");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let report = std::fs::read_to_string(&junit).unwrap_or_default();
    assert!(
        run.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{}\nserver log:\n{}",
        run.status.code(),
        String::from_utf8_lossy(&run.stderr),
        std::fs::read_to_string(data.path().join("serve.log")).unwrap_or_default()
    );
    // The run did test: operations were exercised and the report holds no failure.
    assert!(report.contains("<testcase"), "no JUnit report: {stdout}");
    assert!(!report.contains("<failure") && !report.contains("<error"), "{report}");
    println!("{stdout}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
