//! Exactly once (DESIGN.md §2.2): whatever happens between APPEND and the ledger commit —
//! a crash, kill -9, a lost ledger — a rerun leaves each source message at the destination
//! exactly once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailferry_tests::realistic;

async fn sql(lab: &Lab, statement: &str) -> u64 {
    let url = format!("sqlite://{}", lab.state().display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await.unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap().rows_affected()
}

fn small(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <m{i}@lab>\r\nSubject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()).collect()
}

#[tokio::test]
async fn append_confirmed_but_not_recorded_is_not_doubled() {
    let lab = Lab::start();
    let mut msgs = small(6);
    msgs.push(msgs[0].clone()); // a byte-identical duplicate under another UIDL
    lab.dovecot.seed("src", &msgs);
    lab.migrate(&[]).assert_code(0);

    // As if the process died after the destination said OK but before the ledger commit.
    assert_eq!(sql(&lab, "UPDATE ledger SET state = 'copying', copied_at = NULL, dest_uid = NULL").await, 7);
    let run = lab.migrate(&[]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 0, "{}", run.stdout);
    assert_eq!(run.n("already_present"), 7);
    assert_same_messages(&msgs, &lab.dst());
}

#[tokio::test]
async fn append_that_never_arrived_is_copied_again() {
    let lab = Lab::start();
    let msgs = small(3);
    lab.dovecot.seed("src", &msgs);
    lab.migrate(&[]).assert_code(0);
    // The ledger says an APPEND was in flight, but the destination never stored it.
    lab.dovecot.doveadm(&["expunge", "-u", "dst", "mailbox", "INBOX", "header", "Subject", "m1"]);
    assert_eq!(lab.dst().len(), 2);
    sql(&lab, "UPDATE ledger SET state = 'copying'").await;
    let run = lab.migrate(&[]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1);
    assert_eq!(run.n("already_present"), 2);
    assert_same_messages(&msgs, &lab.dst());
}

#[test]
fn lost_ledger_with_a_full_destination_adds_nothing_and_keeps_multiplicity() {
    let lab = Lab::start();
    let mut msgs = small(5);
    msgs.push(msgs[2].clone());
    msgs.push(msgs[2].clone());
    lab.dovecot.seed("src", &msgs[..6]);
    lab.migrate(&[]).assert_code(0);
    assert_eq!(lab.dst().len(), 6);

    // The ledger is gone; one more identical copy appeared at the source meanwhile.
    std::fs::remove_file(lab.state()).unwrap();
    lab.dovecot.seed("src", &msgs[6..]);
    let run = lab.migrate(&[]);
    run.assert_code(0);
    assert_eq!(run.n("already_present"), 6, "{}", run.stdout);
    assert_eq!(run.n("copied"), 1, "the third identical message is a message of its own");
    assert_same_messages(&msgs, &lab.dst());
}

#[test]
fn kill_9_at_any_moment_then_rerun_is_exactly_once() {
    let lab = Lab::start();
    let msgs = realistic(400, 11);
    lab.dovecot.seed("src", &msgs);

    // Kill the process at several moments of one migration, resuming each time.
    for delay_ms in [150u64, 400, 700] {
        let mut child = lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX")]).spawn().unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let at_dest = lab.dst().len();
        assert!(at_dest <= msgs.len(), "never more than the source holds");
    }
    let run = lab.migrate(&[]);
    run.assert_code(0);
    assert_same_messages(&msgs, &lab.dst());
    let again = lab.migrate(&[]);
    assert_eq!(again.n("copied"), 0);
    assert_eq!(lab.dst().len(), msgs.len());
}

#[tokio::test]
async fn an_in_doubt_twin_does_not_borrow_its_siblings_copy() {
    let lab = Lab::start();
    let twin = b"Message-ID: <twin@lab>\r\nSubject: twin\r\n\r\nsame bytes\r\n".to_vec();
    lab.dovecot.seed("src", &[twin.clone(), twin.clone()]);
    lab.migrate(&[]).assert_code(0);
    assert_eq!(lab.dst().len(), 2);

    // One twin's APPEND "never landed": its copy is gone and its row is in doubt.
    lab.dovecot.doveadm(&["expunge", "-u", "dst", "mailbox", "INBOX", "uid", "2"]);
    assert_eq!(sql(&lab, "UPDATE ledger SET state = 'copying' WHERE dest_uid = 2").await, 1);
    let run = lab.migrate(&["--delete", "after-verified"]);
    run.assert_code(0);
    assert_eq!(run.n("copied"), 1, "{}", run.stdout);
    assert_same_messages(&[twin.clone(), twin], &lab.dst());
    assert_eq!(lab.src().len(), 0, "both deleted, each after its own confirmed copy");
}

/// Rows in the ledger so far (0 while the database does not exist yet).
fn ledger_rows(lab: &Lab, rt: &tokio::runtime::Runtime) -> i64 {
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", lab.state().display());
        let Ok(mut conn) = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url).await else { return 0 };
        sqlx::query_scalar("SELECT count(*) FROM ledger").fetch_one(&mut conn).await.unwrap_or(0)
    })
}

/// DESIGN.md §2.8: two runs on one mailbox at once would both copy what the ledger does not
/// hold yet (measured before the fix: 1,833 duplicates of 2,000). The second run exits 1 at
/// once naming the holder; with `--wait` it waits, then finds everything already there.
#[test]
fn a_second_run_on_the_same_mailbox_is_refused_or_waits() {
    let lab = Lab::start();
    let msgs = realistic(1500, 5);
    lab.dovecot.seed("src", &msgs);

    let mut first = lab.command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX")]).spawn().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger_rows(&lab, &rt) == 0 {
        assert!(Instant::now() < deadline, "the first run never listed");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before the second could start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = lab.migrate(&[]);
    assert_eq!(second.code, 1, "the second run is refused\nstdout: {}\nstderr: {}", second.stdout, second.stderr);
    let holder = format!("mailferry migrate (pid {} on ", first.id());
    assert!(
        second.stderr.contains("is being drained by another run") && second.stderr.contains(&holder),
        "the refusal names the holder: {}",
        second.stderr
    );
    let waiting = lab
        .command(&["--from", &lab.source_url(), "--to", &lab.to_tls("INBOX"), "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(first.wait().unwrap().success());
    let waited = Run::from(waiting.wait_with_output().unwrap());
    waited.assert_code(0);
    assert_eq!(waited.n("copied"), 0, "the waiting run found every message copied");
    assert_same_messages(&msgs, &lab.dst());
}
