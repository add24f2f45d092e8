//! Shared helpers for the CLI tests: a lab Dovecot with a source and a destination user,
//! and a way to run the real `mailferry` binary against it.
#![allow(dead_code)]

pub mod private_pg;
pub mod prom;
pub mod server;

use std::path::PathBuf;
use std::process::{Command, Output};

pub use mailferry_tests::{normalize_crlf, Dovecot, LabOptions};

pub const SRC_PW: &str = "src-Secr3t-pw";
pub const DST_PW: &str = "dst-Secr3t-pw";

pub struct Lab {
    pub dovecot: Dovecot,
    pub state_dir: tempfile::TempDir,
}

impl Lab {
    pub fn start() -> Self {
        Self::start_with(LabOptions::default())
    }

    pub fn start_with(opts: LabOptions) -> Self {
        let dovecot = Dovecot::start_with(opts);
        dovecot.add_user("src", SRC_PW);
        dovecot.add_user("dst", DST_PW);
        Self { dovecot, state_dir: tempfile::tempdir().unwrap() }
    }

    pub fn state(&self) -> PathBuf {
        self.state_dir.path().join("state.db")
    }

    pub fn source_url(&self) -> String {
        format!("pop3s://src@127.0.0.1:{}", self.dovecot.pop3s_port())
    }

    pub fn to_tls(&self, folder: &str) -> String {
        format!("imaps://dst@127.0.0.1:{}/{folder}", self.dovecot.imaps_port())
    }

    /// `mailferry migrate` over implicit TLS trusting the lab CA, plus `extra` flags.
    pub fn migrate(&self, extra: &[&str]) -> Run {
        let from = self.source_url();
        let to = self.to_tls("INBOX");
        let mut args = vec!["--from", &from, "--to", &to];
        args.extend_from_slice(extra);
        self.migrate_raw(&args)
    }

    /// `mailferry migrate ARGS --ca-file LAB --state STATE --json` with both passwords in env.
    pub fn migrate_raw(&self, args: &[&str]) -> Run {
        let out = self.command(args).output().expect("run mailferry");
        Run::from(out)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailferry"));
        cmd.arg("migrate")
            .args(args)
            .arg("--ca-file")
            .arg(self.dovecot.ca_file())
            .arg("--state")
            .arg(self.state())
            .arg("--json")
            .args(["--from-password-env", "MF_SRC_PW", "--to-password-env", "MF_DST_PW"])
            .env("MF_SRC_PW", SRC_PW)
            .env("MF_DST_PW", DST_PW)
            .env("MAILFERRY_LOG__FILTER", "mailferry=debug,info");
        cmd
    }

    pub fn dst(&self) -> Vec<Vec<u8>> {
        self.dovecot.messages("dst")
    }

    pub fn src(&self) -> Vec<Vec<u8>> {
        self.dovecot.messages("src")
    }
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: serde_json::Value,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or(serde_json::Value::Null);
        Self { code: out.status.code().unwrap_or(-1), stdout, stderr, json }
    }
}

impl Run {
    pub fn n(&self, key: &str) -> u64 {
        self.json[key].as_u64().unwrap_or_else(|| panic!("no {key} in {}\nstderr: {}", self.stdout, self.stderr))
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit status\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
}

/// What a byte-faithful copy looks like: the source bytes with bare LF made CRLF (the one
/// change IMAP requires, DESIGN.md §2.3) and nothing else. A message stored without a final
/// line ending arrives without one: the CRLF a POP3 server adds before the terminating dot
/// (RFC 1939 §3) is told apart by the LIST size and removed.
pub fn expected_at_destination(source: &[u8]) -> Vec<u8> {
    normalize_crlf(source)
}

/// Compare as multisets: order at the destination is not part of the contract.
pub fn assert_same_messages(source: &[Vec<u8>], dest: &[Vec<u8>]) {
    let mut want: Vec<Vec<u8>> = source.iter().map(|m| expected_at_destination(m)).collect();
    let mut got: Vec<Vec<u8>> = dest.to_vec();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "message count at the destination");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(g == w, "message {i} differs: got {} bytes, want {} bytes; got starts {:?}", g.len(), w.len(), String::from_utf8_lossy(&g[..g.len().min(120)]));
    }
}
