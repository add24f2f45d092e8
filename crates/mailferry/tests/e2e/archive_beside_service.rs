//! `mailferry archive …` beside a running `mailferry serve` on the same data dir, and
//! retention that runs (issue 16): verify, stats, search and export open the archive
//! read-only and work while the service holds it; purge needs the search-index writer and
//! says so; `purge --dry-run` lists what goes and what a hold keeps; the service's own
//! periodic purge tombstones, logs and answers 410; `migrate --to archive:NAME` and the
//! archive commands find one archive in a non-default data dir (`archive.root`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::server::{job_body, Api, Server};
use crate::common::{Lab, Run, SRC_PW};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Connection;

fn msg(id: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: {id}@example.com\r\nTo: legal@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}@lab>\r\n\
         Date: Mon, 4 Mar 2024 10:00:00 +0000\r\n\r\nBody of {id}.\r\n"
    )
    .into_bytes()
}

/// The archive's identity of a message: the SHA-256 of the retrieved bytes.
fn digest(m: &[u8]) -> String {
    Sha256::digest(m).iter().map(|b| format!("{b:02x}")).collect()
}

/// `mailferry ARGS` with `data` as its data dir (the service's, when one runs on it).
fn cli(data: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        .env("MAILFERRY_DATA_DIR", data)
        .output()
        .unwrap();
    Run::from(out)
}

fn json_of(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", run.stdout, run.stderr))
}

async fn archive_jobs(lab: &Lab, api: &Api, server: &Server, users: &[&str]) {
    for user in users {
        let mut body = job_body(&lab.dovecot, user, "dst", "keep");
        body["target"] = json!({"protocol": "archive", "archive": "legal"});
        let (status, job, text) = api.post("/api/v1/jobs", &body).await;
        assert_eq!(status, 201, "{text}");
        let job = api.wait_state(job["id"].as_i64().unwrap(), &["succeeded", "failed", "partial"], 90).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", server.logs());
    }
}

/// Retention of one day and a hold on bob's mail, over the API (admin token).
async fn retention_and_hold(api: &Api) {
    let r = api.http.put(format!("{}/api/v1/archives/legal/retention", api.base)).bearer_auth(&api.token);
    let r = r.json(&json!({"days": 1})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let hold = json!({"scope": {"account": "bob"}, "reason": "matter 7"});
    let (status, _, text) = api.post("/api/v1/archives/legal/holds", &hold).await;
    assert_eq!(status, 201, "{text}");
}

async fn index(data: &Path) -> sqlx::SqliteConnection {
    let url = format!("sqlite://{}", data.join("archive/legal/index.sqlite").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

/// Every occurrence arrived three days ago: the retention clock (ingest time) is the one
/// thing a test cannot wait for, so it is moved back in the archive's index.
async fn age_everything(data: &Path) {
    let mut db = index(data).await;
    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut db).await.unwrap();
    let three_days_ago = "2020-01-01T00:00:00.000Z";
    let n = sqlx::query("UPDATE occurrences SET ingested_at = ?").bind(three_days_ago).execute(&mut db).await.unwrap();
    assert!(n.rows_affected() > 0);
}

async fn status_of(api: &Api, digest: &str) -> u16 {
    let r = api.http.get(format!("{}/api/v1/archives/legal/messages/{digest}", api.base)).bearer_auth(&api.token);
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_commands_run_beside_serve_purge_waits_for_it_and_migrate_finds_the_same_archive() {
    let lab = Lab::start();
    for user in ["alice", "bob", "carol"] {
        lab.dovecot.add_user(user, SRC_PW);
    }
    let alice = vec![msg("a1", "Quarterly invoice"), msg("a2", "Lunch")];
    let bob = vec![msg("b1", "Merger plans")];
    lab.dovecot.seed("alice", &alice);
    lab.dovecot.seed("bob", &bob);
    lab.dovecot.seed("carol", &[msg("c1", "Carol's note")]);
    let mut server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();
    let data = server.data.path().to_path_buf();
    archive_jobs(&lab, &api, &server, &["alice", "bob"]).await;

    // The service holds the archive (its search-index writer); the read-only commands work.
    let verify = cli(&data, &["archive", "verify", "legal"]);
    verify.assert_code(0);
    assert!(verify.stdout.contains("3 blobs") && verify.stdout.contains("0 discrepancies"), "{}", verify.stdout);
    let stats = cli(&data, &["archive", "stats", "legal"]);
    stats.assert_code(0);
    assert_eq!(json_of(&stats)["messages"], 3, "{}", stats.stdout);
    // The service has not committed its search index yet (it commits every 1000
    // documents): what it holds uncommitted is found from the event log all the same.
    let search = cli(&data, &["archive", "search", "legal", r#"{"subject":"invoice"}"#, "--json"]);
    search.assert_code(0);
    let page = json_of(&search);
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["hits"][0]["occurrence"]["digest"], digest(&alice[0]), "{page}");
    let out = data.join("bob.mbox");
    let export = cli(&data, &["archive", "export", "legal", "--query", r#"{"account":"bob"}"#, "--out", out.to_str().unwrap()]);
    export.assert_code(0);
    assert!(export.stdout.contains("exported 1 messages"), "{}", export.stdout);
    assert!(String::from_utf8_lossy(&std::fs::read(&out).unwrap()).contains("Merger plans"));
    // The old way of locating archives is refused with the rule.
    let old = cli(&data, &["archive", "verify", "legal", "--state", "elsewhere/state.db"]);
    old.assert_code(2);
    assert!(old.stderr.contains("archive.root"), "{}", old.stderr);

    // Purge: what goes is listed beside the service; purging itself needs the writer.
    retention_and_hold(&api).await;
    age_everything(&data).await;
    let dry = cli(&data, &["archive", "purge", "legal", "--dry-run"]);
    dry.assert_code(0);
    for m in &alice {
        assert!(dry.stdout.contains(&format!("would purge {}  account alice  ingested 2020-01-01", digest(m))), "{}", dry.stdout);
    }
    assert!(dry.stdout.contains(&format!("keep (hold) {}  account bob", digest(&bob[0]))), "{}", dry.stdout);
    assert!(dry.stdout.contains("kept under hold #1"), "{}", dry.stdout);
    assert!(dry.stdout.contains("2 to purge"), "{}", dry.stdout);
    assert_eq!(status_of(&api, &digest(&alice[0])).await, 200, "a dry run deletes nothing");
    let busy = cli(&data, &["archive", "purge", "legal"]);
    busy.assert_code(1);
    assert!(busy.stderr.contains("held by a running mailferry serve or worker"), "{}", busy.stderr);
    let busy = cli(&data, &["archive", "reindex", "legal"]);
    busy.assert_code(1);
    assert!(busy.stderr.contains("held by a running mailferry serve or worker"), "{}", busy.stderr);

    // With the service stopped the CLI purges: alice's two go, bob's stays under hold.
    assert!(server.terminate(Duration::from_secs(30)).success());
    let purge = cli(&data, &["archive", "purge", "legal"]);
    purge.assert_code(0);
    assert!(purge.stdout.contains("purged 2 messages"), "{}", purge.stdout);
    assert!(purge.stdout.contains("1 kept under hold"), "{}", purge.stdout);
    let again = cli(&data, &["archive", "purge", "legal", "--dry-run", "--json"]);
    again.assert_code(0);
    let plan = json_of(&again);
    assert_eq!(plan["purge"], json!([]), "{plan}");
    assert_eq!(plan["held"][0]["digest"], digest(&bob[0]), "{plan}");
    let stats = json_of(&cli(&data, &["archive", "stats", "legal"]));
    assert_eq!((stats["messages"].as_u64(), stats["purged"].as_u64()), (Some(1), Some(2)), "{stats}");
    let mut db = index(&data).await;
    let tombstones: Vec<(String, String, String)> =
        sqlx::query_as("SELECT digest, purged_by, reason FROM tombstones ORDER BY digest").fetch_all(&mut db).await.unwrap();
    let mut want: Vec<String> = alice.iter().map(|m| digest(m)).collect();
    want.sort();
    assert_eq!(tombstones.iter().map(|t| t.0.clone()).collect::<Vec<_>>(), want);
    assert!(tombstones.iter().all(|t| t.1 == "cli" && t.2 == "retention of 1 days expired"), "{tombstones:?}");
    cli(&data, &["archive", "verify", "legal"]).assert_code(0);

    // migrate --to archive:legal in this (non-default) data dir adds to the same archive,
    // not to one beside its --state.
    let ledger = tempfile::tempdir().unwrap();
    let from = format!("pop3s://carol@127.0.0.1:{}", lab.dovecot.pop3s_port());
    let state = ledger.path().join("state.db");
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["migrate", "--from", &from, "--to", "archive:legal", "--from-password-env", "PW", "--json"])
        .arg("--ca-file")
        .arg(lab.dovecot.ca_file())
        .arg("--state")
        .arg(&state)
        .env("PW", SRC_PW)
        .env("MAILFERRY_DATA_DIR", &data)
        .output()
        .unwrap();
    let migrate = Run::from(migrate);
    migrate.assert_code(0);
    assert_eq!(migrate.n("copied"), 1);
    assert!(!ledger.path().join("archive").exists(), "no second archive beside --state");
    let stats = json_of(&cli(&data, &["archive", "stats", "legal"]));
    assert_eq!((stats["messages"].as_u64(), stats["occurrences"].as_u64()), (Some(2), Some(2)), "{stats}");
    let found = json_of(&cli(&data, &["archive", "search", "legal", r#"{"account":"carol"}"#, "--json"]));
    assert_eq!(found["total"], 1, "{found}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_purges_expired_unheld_messages_every_purge_interval() {
    let lab = Lab::start();
    for user in ["alice", "bob"] {
        lab.dovecot.add_user(user, SRC_PW);
    }
    let alice = vec![msg("a1", "Quarterly invoice"), msg("a2", "Lunch")];
    let bob = vec![msg("b1", "Merger plans")];
    lab.dovecot.seed("alice", &alice);
    lab.dovecot.seed("bob", &bob);
    let server = Server::start(&lab.dovecot, None, &[("MAILFERRY_ARCHIVE__PURGE_INTERVAL", "1s")], &[]);
    let api = server.client();
    let data = server.data.path().to_path_buf();
    archive_jobs(&lab, &api, &server, &["alice", "bob"]).await;
    retention_and_hold(&api).await;
    // Fresh messages are not expired: a few purge ticks later everything is still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for m in alice.iter().chain(&bob) {
        assert_eq!(status_of(&api, &digest(m)).await, 200);
    }

    age_everything(&data).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &alice {
        while status_of(&api, &digest(m)).await != 410 {
            assert!(Instant::now() < deadline, "not purged within 30 s\n{}", server.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(status_of(&api, &digest(&bob[0])).await, 200, "held: kept");
    let (status, meta, text) = api.get(&format!("/api/v1/archives/legal/messages/{}/meta", digest(&alice[0]))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(meta["tombstone"]["purged_by"], "retention", "{meta}");
    assert_eq!(meta["tombstone"]["reason"], "retention of 1 days expired", "{meta}");

    // The event chain records each purge once (one process, once per interval), and the
    // lease row says the purge finished.
    let mut db = index(&data).await;
    let purges: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, detail FROM events WHERE kind = 'purge' ORDER BY seq").fetch_all(&mut db).await.unwrap();
    assert_eq!(purges.len(), 2, "{purges:?}");
    assert!(purges.iter().all(|(actor, _)| actor == "retention"), "{purges:?}");
    let finished: Option<String> =
        sqlx::query_scalar("SELECT last_finished_at FROM upkeep WHERE task = 'purge'").fetch_one(&mut db).await.unwrap();
    assert!(finished.is_some());
    let (status, list, _) = api.get("/api/v1/archives").await;
    assert_eq!(status, 200);
    assert_eq!((list["items"][0]["messages"].as_u64(), list["items"][0]["purged"].as_u64()), (Some(1), Some(2)), "{list}");
    // And the CLI beside the running service sees the same.
    let stats = json_of(&cli(&data, &["archive", "stats", "legal"]));
    assert_eq!(stats["purged"], 2, "{stats}");
}
