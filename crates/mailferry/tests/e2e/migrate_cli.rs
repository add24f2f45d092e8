//! `mailferry migrate` end to end against a real Dovecot: fidelity, incremental reruns,
//! TLS, exit statuses, delete policy, limits and secrets.

use crate::common::*;
use mailferry_tests::tricky_corpus;

fn corpus() -> Vec<Vec<u8>> {
    tricky_corpus().into_iter().map(|(_, m)| m).collect()
}

#[test]
fn tricky_corpus_arrives_byte_for_byte_and_a_rerun_appends_nothing() {
    let lab = Lab::start();
    let msgs = corpus();
    lab.dovecot.seed("src", &msgs);

    let run = lab.migrate(&[]);
    run.assert_code(0);
    assert_eq!(run.n("listed"), msgs.len() as u64);
    assert_eq!(run.n("copied"), msgs.len() as u64);
    assert_eq!(run.n("failed"), 0);
    assert_same_messages(&msgs, &lab.dst());
    assert_eq!(lab.src().len(), msgs.len(), "keep is the default: the source is untouched");

    let again = lab.migrate(&[]);
    again.assert_code(0);
    assert_eq!(again.n("copied"), 0);
    assert_eq!(again.n("already_present"), msgs.len() as u64);
    assert_eq!(lab.dst().len(), msgs.len(), "a rerun appends nothing");

    // A new message at the source: the delta pass copies exactly that one.
    lab.dovecot.seed("src", &[b"Subject: late\r\n\r\nnew one\r\n".to_vec()]);
    let delta = lab.migrate(&[]);
    delta.assert_code(0);
    assert_eq!(delta.n("copied"), 1);
    assert_eq!(lab.dst().len(), msgs.len() + 1);
}

#[test]
fn internaldate_comes_from_the_message() {
    let lab = Lab::start();
    lab.dovecot.seed(
        "src",
        &[
            b"Received: from a by b; Tue, 03 Mar 2015 10:00:00 +0000\r\nDate: Sun, 01 Mar 2015 08:00:00 +0000\r\nSubject: r\r\n\r\nx\r\n".to_vec(),
            b"Date: Sun, 01 Mar 2015 08:00:00 +0000\r\nSubject: d\r\n\r\ny\r\n".to_vec(),
        ],
    );
    lab.migrate(&[]).assert_code(0);
    let out = lab.dovecot.doveadm(&["fetch", "-u", "dst", "date.received hdr.subject", "mailbox", "INBOX", "all"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2015-03-03 10:00:00"), "Received date used: {text}");
    assert!(text.contains("2015-03-01 08:00:00"), "Date used when no Received: {text}");
}

#[test]
fn stls_and_starttls_against_the_lab_ca() {
    let lab = Lab::start();
    let msgs = vec![b"Subject: one\r\n\r\n..dots\r\n.\r\n".to_vec(), b"Subject: two\r\n\r\nbody\r\n".to_vec()];
    lab.dovecot.seed("src", &msgs);
    let from = format!("pop3://src@127.0.0.1:{}", lab.dovecot.pop3_port());
    let to = format!("imap://dst@127.0.0.1:{}/Archiv/Größe", lab.dovecot.imap_port());
    let run = lab.migrate_raw(&["--from", &from, "--to", &to]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 2);
    assert_same_messages(&msgs, &lab.dovecot.folder_messages("dst", "Archiv/Größe"));
    let log = lab.dovecot.log();
    assert!(log.contains("TLS"), "sessions were encrypted: {log}");
}

#[test]
fn untrusted_certificate_is_refused() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    let from = lab.source_url();
    let to = lab.to_tls("INBOX");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["migrate", "--from", &from, "--to", &to, "--state"])
        .arg(lab.state())
        .args(["--from-password-env", "A", "--to-password-env", "B"])
        .env("A", SRC_PW)
        .env("B", DST_PW)
        .output()
        .unwrap();
    let run = Run::from(out);
    run.assert_code(1);
    assert!(run.stderr.contains("certificate") || run.stderr.contains("TLS"), "{}", run.stderr);
    assert_eq!(lab.dst().len(), 0);
}

#[test]
fn wrong_password_exits_1_with_a_clear_sentence_and_no_secret() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    let run = Run::from(
        lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX")])
            .env("MF_SRC_PW", "wrong-Passw0rd-xyz")
            .output()
            .unwrap(),
    );
    run.assert_code(1);
    assert!(run.stderr.contains("src@127.0.0.1"), "names the endpoint: {}", run.stderr);
    assert!(run.stderr.to_lowercase().contains("rejected") || run.stderr.contains("auth"), "{}", run.stderr);
    for secret in ["wrong-Passw0rd-xyz", SRC_PW, DST_PW] {
        assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret), "secret leaked");
    }
    assert_eq!(run.json["outcome"], "failed");
}

#[test]
fn usage_errors_exit_2() {
    let lab = Lab::start();
    for args in [
        vec!["--from", "http://x@y", "--to", "imaps://a@b"],
        vec!["--from", "pop3s://nouser", "--to", "imaps://a@b"],
        vec!["--from", "pop3s://u@h", "--to", "imaps://a@b", "--delete", "sometimes"],
        vec!["--from", "imaps://u@h", "--to", "imaps://a@b"],
        // No read-back, so nothing could ever be deleted: refused, not silently ignored.
        vec!["--from", "pop3s://u@h", "--to", "imaps://a@b", "--verify", "none", "--delete", "after-verified"],
        vec!["--from", "pop3s://u@h", "--to", "imaps://a@b", "--verify", "fast"],
    ] {
        let run = lab.migrate_raw(&args);
        run.assert_code(2);
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
    // A missing password is a usage error too, and never read from argv.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["migrate", "--from", "pop3s://u@h", "--to", "imaps://a@b", "--to-password-env", "HOME"])
        .output()
        .unwrap();
    let run = Run::from(out);
    run.assert_code(2);
    assert!(run.stderr.contains("no source password"), "{}", run.stderr);
}

#[test]
fn plaintext_needs_explicit_permission() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    let from = format!("pop3://src@127.0.0.1:{}", lab.dovecot.pop3_port());
    let to = format!("imap://dst@127.0.0.1:{}", lab.dovecot.imap_port());
    let run = lab.migrate_raw(&["--from", &from, "--to", &to, "--allow-plaintext"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1);
}

#[test]
fn after_verified_deletes_exactly_the_copied_messages() {
    let lab = Lab::start_with(LabOptions { extra_config: "imap_capability = +APPENDLIMIT=1048576\n".into() });
    let big = vec![b'x'; 2 * 1024 * 1024];
    let mut big_msg = b"Subject: big\r\n\r\n".to_vec();
    big_msg.extend_from_slice(&big);
    big_msg.extend_from_slice(b"\r\n");
    let small: Vec<Vec<u8>> = (0..5).map(|i| format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()).collect();
    let mut all = small.clone();
    all.push(big_msg.clone());
    lab.dovecot.seed("src", &all);

    let run = lab.migrate(&["--delete", "after-verified"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 5);
    assert_eq!(run.n("skipped"), 1);
    assert_eq!(run.n("deleted"), 5);
    assert!(run.json["skips"][0]["error"].as_str().unwrap().contains("APPENDLIMIT"), "{}", run.stdout);
    assert_same_messages(&small, &lab.dst());
    assert_same_messages(&[big_msg], &lab.src());
}

#[test]
fn nothing_is_deleted_when_the_destination_fails() {
    let lab = Lab::start();
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| format!("Subject: m{i}\r\n\r\nbody\r\n").into_bytes()).collect();
    lab.dovecot.seed("src", &msgs);
    let run = Run::from(
        lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--delete", "after-verified"])
            .env("MF_DST_PW", "not-the-password")
            .output()
            .unwrap(),
    );
    run.assert_code(1);
    assert_eq!(lab.src().len(), 3, "no DELE on a failing path");
    assert!(run.stderr.contains("dst@127.0.0.1"), "{}", run.stderr);
}

#[test]
fn dry_run_changes_nothing() {
    let lab = Lab::start();
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| format!("Subject: m{i}\r\n\r\nbody\r\n").into_bytes()).collect();
    lab.dovecot.seed("src", &msgs);
    let run = lab.migrate(&["--dry-run", "--delete", "after-verified"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 4, "would copy");
    assert_eq!(run.n("deleted"), 4, "would delete");
    assert_eq!(run.json["dry_run"], true);
    assert_eq!(lab.dst().len(), 0);
    assert_eq!(lab.src().len(), 4);
    // The real run afterwards still copies everything.
    assert_eq!(lab.migrate(&[]).n("copied"), 4);
}

#[test]
fn logs_never_contain_a_password() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    let run = Run::from(lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX")]).env("MAILFERRY_LOG__FILTER", "trace").output().unwrap());
    run.assert_code(0);
    assert!(run.stderr.len() > 100, "trace logging produced output");
    for secret in [SRC_PW, DST_PW] {
        assert!(!run.stderr.contains(secret), "password in the logs");
        assert!(!run.stdout.contains(secret), "password in the output");
    }
}

#[test]
fn sasl_plain_and_xoauth2_on_both_sides() {
    // Dovecot 2.3 checks an XOAUTH2 token against the passdb like a password, so the lab's
    // passwd-file users double as OAuth2 users whose "access token" is their password.
    let lab = Lab::start_with(LabOptions { extra_config: "auth_mechanisms = plain login xoauth2\n".into() });
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| format!("Subject: m{i}\r\n\r\nbody\r\n").into_bytes()).collect();
    lab.dovecot.seed("src", &msgs);
    let run = lab.migrate(&["--from-auth", "plain", "--to-auth", "plain"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 3);

    lab.dovecot.seed("src", &[b"Subject: oauth\r\n\r\nbody\r\n".to_vec()]);
    let run = lab.migrate(&["--from-auth", "xoauth2", "--to-auth", "xoauth2"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1);
    let log = lab.dovecot.log();
    assert!(log.contains("method=PLAIN") && log.contains("method=XOAUTH2"), "{log}");

    // Something to copy: a run with nothing to copy never contacts the destination.
    lab.dovecot.seed("src", &[b"Subject: refused\r\n\r\nbody\r\n".to_vec()]);
    let bad = Run::from(
        lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--to-auth", "xoauth2"])
            .env("MF_DST_PW", "expired-token")
            .output()
            .unwrap(),
    );
    bad.assert_code(1);
    assert!(!bad.stderr.contains("expired-token"));
}

#[test]
fn flags_are_set_as_configured() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    lab.migrate(&["--flag", "\\Seen", "--flag", "$Migrated"]).assert_code(0);
    let out = lab.dovecot.doveadm(&["fetch", "-u", "dst", "flags", "mailbox", "INBOX", "all"]);
    let flags = String::from_utf8_lossy(&out.stdout);
    assert!(flags.contains("\\Seen") && flags.contains("$Migrated"), "{flags}");
    lab.migrate_raw(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--flag", "bad flag"]).assert_code(2);
    // \Deleted on a copy would let the destination expunge it after the source is emptied.
    let deleted = lab.migrate_raw(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--flag", "\\deleted"]);
    deleted.assert_code(2);
    assert!(deleted.stderr.contains("cannot be set on copied messages"), "{}", deleted.stderr);
}

#[test]
fn after_days_waits_before_deleting() {
    let lab = Lab::start();
    let msgs: Vec<Vec<u8>> = (0..3).map(|i| format!("Subject: m{i}\r\n\r\nbody\r\n").into_bytes()).collect();
    lab.dovecot.seed("src", &msgs);
    let run = lab.migrate(&["--delete", "after-days:30"]);
    run.assert_code(0);
    assert_eq!((run.n("copied"), run.n("deleted")), (3, 0));
    assert_eq!(lab.src().len(), 3, "copied today: kept for 30 days");
    let run = lab.migrate(&["--delete", "after-days:0"]);
    run.assert_code(0);
    assert_eq!((run.n("copied"), run.n("deleted")), (0, 3));
    assert_eq!(lab.src().len(), 0);
    assert_same_messages(&msgs, &lab.dst());
}

#[test]
fn the_network_policy_refuses_denied_addresses_before_connecting() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &[b"Subject: x\r\n\r\ny\r\n".to_vec()]);
    // A loopback address stands in for a metadata endpoint: nothing leaves the machine even
    // if the guard were broken.
    let from = format!("pop3s://src@127.0.0.2:{}", lab.dovecot.pop3s_port());
    let run = Run::from(
        lab.command(&["--from", &from, "--to", &lab.to_tls("INBOX")])
            .env("MAILFERRY_NETWORK__DENY", "127.0.0.2,169.254.0.0/16")
            .output()
            .unwrap(),
    );
    run.assert_code(1);
    assert!(run.stderr.contains("127.0.0.2 is on network.deny"), "{}", run.stderr);
    assert_eq!(lab.dst().len(), 0);
    // network.allow opens entries of the built-in list; it does not restrict the rest, and
    // the admin's own shell reaches loopback without it (DESIGN.md §2.9).
    let allowed = Run::from(
        lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX")])
            .env("MAILFERRY_NETWORK__ALLOW", "10.0.0.0/8")
            .output()
            .unwrap(),
    );
    allowed.assert_code(0);
    assert_eq!(lab.dst().len(), 1);
    lab.migrate(&[]).assert_code(0);
}

/// Copied rows in the ledger so far (0 while the database does not exist yet).
fn copied_rows(lab: &Lab, rt: &tokio::runtime::Runtime) -> i64 {
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", lab.state().display());
        let Ok(mut conn) = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await else { return 0 };
        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE state IN ('copied', 'verified')")
            .fetch_one(&mut conn)
            .await
            .unwrap_or(0)
    })
}

/// Issue 13: SIGTERM (a `kill`, systemd, a container stop) stops `mailferry migrate` as
/// Ctrl-C does: between messages, the pipelined RETRs drained, QUIT sent, no DELE, outcome
/// `cancelled`, exit status 1; a rerun finishes the job. The signal goes to the mailferry
/// process itself, not to a wrapper shell.
#[test]
fn sigterm_stops_a_migration_like_ctrl_c_without_deleting() {
    let lab = Lab::start();
    let msgs = mailferry_tests::realistic(1500, 17);
    lab.dovecot.seed("src", &msgs);
    let child = lab
        .command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--delete", "after-verified"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while copied_rows(&lab, &rt) < 10 {
        assert!(std::time::Instant::now() < deadline, "no copies landed");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_code(1);
    assert_eq!(run.json["outcome"], "cancelled", "{}", run.stdout);
    assert_eq!(run.n("deleted"), 0);
    assert_eq!(lab.src().len(), msgs.len(), "no DELE took effect");
    let copied = lab.dst().len();
    assert!(copied < msgs.len(), "stopped before the end ({copied} copied)");
    let log = lab.dovecot.log();
    let logouts: Vec<&str> = log.lines().filter(|l| l.contains("pop3(src)") && l.contains("Disconnected")).collect();
    assert!(
        logouts.iter().any(|l| l.contains("Logged out") && l.contains("del=0/")),
        "the POP3 session ended with QUIT, nothing deleted: {logouts:?}"
    );

    let rerun = lab.migrate(&["--delete", "after-verified"]);
    rerun.assert_code(0);
    assert_same_messages(&msgs, &lab.dst());
    assert!(lab.src().is_empty());
}
