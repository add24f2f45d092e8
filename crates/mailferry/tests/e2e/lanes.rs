//! Several APPEND sessions into one folder (issue 18, engine/src/drain/lanes.rs): every
//! message still arrives exactly once, a server that caps sessions per user gets fewer
//! lanes instead of a failed job, and a rerun with nothing to copy leaves the destination
//! alone.

use crate::common::*;
use mailferry_tests::{realistic, LabOptions};

/// IMAP logins of the lab's `dst` user so far.
fn dst_logins(lab: &Lab) -> usize {
    lab.dovecot.log().matches("imap-login: Info: Login: user=<dst>").count()
}

fn lanes(lab: &Lab, sessions: &str) -> Run {
    let from = lab.source_url();
    let to = lab.to_tls("INBOX");
    let out = lab
        .command(&["--from", &from, "--to", &to])
        .env("MAILFERRY_WORKER__PIPELINE__APPEND_SESSIONS", sessions)
        // Small batches, so every lane carries several.
        .env("MAILFERRY_WORKER__PIPELINE__APPEND_BATCH_MESSAGES", "8")
        .output()
        .expect("run mailferry");
    Run::from(out)
}

#[test]
fn several_append_sessions_fill_one_folder_exactly_once_and_a_rerun_leaves_it_alone() {
    let lab = Lab::start();
    let msgs = realistic(240, 18);
    lab.dovecot.seed("src", &msgs);
    let run = lanes(&lab, "4");
    run.assert_code(0);
    assert_eq!(run.n("copied"), 240, "{}", run.stdout);
    assert_same_messages(&msgs, &lab.dst());
    let logins = dst_logins(&lab);
    assert!(logins >= 2, "more than one APPEND session logged in: {logins}\n{}", lab.dovecot.log());

    let rerun = lanes(&lab, "4");
    rerun.assert_code(0);
    assert_eq!(rerun.n("copied"), 0, "{}", rerun.stdout);
    assert_eq!(dst_logins(&lab), logins, "a rerun with nothing to copy does not connect to the destination");
    assert_same_messages(&msgs, &lab.dst());
}

#[test]
fn a_server_capping_sessions_per_user_gets_fewer_lanes_not_a_failed_job() {
    let lab = Lab::start_with(LabOptions {
        extra_config: "protocol imap {\n  mail_max_userip_connections = 2\n}\n".into(),
    });
    let msgs = realistic(120, 19);
    lab.dovecot.seed("src", &msgs);
    let run = lanes(&lab, "6");
    run.assert_code(0);
    assert_eq!(run.n("copied"), 120, "{}", run.stdout);
    assert_same_messages(&msgs, &lab.dst());
    assert!(
        lab.dovecot.log().contains("Maximum number of connections from user+IP exceeded"),
        "the server refused the sessions beyond its cap:\n{}",
        lab.dovecot.log()
    );
}
