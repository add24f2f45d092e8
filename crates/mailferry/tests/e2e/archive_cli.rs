//! `mailferry migrate --to archive:NAME` and `mailferry archive …` against the lab Dovecot:
//! exact bytes, dedup across mailboxes, exactly once, the first law, verify and tamper
//! detection. Both find the archive in `archive.root`, here `<data_dir>/archive` with the
//! lab's state directory as the data dir.

use crate::common::*;
use mailferry_tests::tricky_corpus;
use sha2::{Digest, Sha256};

fn archive(lab: &Lab, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .arg("archive")
        .args(args)
        .env("MAILFERRY_DATA_DIR", lab.state_dir.path())
        .output()
        .unwrap();
    Run::from(out)
}

fn to_archive(lab: &Lab, user: &str, extra: &[&str]) -> Run {
    let from = format!("pop3s://{user}@127.0.0.1:{}", lab.dovecot.pop3s_port());
    let mut args = vec!["--from", from.as_str(), "--to", "archive:legal"];
    args.extend_from_slice(extra);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .arg("migrate")
        .args(&args)
        .arg("--ca-file")
        .arg(lab.dovecot.ca_file())
        .arg("--state")
        .arg(lab.state())
        .args(["--json", "--from-password-env", "PW"])
        .env("PW", SRC_PW)
        .env("MAILFERRY_DATA_DIR", lab.state_dir.path())
        .output()
        .unwrap();
    Run::from(out)
}

#[test]
fn mailboxes_drain_into_a_deduplicated_verifiable_archive() {
    let lab = Lab::start();
    lab.dovecot.add_user("src2", SRC_PW);
    let corpus: Vec<Vec<u8>> = tricky_corpus().into_iter().map(|(_, m)| m).collect();
    lab.dovecot.seed("src", &corpus);
    // The second mailbox shares three messages byte for byte (dedup) and has one of its own.
    let shared: Vec<Vec<u8>> = corpus.iter().filter(|m| m.len() < 10_000).take(3).cloned().collect();
    let mut second = shared.clone();
    second.push(b"Subject: only in src2\r\n\r\nhello\r\n".to_vec());
    lab.dovecot.seed("src2", &second);

    let run = to_archive(&lab, "src", &["--delete", "after-verified"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), corpus.len() as u64);
    assert_eq!(run.n("deleted"), corpus.len() as u64, "deleted only after durable archive copies");
    let root = run.json["merkle_root"].as_str().expect("the report carries the run's Merkle root");
    assert_eq!(root.len(), 64, "{root}");
    assert!(run.n("merkle_leaves") > 0);
    assert_eq!(lab.src().len(), 0);
    to_archive(&lab, "src2", &[]).assert_code(0);
    let again = to_archive(&lab, "src2", &[]);
    assert_eq!(again.n("copied"), 0, "a rerun archives nothing twice");

    // Stats: every arrival is an occurrence; identical bytes are stored once.
    let stats = archive(&lab, &["stats", "legal"]);
    stats.assert_code(0);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    let unique = {
        let mut d: Vec<_> = corpus.iter().chain(second.iter()).map(|m| Sha256::digest(expected_at_destination(m))).collect();
        d.sort();
        d.dedup();
        d.len() as u64
    };
    assert_eq!(stats["occurrences"], (corpus.len() + second.len()) as u64, "{stats}");
    assert_eq!(stats["messages"], unique, "{stats}");

    let verify = archive(&lab, &["verify", "legal"]);
    verify.assert_code(0);
    assert!(verify.stdout.contains("0 discrepancies"), "{}", verify.stdout);

    // Tamper with one blob on disk: verify must say so, with exit status 3.
    let blobs = lab.state_dir.path().join("archive/legal/blobs");
    let victim = walk(&blobs).into_iter().next().expect("a blob file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&victim, bytes).unwrap();
    let verify = archive(&lab, &["verify", "legal"]);
    verify.assert_code(3);
    assert!(verify.stdout.contains("1 discrepancies"), "{}", verify.stdout);

    let missing = archive(&lab, &["verify", "nope"]);
    missing.assert_code(1);
}

/// An archive run's receipt references the archive occurrences and the chain head.
#[test]
fn an_archive_runs_receipt_names_occurrences_and_the_chain_head() {
    let lab = Lab::start();
    let corpus: Vec<Vec<u8>> = tricky_corpus().into_iter().map(|(_, m)| m).take(4).collect();
    lab.dovecot.seed("src", &corpus);
    let file = lab.state_dir.path().join("receipt.json");
    let run = to_archive(&lab, "src", &["--receipt", file.to_str().unwrap()]);
    run.assert_code(0);
    let receipt = mailferry_proof::Receipt::parse(&std::fs::read(&file).unwrap()).unwrap();
    let verdict = mailferry_proof::check_receipt(&receipt, None);
    assert!(verdict.is_valid(), "{:?}", verdict.findings);
    assert_eq!(receipt.header.target, "archive legal");
    let head = receipt.header.archive_chain_head.as_ref().expect("the archive's chain head");
    assert!(head.seq > 0 && head.hash.len() == 64, "{head:?}");
    assert_eq!(receipt.entries.len(), corpus.len());
    for line in &receipt.entries {
        let e = &line.entry;
        let occ = e.archive.as_ref().expect("an archive occurrence");
        assert_eq!((occ.archive.as_str(), occ.account.as_str(), occ.uidl.as_str()), ("legal", "src", e.source.uidl.as_str()));
        assert!(e.destination.is_none());
        assert_eq!(e.status, "verified", "{e:?}");
        assert_eq!(e.readback_sha256, e.sha256, "the archive stores the exact retrieved bytes");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

#[test]
fn kill_9_during_an_archive_job_then_rerun_is_exactly_once() {
    let lab = Lab::start();
    let msgs = mailferry_tests::realistic(600, 21);
    lab.dovecot.seed("src", &msgs);
    for delay_ms in [200u64, 600] {
        let from = format!("pop3s://src@127.0.0.1:{}", lab.dovecot.pop3s_port());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(["migrate", "--from", &from, "--to", "archive:legal", "--from-password-env", "PW", "--json"])
            .arg("--ca-file")
            .arg(lab.dovecot.ca_file())
            .arg("--state")
            .arg(lab.state())
            .env("PW", SRC_PW)
            .env("MAILFERRY_DATA_DIR", lab.state_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let run = to_archive(&lab, "src", &[]);
    run.assert_code(0);
    let stats = archive(&lab, &["stats", "legal"]);
    let stats: serde_json::Value = serde_json::from_str(&stats.stdout).unwrap();
    let mut unique: Vec<_> = msgs.iter().map(|m| Sha256::digest(expected_at_destination(m))).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(stats["occurrences"], msgs.len() as u64, "each source message arrived exactly once: {stats}");
    assert_eq!(stats["messages"], unique.len() as u64, "orphan blobs from the kill are not counted: {stats}");
    let again = to_archive(&lab, "src", &[]);
    assert_eq!(again.n("copied"), 0);
    let verify = archive(&lab, &["verify", "legal", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&verify.stdout).unwrap();
    let problems: Vec<&serde_json::Value> = report["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["problem"] != "orphan-object")
        .collect();
    assert!(problems.is_empty(), "only orphan objects (reported, not counted) may remain: {report}");
}
