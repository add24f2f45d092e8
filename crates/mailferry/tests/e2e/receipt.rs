//! `mailferry receipt public-key | verify | prove` (issue 14) end to end: a real migration
//! on a real Dovecot writes the receipt, the real binary checks it offline, against the
//! destination's folder, and proves one message; the exit statuses are the contract.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use mailferry_proof::{merkle, Receipt, ReceiptSigner};
use sha2::{Digest as _, Sha256};

/// Five messages: CRLF, bare LF (the one change: LF → CRLF), dot lines, no final newline.
fn corpus() -> Vec<Vec<u8>> {
    vec![
        b"Subject: one\r\nMessage-ID: <one@lab>\r\n\r\nfirst body\r\n".to_vec(),
        b"Subject: two\nMessage-ID: <two@lab>\n\nbare LF body\n".to_vec(),
        b"Subject: three\r\nMessage-ID: <three@lab>\r\n\r\n..dot line\r\n.\r\nafter\r\n".to_vec(),
        b"Subject: four\r\nMessage-ID: <four@lab>\r\n\r\nno final newline".to_vec(),
        b"Subject: five\r\nMessage-ID: <five@lab>\r\n\r\nfifth body\r\n".to_vec(),
    ]
}

/// A lab after `migrate --receipt`: the data dir (receipt key) is the lab's state dir.
struct Migrated {
    lab: Lab,
    receipt: PathBuf,
}

impl Migrated {
    fn new(folder: &str) -> Self {
        let lab = Lab::start();
        lab.dovecot.seed("src", &corpus());
        let receipt = lab.state_dir.path().join("r.json");
        let (from, to) = (lab.source_url(), lab.to_tls(folder));
        let out = lab
            .command(&["--from", &from, "--to", &to, "--receipt", receipt.to_str().unwrap()])
            .env("MAILFERRY_DATA_DIR", lab.state_dir.path())
            .output()
            .unwrap();
        let run = Run::from(out);
        run.assert_code(0);
        assert_eq!(run.n("copied"), 5);
        Self { lab, receipt }
    }

    fn parsed(&self) -> Receipt {
        Receipt::parse(&std::fs::read(&self.receipt).unwrap()).unwrap()
    }

    /// `mailferry receipt ARGS` with the lab's data dir and the destination password in env.
    fn receipt_cmd(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .arg("receipt")
            .args(args)
            .env("MAILFERRY_DATA_DIR", self.lab.state_dir.path())
            .env("MF_DST_PW", DST_PW)
            .output()
            .unwrap();
        Run::from(out)
    }

    fn file(&self) -> &str {
        self.receipt.to_str().unwrap()
    }

    /// `receipt verify FILE --against URL` over implicit TLS trusting the lab CA.
    fn against(&self, url: &str, extra: &[&str]) -> Run {
        let ca = self.lab.dovecot.ca_file();
        let mut args = vec!["verify", self.file(), "--against", url, "--password-env", "MF_DST_PW", "--ca-file", ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.receipt_cmd(&args)
    }

    fn imaps(&self, folder: &str) -> String {
        format!("imaps://dst@127.0.0.1:{}/{folder}", self.lab.dovecot.imaps_port())
    }

    /// A copy of the receipt with `edit` applied to its text.
    fn edited(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let path = self.lab.state_dir.path().join(name);
        let text = std::fs::read_to_string(&self.receipt).unwrap();
        let changed = edit(text.clone());
        assert_ne!(changed, text, "the edit changed nothing");
        std::fs::write(&path, changed).unwrap();
        path
    }
}

fn all_output(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_migration_receipt_verifies_offline_with_the_installation_key_and_not_another() {
    let m = Migrated::new("INBOX");
    let r = m.parsed();
    assert_eq!(r.entries.len(), 5);

    let embedded = m.receipt_cmd(&["verify", m.file()]);
    embedded.assert_code(0);
    assert!(embedded.stdout.starts_with("valid: "), "{}", embedded.stdout);
    assert!(embedded.stdout.contains("5 entries") && embedded.stdout.contains(&r.header.merkle_root), "{}", embedded.stdout);
    assert!(embedded.stderr.contains("checked with the key inside the receipt; pass --public-key"), "{}", embedded.stderr);

    // The installation's key, obtained separately, is the one that signed.
    let key = m.receipt_cmd(&["public-key"]);
    key.assert_code(0);
    let key_text = key.stdout.trim().to_owned();
    assert_eq!(key.stdout, format!("{key_text}\n"));
    assert_eq!(key_text, r.public_key);
    // The key `migrate --state` signed with is found by its --state wherever the data dir is.
    let elsewhere = tempfile::tempdir().unwrap();
    let public_key_in = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(["receipt", "public-key"])
            .args(extra)
            .env("MAILFERRY_DATA_DIR", elsewhere.path())
            .output()
            .unwrap();
        Run::from(out)
    };
    let by_state = public_key_in(&["--state", m.lab.state().to_str().unwrap()]);
    by_state.assert_code(0);
    assert_eq!(by_state.stdout.trim(), key_text);
    assert_ne!(public_key_in(&[]).stdout.trim(), key_text, "another data dir, another key");
    let given = m.receipt_cmd(&["verify", m.file(), "--public-key", &key_text]);
    given.assert_code(0);
    assert!(given.stdout.contains("signed by the given key"), "{}", given.stdout);
    assert!(!given.stderr.contains("inside the receipt"), "{}", given.stderr);
    // As a file holding it.
    let key_file = m.lab.state_dir.path().join("key.pub");
    std::fs::write(&key_file, &key.stdout).unwrap();
    m.receipt_cmd(&["verify", m.file(), "--public-key", path_str(&key_file)]).assert_code(0);

    let other = ReceiptSigner::generate().public_key().to_base64();
    let wrong = m.receipt_cmd(&["verify", m.file(), "--public-key", &other]);
    wrong.assert_code(3);
    assert!(wrong.stdout.contains("signature: does not verify with the given public key"), "{}", wrong.stdout);
}

#[test]
fn usage_errors_are_2_and_a_file_that_is_no_receipt_is_3() {
    let m = Migrated::new("INBOX");
    let missing = m.lab.state_dir.path().join("absent.json");
    let run = m.receipt_cmd(&["verify", path_str(&missing)]);
    run.assert_code(2);
    assert!(run.stderr.contains("cannot read"), "{}", run.stderr);
    m.receipt_cmd(&["verify", m.file(), "--public-key", "not-a-key"]).assert_code(2);
    m.receipt_cmd(&["verify", m.file(), "--no-such-flag"]).assert_code(2);
    m.receipt_cmd(&["verify"]).assert_code(2);
    // TLS and password flags mean nothing without --against.
    m.receipt_cmd(&["verify", m.file(), "--password-env", "MF_DST_PW"]).assert_code(2);
    // --against needs an imap URL and a password.
    m.receipt_cmd(&["verify", m.file(), "--against", "pop3s://dst@127.0.0.1", "--password-env", "MF_DST_PW"]).assert_code(2);
    m.receipt_cmd(&["verify", m.file(), "--against", &m.imaps("INBOX")]).assert_code(2);
    m.receipt_cmd(&["verify", m.file(), "--against", &m.imaps("INBOX"), "--password-env", "MF_UNSET_VAR"]).assert_code(2);

    let garbage = m.lab.state_dir.path().join("garbage.json");
    std::fs::write(&garbage, b"this is not json").unwrap();
    let run = m.receipt_cmd(&["verify", path_str(&garbage)]);
    run.assert_code(3);
    assert!(run.stderr.contains("is not a valid receipt"), "{}", run.stderr);
    std::fs::write(&garbage, br#"{"entries": 5}"#).unwrap();
    m.receipt_cmd(&["verify", path_str(&garbage)]).assert_code(3);
}

#[test]
fn one_changed_byte_in_an_entry_fails_and_names_its_uidl() {
    let m = Migrated::new("INBOX");
    let r = m.parsed();
    let key = m.receipt_cmd(&["public-key"]).stdout.trim().to_owned();
    let target = &r.entries[2].entry;
    let others: Vec<&str> = r.entries.iter().map(|l| l.entry.source.uidl.as_str()).filter(|u| *u != target.source.uidl).collect();

    // One hex digit of its read-back digest.
    let digest = target.readback_sha256.clone().expect("a verified copy has its read-back digest");
    let field = format!("\"readback_sha256\":\"{digest}\"");
    let flipped = format!("{}{}", if digest.starts_with('0') { '1' } else { '0' }, &digest[1..]);
    let digest_edit = m.edited("digest.json", |t| t.replacen(&field, &format!("\"readback_sha256\":\"{flipped}\""), 1));
    // Its size.
    let size_edit = m.edited("size.json", |t| {
        let at = t.find("\"seq\":2,").unwrap();
        let s = t[at..].find("\"size\":").unwrap() + at + "\"size\":".len();
        format!("{}{}{}", &t[..s], target.size + 1, &t[s + target.size.to_string().len()..])
    });
    for file in [&digest_edit, &size_edit] {
        for extra in [vec![], vec!["--public-key", key.as_str()]] {
            let mut args = vec!["verify", path_str(file)];
            args.extend(extra);
            let run = m.receipt_cmd(&args);
            run.assert_code(3);
            let out = all_output(&run);
            assert!(out.contains(&format!("entry 2 (UIDL {:?})", target.source.uidl)), "{out}");
            assert!(out.contains("changed after signing"), "{out}");
            for u in &others {
                assert!(!out.contains(&format!("{u:?}")), "only the changed entry is named: {out}");
            }
        }
    }
}

#[test]
fn against_the_destination_every_copy_matches_until_one_is_changed_and_one_deleted() {
    let m = Migrated::new("INBOX");
    let r = m.parsed();
    let run = m.against(&m.imaps("INBOX"), &[]);
    run.assert_code(0);
    assert!(run.stdout.contains("5 copies checked, 5 match, 0 missing or changed"), "{}", run.stdout);
    // STARTTLS on the other port names the same folder.
    let starttls = format!("imap://dst@127.0.0.1:{}/INBOX", m.lab.dovecot.imap_port());
    m.against(&starttls, &[]).assert_code(0);

    // Change one byte of one copy's body on disk (same length, so Dovecot's S= holds), and
    // delete another copy.
    let files = m.lab.dovecot.folder_files("dst", "INBOX");
    let file_of = |digest: &str| {
        files.iter().find(|f| format!("{:x}", Sha256::digest(std::fs::read(f).unwrap())) == digest).cloned().expect("the copy's file")
    };
    let (changed, deleted, kept) = (&r.entries[3].entry, &r.entries[1].entry, &r.entries[0].entry);
    let changed_file = file_of(changed.readback_sha256.as_deref().unwrap());
    let mut bytes = std::fs::read(&changed_file).unwrap();
    let body = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    bytes[body] ^= 0x20; // ASCII letter case
    std::fs::write(&changed_file, &bytes).unwrap();
    std::fs::remove_file(file_of(deleted.readback_sha256.as_deref().unwrap())).unwrap();

    let run = m.against(&m.imaps("INBOX"), &[]);
    run.assert_code(3);
    let uid = |e: &mailferry_proof::ReceiptEntry| e.destination.as_ref().unwrap().uid.unwrap();
    let line = |what: &str, e: &mailferry_proof::ReceiptEntry| format!("{what}  entry {} (UIDL {:?}) UID {}", e.seq, e.source.uidl, uid(e));
    assert!(run.stdout.contains(&line("changed", changed)), "{}", run.stdout);
    assert!(run.stdout.contains(&line("missing", deleted)), "{}", run.stdout);
    assert!(!run.stdout.contains(&format!("{:?}", kept.source.uidl)), "{}", run.stdout);
    assert!(run.stdout.contains("5 copies checked, 3 match, 2 missing or changed"), "{}", run.stdout);
}

#[test]
fn a_missing_folder_means_every_copy_missing_and_is_not_created() {
    let m = Migrated::new("Kept");
    let uidls: Vec<String> = m.parsed().entries.iter().map(|l| l.entry.source.uidl.clone()).collect();
    m.against(&m.imaps("Kept"), &[]).assert_code(0);

    // Another folder is another destination: nothing to compare, nothing fails.
    let elsewhere = m.against(&m.imaps("INBOX"), &[]);
    elsewhere.assert_code(0);
    assert!(elsewhere.stdout.contains("not checked (another destination): 5 copies at imap dst@127.0.0.1"), "{}", elsewhere.stdout);

    let dir = m.lab.dovecot.folder_dir("dst", "Kept");
    std::fs::remove_dir_all(&dir).unwrap();
    let run = m.against(&m.imaps("Kept"), &[]);
    run.assert_code(3);
    for u in &uidls {
        assert!(run.stdout.contains(&format!("(UIDL {u:?})")), "{u}: {}", run.stdout);
    }
    assert!(run.stdout.contains("the folder \"Kept\" does not exist"), "{}", run.stdout);
    assert!(!dir.exists(), "a verification created the folder it was checking");
}

#[test]
fn prove_prints_an_inclusion_proof_that_checks_against_the_signed_root() {
    let m = Migrated::new("INBOX");
    let r = m.parsed();
    let root = merkle::parse_hash(&r.header.merkle_root).unwrap();
    for (i, line) in r.entries.iter().enumerate() {
        let run = m.receipt_cmd(&["prove", m.file(), &line.entry.source.uidl]);
        run.assert_code(0);
        let p: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
        assert_eq!(p["uidl"], line.entry.source.uidl.as_str());
        assert_eq!(p["seq"], i);
        assert_eq!(p["tree_size"], 5);
        assert_eq!(p["merkle_root"], r.header.merkle_root.as_str());
        assert_eq!(p["entry"], serde_json::to_value(&line.entry).unwrap());
        let leaf = merkle::parse_hash(p["leaf"].as_str().unwrap()).unwrap();
        // The leaf commits to the entry as printed, once compacted (what `jq -c .entry` does).
        let printed = compact(&run.stdout);
        let entry = object_at(&printed, printed.find("\"entry\":{").unwrap() + "\"entry\":".len());
        assert_eq!(leaf, merkle::leaf_hash(entry.as_bytes()), "{entry}");
        let path: Vec<merkle::Hash> =
            p["path"].as_array().unwrap().iter().map(|h| merkle::parse_hash(h.as_str().unwrap()).unwrap()).collect();
        assert!(merkle::verify_inclusion(&leaf, i as u64, 5, &path, &root), "entry {i}");
    }

    let unknown = m.receipt_cmd(&["prove", m.file(), "no-such-uidl"]);
    unknown.assert_code(3);
    assert!(unknown.stderr.contains("no entry with UIDL \"no-such-uidl\""), "{}", unknown.stderr);
    m.receipt_cmd(&["prove", path_str(&m.lab.state_dir.path().join("absent.json")), "x"]).assert_code(2);

    // A receipt that does not verify: the proof is printed, with a warning, and status 3.
    let uidl = r.entries[1].entry.source.uidl.clone();
    let bad = m.edited("bad.json", |t| t.replacen("\"outcome\":\"succeeded\"", "\"outcome\":\"partial\"", 1));
    let run = m.receipt_cmd(&["prove", path_str(&bad), &uidl]);
    run.assert_code(3);
    assert!(serde_json::from_str::<serde_json::Value>(&run.stdout).is_ok(), "{}", run.stdout);
    assert!(run.stderr.contains("the receipt does not verify"), "{}", run.stderr);
}

/// JSON text without the whitespace outside strings.
fn compact(json: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        if in_string {
            (escaped, in_string) = (!escaped && c == '\\', escaped || c != '"');
        } else if c.is_whitespace() {
            continue;
        } else {
            in_string = c == '"';
        }
        out.push(c);
    }
    out
}

/// The object starting at byte `start` of compact JSON, braces matched outside strings.
fn object_at(json: &str, start: usize) -> &str {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in json[start..].char_indices() {
        if in_string {
            (escaped, in_string) = (!escaped && c == '\\', escaped || c != '"');
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &json[start..start + i + 1];
                }
            }
            _ => {}
        }
    }
    panic!("no object at {start} in {json}")
}
