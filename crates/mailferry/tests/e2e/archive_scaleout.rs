//! Scale-out with a shared archive (DESIGN.md §5): one `mailferry serve --no-workers` and two
//! `mailferry worker` processes, each with its own data directory (as on separate machines),
//! one PostgreSQL database and one S3-compatible bucket (moto on loopback, Object Lock on).
//! Archive jobs from four overlapping mailboxes land in one archive, exactly once, with one
//! chain, deduplicated across workers, searchable and verifiable through the API.

use crate::common::server::{job_body, psql, FreshPg, Server};
use crate::common::{Lab, SRC_PW};
use mailferry_tests::Moto;
use serde_json::json;

fn msg(id: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.com\r\nTo: team@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}@lab>\r\n\
         Date: Mon, 4 Mar 2024 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_on_separate_machines_fill_one_archive_on_s3_and_postgres() {
    let moto = Moto::start();
    moto.create_locked_bucket("mf-scaleout");
    let lab = Lab::start();
    // Eight messages to everyone (a mailing list), plus six of each mailbox's own.
    let list: Vec<Vec<u8>> = (0..8).map(|i| msg(&format!("list{i}"), &format!("Team update {i}"), "Status: green.")).collect();
    let users = ["u0", "u1", "u2", "u3"];
    for u in users {
        lab.dovecot.add_user(u, SRC_PW);
        let own = (0..6).map(|i| msg(&format!("{u}-{i}"), &format!("Private {u} {i}"), "For your eyes only."));
        let all: Vec<Vec<u8>> = list.iter().cloned().chain(own).collect();
        lab.dovecot.seed(u, &all);
    }

    let pg = FreshPg::create();
    let endpoint = moto.endpoint();
    let key = "ab".repeat(32);
    let env = [
        ("MAILFERRY_SECURITY__SECRET_KEY", key.as_str()),
        ("MAILFERRY_ARCHIVE__S3__BUCKET", "mf-scaleout"),
        ("MAILFERRY_ARCHIVE__S3__ENDPOINT", endpoint.as_str()),
        ("MAILFERRY_ARCHIVE__S3__REGION", "us-east-1"),
        ("MAILFERRY_ARCHIVE__S3__ALLOW_HTTP", "true"),
        ("MAILFERRY_ARCHIVE__S3__PATH_STYLE", "true"),
        ("MAILFERRY_ARCHIVE__S3__OBJECT_LOCK", "compliance"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let mut server = Server::start(&lab.dovecot, Some(&pg.url), &env, &["--no-workers"]);
    let machines: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for m in &machines {
        let dir = m.path().display().to_string();
        server.spawn_worker(&[("MAILFERRY_DATA_DIR", dir.as_str()), ("MAILFERRY_WORKER__CONCURRENCY", "1")]);
    }
    let api = server.client();

    let mut ids = Vec::new();
    for u in users {
        let mut body = job_body(&lab.dovecot, u, "unused", "after-verified");
        body["target"] = json!({"protocol": "archive", "archive": "shared"});
        let (status, job, text) = api.post("/api/v1/jobs", &body).await;
        assert_eq!(status, 201, "{text}");
        ids.push(job["id"].as_i64().unwrap());
    }
    for id in &ids {
        let job = api.wait_state(*id, &["succeeded", "failed", "partial"], 120).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", server.logs());
    }
    // Both "machines" worked; each drained mailbox is empty (deleted only after the archive
    // confirmed the copy, Object Lock included).
    let finished: Vec<usize> =
        (0..2).map(|n| server.worker_log(n).lines().filter(|l| l.contains("job finished")).count()).collect();
    assert!(finished.iter().all(|&n| n > 0), "both workers ran archive jobs: {finished:?}");
    for u in users {
        assert_eq!(lab.dovecot.message_count(u), 0, "{u} drained");
    }

    // One archive, deduplicated across workers: 8 list messages + 4 × 6 own = 32 blobs,
    // 4 × 14 = 56 occurrences.
    let (status, list_page, text) = api.get("/api/v1/archives").await;
    assert_eq!(status, 200, "{text}");
    let a = &list_page["items"][0];
    assert_eq!((a["name"].as_str(), a["messages"].as_u64(), a["occurrences"].as_u64()), (Some("shared"), Some(32), Some(56)), "{a}");
    // Nothing local: the index is in PostgreSQL and the blobs in the bucket.
    for m in &machines {
        assert!(!m.path().join("archive/shared/blobs").exists());
        assert!(!m.path().join("archive/shared/index.sqlite").exists());
    }
    let schema = psql(&pg.url, "SELECT schema_name FROM mailferry_archives WHERE name = 'shared'");
    assert_eq!(psql(&pg.url, &format!("SELECT count(*) FROM {schema}.occurrences")), "56");
    assert_eq!(psql(&pg.url, &format!("SELECT count(*) FROM {schema}.blobs WHERE retain_until IS NULL")), "32",
        "no retention policy set yet, so no retention dates");

    // The API process searches what the workers ingested (its search index catches up from
    // the shared event log).
    let (status, page, text) = api.get("/api/v1/archives/shared/messages?subject=update%203").await;
    assert_eq!(status, 200, "{text}");
    let accounts: std::collections::BTreeSet<&str> =
        page["items"].as_array().unwrap().iter().map(|h| h["account"].as_str().unwrap()).collect();
    assert_eq!(accounts.into_iter().collect::<Vec<_>>(), users, "{page}");

    // Verify reads every blob back from S3 and walks the one chain both workers appended to.
    let (status, run, text) = api.post("/api/v1/archives/shared/verify", &json!({})).await;
    assert_eq!(status, 202, "{text}");
    let run = api.wait_run(&format!("/api/v1/archives/shared/verify/{}", run["id"])).await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["report"]["ok"], true, "{run}");
    assert_eq!(run["report"]["blobs_checked"], 32, "{run}");
}
