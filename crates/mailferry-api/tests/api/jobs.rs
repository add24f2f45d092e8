//! Jobs: create, validation, listing, control, ledger pages, reports, SSE.

use std::time::Duration;

use mailferry_store::{ClaimLimits, CopyDone, CopyIntent, Release};
use mailferry_model::JobState;
use serde_json::json;

use crate::{job_body, TestApp, DST_PASSWORD, SRC_PASSWORD};

#[tokio::test]
async fn create_job_then_get_it_without_any_password() {
    let app = TestApp::spawn().await;
    let r = app.post_json("/api/v1/jobs", &app.write, &job_body("alice")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.no_secrets();
    let job = r.json();
    let id = job["id"].as_i64().unwrap();
    assert_eq!(r.header("location"), Some(format!("/api/v1/jobs/{id}").as_str()));
    assert_eq!(job["state"], "queued");
    assert_eq!(job["source"], json!({"protocol": "pop3", "host": "pop.example.com", "port": 995, "security": "tls", "username": "alice", "auth": "user"}));
    assert_eq!(job["target"]["port"], 993, "default from security");
    assert_eq!(job["target"]["flags"], json!(["\\Seen"]));
    assert_eq!(job["options"], json!({"delete": "keep", "max_message_bytes": null, "dry_run": false, "verify": "exact"}));
    assert_eq!(job["counts"], json!({"listed": 0, "copied": 0, "skipped": 0, "failed": 0, "deleted": 0, "bytes": 0}));
    assert!(job["source"].get("password").is_none() && job["target"].get("password").is_none());

    let r = app.get(&format!("/api/v1/jobs/{id}"), &app.read).await;
    assert_eq!(r.status, 200);
    r.no_secrets();
    assert_eq!(r.json()["id"], id);
    app.get("/api/v1/jobs", &app.read).await.no_secrets();

    // Stored sealed: the database holds no clear password either.
    let stored = app.store.get_job(id).await.unwrap().unwrap();
    let spec = serde_json::to_string(&stored.spec.unwrap()).unwrap();
    assert!(!spec.contains(SRC_PASSWORD) && !spec.contains(DST_PASSWORD), "{spec}");

    app.get("/api/v1/jobs/999", &app.read).await.problem(404, "/problems/not-found");
}

#[tokio::test]
async fn validation_errors_name_every_field() {
    let app = TestApp::spawn().await;
    let body = json!({
        "source": {"host": "", "port": 0, "username": "", "password": SRC_PASSWORD},
        "target": {"protocol": "imap", "host": "imap.example.com", "port": 70000, "username": "u",
                   "flags": ["not an atom"]},
        "options": {"delete": "sometimes"},
        "labels": {"bad key": "v"}
    });
    let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
    let p = r.problem(422, "/problems/validation");
    r.no_secrets();
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for f in ["source.host", "source.port", "source.username", "target.port", "target.password", "target.flags[0]", "options.delete", "labels.bad key"] {
        assert!(fields.contains(&f), "{f} not in {fields:?}");
    }
    assert!(app.get("/api/v1/jobs", &app.read).await.json()["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn plaintext_is_refused_unless_the_host_is_allowed() {
    // Loopback is on the default plaintext allow-list; reaching it at all needs
    // `network.allow` (DESIGN.md §2.9).
    let loopback = mailferry_model::NetworkPolicy::new(mailferry_model::netpolicy::Defaults::Api, ["127.0.0.1"], []).unwrap();
    let app = TestApp::spawn_with(mailferry_api::ApiConfig { network: std::sync::Arc::new(loopback), ..Default::default() }).await;
    let mut body = job_body("bob");
    body["source"]["security"] = "none".into();
    body["source"]["port"] = serde_json::Value::Null;
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/plaintext-not-allowed");
    assert_eq!(p["errors"][0]["field"], "source.security");

    body["source"]["host"] = "127.0.0.1".into();
    let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["source"]["port"], 110);

    let mut body = job_body("bob");
    body["target"] = json!({"protocol": "archive", "archive": "legal"});
    let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["target"], json!({"protocol": "archive", "archive": "legal"}));
    assert_eq!(r.json()["target_display"], "archive legal");
    body["target"] = json!({"protocol": "archive", "archive": "../etc"});
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["field"], "target.archive");
}

#[tokio::test]
async fn malformed_bodies_are_problems() {
    let app = TestApp::spawn().await;
    let mut body = job_body("carol");
    body["source"]["passwd"] = "x".into();
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
    assert!(p["detail"].as_str().unwrap().contains("unknown field `passwd`"), "{p}");
    assert_eq!(p["errors"][0]["field"], "source.passwd");

    let mut body = job_body("carol");
    body["source"]["port"] = "995".into();
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["field"], "source.port");

    let mut body = job_body("carol");
    body["target"]["password"] = 918273645.into();
    let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
    assert_eq!(r.problem(422, "/problems/validation")["errors"][0]["field"], "target.password");
    assert!(!r.text.contains("918273645"), "a mistyped password is not echoed: {}", r.text);

    let req = app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.write)).header("content-type", "application/json");
    app.send(req.body("{\"source\": ")).await.problem(400, "/problems/bad-request");
    let req = app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.write)).header("content-type", "text/plain");
    app.send(req.body("{}")).await.problem(415, "/problems/unsupported-media-type");
    let huge = format!("{{\"labels\": {{\"x\": \"{}\"}}}}", "a".repeat(2 * 1024 * 1024));
    let req = app.req(reqwest::Method::POST, "/api/v1/jobs", Some(&app.write)).header("content-type", "application/json");
    app.send(req.body(huge)).await.problem(413, "/problems/payload-too-large");
}

#[tokio::test]
async fn list_filters_and_cursor_pagination() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for (i, user) in ["ann", "ben", "cat", "dan", "eve"].iter().enumerate() {
        let mut body = job_body(user);
        body["labels"] = json!({"wave": if i % 2 == 0 { "1" } else { "2" }});
        ids.push(app.create_job(&body).await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/jobs?limit=2".to_owned();
    loop {
        let page = app.get(&path, &app.read).await.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|j| j["id"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/jobs?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);

    let ids_of = |v: serde_json::Value| -> Vec<i64> { v["items"].as_array().unwrap().iter().map(|j| j["id"].as_i64().unwrap()).collect() };
    assert_eq!(ids_of(app.get("/api/v1/jobs?label=wave:2", &app.read).await.json()), vec![ids[1], ids[3]]);
    assert_eq!(ids_of(app.get("/api/v1/jobs?q=cat", &app.read).await.json()), vec![ids[2]]);
    app.post(&format!("/api/v1/jobs/{}/pause", ids[4]), &app.write).await;
    assert_eq!(ids_of(app.get("/api/v1/jobs?state=paused", &app.read).await.json()), vec![ids[4]]);
    assert_eq!(ids_of(app.get("/api/v1/jobs?state=queued&label=wave:1", &app.read).await.json()), vec![ids[0], ids[2]]);
    app.get("/api/v1/jobs?state=dancing", &app.read).await.problem(422, "/problems/validation");
    app.get("/api/v1/jobs?cursor=zzz", &app.read).await.problem(422, "/problems/validation");
    app.get("/api/v1/jobs?limit=lots", &app.read).await.problem(400, "/problems/bad-request");
}

#[tokio::test]
async fn control_transitions_and_conflicts() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("dave")).await;
    let act = |a: &str| format!("/api/v1/jobs/{id}/{a}");
    let r = app.post(&act("pause"), &app.write).await;
    assert_eq!((r.status, r.json()["state"].clone()), (200, json!("paused")), "{}", r.text);
    app.post(&act("pause"), &app.write).await.problem(409, "/problems/conflict");
    app.post(&act("rerun"), &app.write).await.problem(409, "/problems/conflict");
    assert_eq!(app.post(&act("resume"), &app.write).await.json()["state"], "queued");
    app.post(&act("resume"), &app.write).await.problem(409, "/problems/conflict");
    assert_eq!(app.post(&act("cancel"), &app.write).await.json()["state"], "cancelled");
    app.post(&act("cancel"), &app.write).await.problem(409, "/problems/conflict");
    assert_eq!(app.post(&act("rerun"), &app.write).await.json()["state"], "queued");
    app.post("/api/v1/jobs/424242/cancel", &app.write).await.problem(404, "/problems/not-found");
    app.post(&act("explode"), &app.write).await.problem(404, "/problems/not-found");
}

/// Ledger rows for a job, the way the engine writes them.
async fn seed_ledger(app: &TestApp, id: i64) {
    let run = app.store.start_run(id, false).await.unwrap();
    let listed = vec![("u1".to_owned(), 100), ("u2".to_owned(), 200), ("we,ird\"uidl".to_owned(), 50)];
    app.store.record_listed(id, run, &listed).await.unwrap();
    let intent = CopyIntent {
        uidl: "u1".into(),
        size: 100,
        digest: "d".repeat(64),
        wire_digest: "e".repeat(64),
        wire_size: 102,
        normalized: true,
        message_id: Some("<m1@example.com>".into()),
        internal_date: Some("2024-01-02T03:04:05Z".into()),
        internal_date_source: "received",
    };
    app.store.mark_copying(id, run, &[intent]).await.unwrap();
    let done = CopyDone { uidl: "u1".into(), dest_uid: Some(7), dest_uidvalidity: Some(1), found_at_destination: false };
    app.store.mark_copied(id, run, &[done]).await.unwrap();
    app.store.mark_skipped(id, run, "u2", "larger than max_message_bytes").await.unwrap();
}

#[tokio::test]
async fn messages_page_and_reports() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("erin")).await;
    seed_ledger(&app, id).await;

    let page = app.get(&format!("/api/v1/jobs/{id}/messages?limit=2"), &app.read).await.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["uidl"], "u1");
    assert_eq!(items[0]["state"], "copied");
    assert_eq!(items[0]["dest_uid"], 7);
    assert_eq!(items[1]["state"], "skipped");
    assert_eq!(items[1]["reason"], "larger than max_message_bytes");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let r = app.send(app.req(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/messages"), Some(&app.read)).query(&[("cursor", cursor)])).await;
    let rest = r.json();
    assert_eq!(rest["items"][0]["uidl"], "we,ird\"uidl");
    assert!(rest["next_cursor"].is_null());
    app.get("/api/v1/jobs/999/messages", &app.read).await.problem(404, "/problems/not-found");

    let job = app.get(&format!("/api/v1/jobs/{id}"), &app.read).await.json();
    assert_eq!(job["counts"]["listed"], 3);
    assert_eq!(job["counts"]["copied"], 1);
    assert_eq!(job["counts"]["skipped"], 1);

    let r = app.get(&format!("/api/v1/jobs/{id}/report"), &app.read).await;
    r.no_secrets();
    let report = r.json();
    assert_eq!(report["counts"]["listed"], 3);
    assert_eq!(report["messages"].as_array().unwrap().len(), 3);
    assert_eq!(report["job"]["id"], id);

    let req = app.req(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/report"), Some(&app.read)).header("accept", "text/csv");
    let r = app.send(req).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    r.no_secrets();
    let mut rdr = csv::Reader::from_reader(r.text.as_bytes());
    assert_eq!(rdr.headers().unwrap().get(0), Some("uidl"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[2][0], "we,ird\"uidl", "quoted correctly");
    assert_eq!(&rows[0][2], "copied");
    assert_eq!(app.get(&format!("/api/v1/jobs/{id}/report?format=csv"), &app.read).await.text, r.text);
}

#[tokio::test]
async fn sse_reports_progress_and_ends_when_the_job_finishes() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("fay")).await;
    let store = app.store.clone();
    let driver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let limits = ClaimLimits { per_source_host: 4, per_target_host: 4 };
        let claimed = store.claim_job("w1", Duration::from_secs(60), limits).await.unwrap().expect("claimable");
        assert_eq!(claimed.job.id, id);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let run = store.start_run(id, false).await.unwrap();
        store.record_listed(id, run, &[("a".into(), 10), ("b".into(), 20)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let release = Release { state: JobState::Succeeded, error: None, not_before: None };
        assert!(store.release_job(id, "w1", &release).await.unwrap());
    });
    let req = app.req(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&app.read));
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(20), resp.text()).await.expect("the stream ends").unwrap();
    driver.await.unwrap();
    let states: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| !d.contains("counts"))
        .map(|d| if d.contains("\"queued\"") { "queued" } else if d.contains("\"running\"") { "running" } else if d.contains("\"succeeded\"") { "succeeded" } else { "?" })
        .collect();
    assert_eq!(states, vec!["queued", "running", "succeeded"], "{text}");
    assert!(text.contains("event: progress"), "{text}");
    assert!(text.contains("\"listed\":2"), "{text}");

    // A finished job's stream says where it is and ends at once.
    let r = app.get(&format!("/api/v1/jobs/{id}/events"), &app.read).await;
    assert!(r.text.contains("event: state") && r.text.contains("succeeded"), "{}", r.text);
    app.get("/api/v1/jobs/999/events", &app.read).await.problem(404, "/problems/not-found");
}

#[tokio::test]
async fn sse_streams_end_at_shutdown() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("gus")).await;
    let resp = app.req(reqwest::Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&app.read)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let shutdown = app.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
    });
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("the stream ends").unwrap();
    assert!(text.contains("\"queued\""), "{text}");
}

#[tokio::test]
async fn csv_reports_defuse_formulas_from_servers() {
    // OWASP "CSV injection": a cell that a spreadsheet would run as a formula gets a
    // leading `'`; the JSON report keeps the exact values.
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("kim")).await;
    let run = app.store.start_run(id, false).await.unwrap();
    let hostile = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "plain", "a=b"];
    let listed: Vec<(String, u64)> = hostile.iter().map(|u| ((*u).to_owned(), 10)).collect();
    app.store.record_listed(id, run, &listed).await.unwrap();
    app.store.mark_skipped(id, run, "plain", "=cmd|' /C calc'!A0").await.unwrap();

    let r = app.get(&format!("/api/v1/jobs/{id}/report?format=csv"), &app.read).await;
    assert_eq!(r.status, 200);
    let mut rdr = csv::Reader::from_reader(r.text.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let cell = |uidl: &str, col: usize| -> String {
        let want = if uidl == "plain" || uidl == "a=b" { uidl.to_owned() } else { format!("'{uidl}") };
        let row = rows.iter().find(|r| r[0] == *want).unwrap_or_else(|| panic!("no row {want:?} in {}", r.text));
        row[col].to_owned()
    };
    for uidl in hostile {
        assert_eq!(cell(uidl, 1), "10", "{uidl:?}");
    }
    assert!(!r.text.contains("\n=") && !r.text.contains(",=") && !r.text.contains("\"=HYPERLINK"), "{}", r.text);
    assert_eq!(cell("plain", 3), "'=cmd|' /C calc'!A0");

    // The JSON report is data, not a spreadsheet: exact values.
    let report = app.get(&format!("/api/v1/jobs/{id}/report"), &app.read).await.json();
    let uidls: Vec<&str> = report["messages"].as_array().unwrap().iter().map(|m| m["uidl"].as_str().unwrap()).collect();
    for uidl in hostile {
        assert!(uidls.contains(&uidl), "{uidl:?} in {uidls:?}");
    }
}

#[tokio::test]
async fn verify_takes_a_level_or_a_boolean_and_none_never_with_deletion() {
    let app = TestApp::spawn().await;
    for (verify, delete, want) in [
        (json!(false), "keep", "none"),
        (json!("none"), "keep", "none"),
        (json!(true), "after-verified", "exact"),
        (json!("body"), "after-verified", "body"),
    ] {
        let mut body = job_body("vera");
        body["options"] = json!({"verify": verify, "delete": delete});
        let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
        assert_eq!(r.status, 201, "{verify}: {}", r.text);
        assert_eq!(r.json()["options"]["verify"], want, "{verify}");
    }
    for (verify, delete) in [(json!(false), "after-verified"), (json!("none"), "after-days:3"), (json!("fast"), "keep")] {
        let mut body = job_body("vera");
        body["options"] = json!({"verify": verify, "delete": delete});
        let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
        assert_eq!(p["errors"][0]["field"], "options.verify", "{verify} {delete}: {p}");
    }
}

#[tokio::test]
async fn deleted_is_refused_as_a_target_flag() {
    let app = TestApp::spawn().await;
    for flag in ["\\Deleted", "\\DELETED", "\\deleted"] {
        let mut body = job_body("lee");
        body["target"]["flags"] = json!(["\\Seen", flag]);
        let r = app.post_json("/api/v1/jobs", &app.write, &body).await;
        let p = r.problem(422, "/problems/validation");
        r.no_secrets();
        assert_eq!(p["errors"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["errors"][0]["field"], "target.flags[1]", "{p}");
        let message = p["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(flag) && message.contains("EXPUNGE") && message.contains("source"), "{message}");
    }
    // The other limits hold: \Recent, 32 flags at most, atoms only.
    let mut body = job_body("lee");
    body["target"]["flags"] = json!(["\\Recent", "a b", "x".repeat(129)]);
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["target.flags[0]", "target.flags[1]", "target.flags[2]"], "{p}");
    body["target"]["flags"] = json!((0..33).map(|i| format!("$L{i}")).collect::<Vec<_>>());
    let p = app.post_json("/api/v1/jobs", &app.write, &body).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["field"], "target.flags", "{p}");
    body["target"]["flags"] = json!(["\\Seen", "\\Flagged", "$Migrated", "\\Answered"]);
    assert_eq!(app.post_json("/api/v1/jobs", &app.write, &body).await.status, 201);

    // Batches: the row and the flag are named.
    let mut bad = job_body("b");
    bad["target"]["flags"] = json!(["\\Deleted"]);
    let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": "d", "jobs": [job_body("a"), bad]})).await;
    let p = r.problem(422, "/problems/validation");
    assert_eq!((p["errors"][0]["row"].clone(), p["errors"][0]["field"].clone()), (json!(2), json!("target.flags[0]")), "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("EXPUNGE"), "{p}");
}

#[tokio::test]
async fn a_page_of_the_largest_size_still_leads_to_the_next() {
    // The store returns at most 500 rows a query, the API's largest page.
    let app = TestApp::spawn().await;
    let jobs: Vec<serde_json::Value> = (0..501).map(|i| job_body(&format!("u{i}"))).collect();
    let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": "big", "jobs": jobs})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = app.get("/api/v1/jobs?limit=500", &app.read).await.json();
    assert_eq!(first["items"].as_array().unwrap().len(), 500);
    let cursor = first["next_cursor"].as_str().expect("a next page").to_owned();
    let rest = app.get(&format!("/api/v1/jobs?limit=500&cursor={cursor}"), &app.read).await.json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null(), "{rest}");
    // Exactly a full page and nothing after it: no cursor.
    let last = app.get(&format!("/api/v1/jobs?limit=500&cursor={}", rest["items"][0]["id"].as_i64().unwrap() - 500), &app.read).await.json();
    assert_eq!(last["items"].as_array().unwrap().len(), 500);
    assert!(last["next_cursor"].is_null(), "{}", last["next_cursor"]);
}
