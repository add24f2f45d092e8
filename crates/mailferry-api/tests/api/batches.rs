//! Batches from CSV and JSON: row-numbered errors, all-or-nothing, skip_invalid, reports.

use serde_json::json;

use crate::{job_body, TestApp, SRC_PASSWORD};

const HEADER: &str = "source_host,source_port,source_security,source_user,source_password,source_auth,target_host,target_port,target_security,target_user,target_password,target_folder,target_auth,delete,labels";

fn csv_with_bad_row() -> String {
    format!(
        "{HEADER}\n\
         pop.example.com,995,tls,ann,{SRC_PASSWORD},user,imap.example.com,993,tls,ann,p2,INBOX,,keep,wave=1;team=a\n\
         pop.example.com,99999,tls,ben,{SRC_PASSWORD},,imap.example.com,,tls,ben,p2,,,sometimes,\n\
         pop.example.com,,starttls,cat,{SRC_PASSWORD},,imap.example.com,,,cat,p2,Archive,,after-days:30,wave=2\n"
    )
}

async fn post_csv(app: &TestApp, path: &str, body: String) -> crate::Resp {
    let req = app.req(reqwest::Method::POST, path, Some(&app.write)).header("content-type", "text/csv").body(body);
    app.send(req).await
}

async fn job_count(app: &TestApp) -> usize {
    app.get("/api/v1/jobs", &app.read).await.json()["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn csv_batch_with_a_bad_row_creates_nothing_unless_told_to_skip_it() {
    let app = TestApp::spawn().await;
    let r = post_csv(&app, "/api/v1/batches", csv_with_bad_row()).await;
    let p = r.problem(422, "/problems/validation");
    r.no_secrets();
    let errors = p["errors"].as_array().unwrap();
    assert!(errors.iter().all(|e| e["row"] == 2), "{p}");
    let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"source_port") && fields.contains(&"delete"), "{fields:?}");
    assert_eq!(job_count(&app).await, 0, "nothing created");

    let r = post_csv(&app, "/api/v1/batches?skip_invalid=true&name=wave%201", csv_with_bad_row()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.no_secrets();
    let created = r.json();
    let batch = created["id"].as_i64().unwrap();
    assert_eq!(r.header("location"), Some(format!("/api/v1/batches/{batch}").as_str()));
    assert_eq!(created["name"], "wave 1");
    assert_eq!(created["jobs"].as_array().unwrap().len(), 2);
    assert!(created["skipped"].as_array().unwrap().iter().all(|e| e["row"] == 2));

    let jobs = app.get(&format!("/api/v1/jobs?batch={batch}"), &app.read).await.json();
    let items = jobs["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["labels"], json!({"wave": "1", "team": "a"}));
    assert_eq!(items[1]["source"]["port"], 110);
    assert_eq!(items[1]["target"]["folder"], "Archive");
    assert_eq!(items[1]["options"]["delete"], "after-days:30");

    let summary = app.get(&format!("/api/v1/batches/{batch}"), &app.read).await.json();
    assert_eq!(summary["jobs"], 2);
    assert_eq!(summary["states"], json!({"queued": 2}));
    assert_eq!(summary["counts"]["listed"], 0);

    let r = app.get(&format!("/api/v1/batches/{batch}/report"), &app.read).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    r.no_secrets();
    let mut rdr = csv::Reader::from_reader(r.text.as_bytes());
    assert_eq!(rdr.headers().unwrap().get(0), Some("job_id"));
    assert_eq!(rdr.records().count(), 2);
    app.get("/api/v1/batches/999", &app.read).await.problem(404, "/problems/not-found");
}

#[tokio::test]
async fn csv_imapsync_aliases_semicolons_and_header_errors() {
    let app = TestApp::spawn().await;
    let body = "host1;user1;password1;host2;user2;password2\npop.example.com;a;p;imap.example.com;a;q\n".to_owned();
    let r = post_csv(&app, "/api/v1/batches", body).await;
    assert_eq!(r.status, 201, "{}", r.text);

    let p = post_csv(&app, "/api/v1/batches", "source_host,source_user\nx,y\n".into()).await.problem(422, "/problems/validation");
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"source_password") && fields.contains(&"target_host"), "{fields:?}");
    post_csv(&app, "/api/v1/batches", format!("{HEADER}\n")).await.problem(422, "/problems/validation");
    let req = app.req(reqwest::Method::POST, "/api/v1/batches", Some(&app.write)).header("content-type", "application/xml").body("<x/>");
    app.send(req).await.problem(415, "/problems/unsupported-media-type");
}

#[tokio::test]
async fn json_batch_and_row_errors() {
    let app = TestApp::spawn().await;
    let mut bad = job_body("bad");
    bad["target"]["folderz"] = "x".into();
    let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": "j", "jobs": [job_body("a"), bad]})).await;
    let p = r.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["row"], 2, "{p}");
    assert!(p["errors"][0]["message"].as_str().unwrap().contains("folderz"), "{p}");
    assert_eq!(job_count(&app).await, 0);

    let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": "j", "jobs": [job_body("a"), job_body("b")]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let created = r.json();
    assert_eq!(created["name"], "j");
    assert_eq!(created["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(created["skipped"], json!([]));
    app.post_json("/api/v1/batches", &app.write, &json!({"jobs": [], "extra": 1})).await.problem(422, "/problems/validation");
}

#[tokio::test]
async fn batches_have_their_own_body_limit() {
    let app = TestApp::spawn().await;
    // 2 MiB: over the JSON limit, within the batch limit, so the row is judged (and refused).
    let big = format!("{HEADER}\npop.example.com,,,a,p,,imap.example.com,,,a,q,,,,k={}\n", "v".repeat(2 * 1024 * 1024));
    let p = post_csv(&app, "/api/v1/batches", big).await.problem(422, "/problems/validation");
    assert_eq!(p["errors"][0]["field"], "labels");
    let huge = format!("{HEADER}\n{}", "x".repeat(11 * 1024 * 1024));
    post_csv(&app, "/api/v1/batches", huge).await.problem(413, "/problems/payload-too-large");
}

#[tokio::test]
async fn batch_reports_defuse_formulas() {
    use mailferry_store::{ClaimLimits, Release};
    let app = TestApp::spawn().await;
    let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": "f", "jobs": [job_body("mo")]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let batch = r.json()["id"].as_i64().unwrap();
    let limits = ClaimLimits { per_source_host: 4, per_target_host: 4 };
    let claimed = app.store.claim_job("w1", std::time::Duration::from_secs(60), limits).await.unwrap().unwrap();
    // A server's error text ends up in last_error.
    let release = Release { state: mailferry_model::JobState::Failed, error: Some("=HYPERLINK(\"http://x\")".into()), not_before: None };
    assert!(app.store.release_job(claimed.job.id, "w1", &release).await.unwrap());
    let r = app.get(&format!("/api/v1/batches/{batch}/report"), &app.read).await;
    let mut rdr = csv::Reader::from_reader(r.text.as_bytes());
    let row = rdr.records().next().unwrap().unwrap();
    assert_eq!(&row[14], "'=HYPERLINK(\"http://x\")", "{}", r.text);
}

// ---------------------------------------------------------------------------------------
// Microsoft 365's file, the optional columns, the batch list.

/// A valid pin (the value is never checked against a server in these tests).
const PIN: &str = "sha256:3a5f00ff112233445566778899aabbccddeeff00112233445566778899aabbcc";

/// The jobs of a batch, in row order.
async fn batch_jobs(app: &TestApp, batch: i64) -> Vec<serde_json::Value> {
    app.get(&format!("/api/v1/jobs?batch={batch}"), &app.read).await.json()["items"].as_array().unwrap().clone()
}

/// `(row, field)` of each problem.
fn problems(p: &serde_json::Value) -> Vec<(i64, String)> {
    let errors = p["errors"].as_array().unwrap();
    errors.iter().map(|e| (e["row"].as_i64().unwrap_or(0), e["field"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test]
async fn microsoft_365_csv_with_the_servers_given_once() {
    let app = TestApp::spawn().await;
    let csv = format!("EmailAddress,UserName,Password,Target_Password\nann@example.com,ann,{SRC_PASSWORD},p2\nben@example.com,ben,{SRC_PASSWORD},p3\n");
    let r = post_csv(&app, "/api/v1/batches?source=pop3s://pop.example.com&target=imaps://imap.example.com:1993/From%20POP&name=m365", csv.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.no_secrets();
    let jobs = batch_jobs(&app, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(jobs.len(), 2);
    let ben = &jobs[1];
    let src = &ben["source"];
    assert_eq!((&src["host"], &src["port"], &src["security"], &src["username"]), (&json!("pop.example.com"), &json!(995), &json!("tls"), &json!("ben")));
    assert_eq!((&ben["target"]["host"], &ben["target"]["port"]), (&json!("imap.example.com"), &json!(1993)));
    assert_eq!((&ben["target"]["username"], &ben["target"]["folder"]), (&json!("ben@example.com"), &json!("From POP")));

    // Into an archive, the file needs no destination password; the mailbox becomes a label.
    let r = post_csv(&app, "/api/v1/batches?source=pop3s://pop.example.com&target=archive:legal", format!("emailaddress;username;password\nann@example.com;ann;{SRC_PASSWORD}\n")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let jobs = batch_jobs(&app, r.json()["id"].as_i64().unwrap()).await;
    assert_eq!(jobs[0]["target"]["archive"], "legal", "{}", jobs[0]);
    assert_eq!(jobs[0]["labels"], json!({"mailbox": "ann@example.com"}));

    // Without the servers, or without the destination password, the header is refused.
    let p = post_csv(&app, "/api/v1/batches", csv).await.problem(422, "/problems/validation");
    assert_eq!(problems(&p), [(0, "source_host".into()), (0, "target_host".into())]);
    let bare = format!("EmailAddress,UserName,Password\nann@example.com,ann,{SRC_PASSWORD}\n");
    let p = post_csv(&app, "/api/v1/batches?source=pop3s://pop.example.com&target=imaps://imap.example.com", bare).await.problem(422, "/problems/validation");
    assert_eq!(problems(&p), [(0, "target_password".into())]);
    // The batch's servers: URLs of the right kind, no credentials, CSV only.
    for (query, field) in [("source=imaps://x.example.com", "source"), ("source=pop3s://u:pw@x.example.com", "source"), ("target=ftp://x", "target")] {
        let r = post_csv(&app, &format!("/api/v1/batches?{query}"), format!("{HEADER}\n")).await;
        let p = r.problem(422, "/problems/validation");
        assert_eq!(problems(&p), [(0, field.into())], "{query}");
        assert!(!r.text.contains(":pw@"), "{}", r.text);
    }
    let r = app.post_json("/api/v1/batches?target=archive:legal", &app.write, &json!({"jobs": [job_body("a")]})).await;
    assert_eq!(problems(&r.problem(422, "/problems/validation")), [(0, "target".into())]);
    assert_eq!(job_count(&app).await, 3);
}

#[tokio::test]
async fn optional_columns_valid_and_invalid() {
    let app = TestApp::spawn().await;
    let header = "source_host,source_user,source_password,source_tls_pin,Target Kind,Archive,target_host,target_user,\
                  target_password,target_tls_pin,Flags,Delete,verify,Dry-Run,Max_Message_Size,labels";
    let good = format!(
        "{header}\n\
         pop.example.com,ann,{SRC_PASSWORD},{PIN},imap,,imap.example.com,ann,p2,{PIN},\\Seen $Migrated,after-verified,body,no,25M,wave=3\n\
         pop.example.com,ben,{SRC_PASSWORD},,ARCHIVE,legal,,,,,,keep,,yes,1024,\n"
    );
    let r = post_csv(&app, "/api/v1/batches", good).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let jobs = batch_jobs(&app, r.json()["id"].as_i64().unwrap()).await;
    let (ann, ben) = (&jobs[0], &jobs[1]);
    assert_eq!(ann["source"]["tls_pin"], PIN);
    assert_eq!(ann["target"]["tls_pin"], PIN);
    assert_eq!(ann["target"]["flags"], json!(["\\Seen", "$Migrated"]));
    assert_eq!(ann["options"], json!({"delete": "after-verified", "max_message_bytes": 25 * 1024 * 1024, "dry_run": false, "verify": "body"}));
    assert_eq!(ann["labels"], json!({"wave": "3"}));
    assert_eq!(ben["target"]["archive"], "legal", "{ben}");
    assert_eq!((&ben["options"]["dry_run"], &ben["options"]["max_message_bytes"]), (&json!(true), &json!(1024)));

    // Each bad value is its row's problem, named by the column as the file spells it; the
    // values are judged as a JSON job body's are (flags, delete, pins, archive names), and a
    // row's CSV syntax problems are reported with the rest of its problems (row 6).
    let bad = format!(
        "{header}\n\
         pop.example.com,a,{SRC_PASSWORD},sha256:zz,imap,,imap.example.com,a,p2,,\\Deleted,sometimes,,,0,\n\
         pop.example.com,b,{SRC_PASSWORD},,archive,legal,,,,{PIN},,,,,lots,\n\
         pop.example.com,c,{SRC_PASSWORD},,archive,../up,,,,,,,,,,\n\
         pop.example.com,d,{SRC_PASSWORD},,ftp,,imap.example.com,d,p2,,,,,,,\n\
         pop.example.com,e,{SRC_PASSWORD},,imap,,imap.example.com,e,p2,,,after-verified,none,,,\n\
         pop.example.com,f,{SRC_PASSWORD},,,,imap.example.com,f,p2,,,sometimes,,perhaps,,\n"
    );
    let p = post_csv(&app, "/api/v1/batches", bad).await.problem(422, "/problems/validation");
    let mut got = problems(&p);
    got.sort();
    let want: Vec<(i64, String)> = [
        (1, "Delete"), (1, "Flags"), (1, "Max_Message_Size"), (1, "source_tls_pin"),
        (2, "Max_Message_Size"), (2, "target_tls_pin"),
        (3, "Archive"),
        (4, "Target Kind"),
        (5, "verify"),
        (6, "Delete"), (6, "Dry-Run"),
    ]
    .iter()
    .map(|(r, f)| (*r, f.to_string()))
    .collect();
    assert_eq!(got, want, "{p}");
    assert!(!p.to_string().contains(SRC_PASSWORD), "{p}");

    // An unknown column refuses the batch, named.
    let p = post_csv(&app, "/api/v1/batches", format!("{HEADER},Colour\n")).await.problem(422, "/problems/validation");
    let e = &p["errors"][0];
    assert_eq!((e["field"].as_str(), e.get("row")), (Some("Colour"), None), "{p}");
    assert!(e["message"].as_str().unwrap().contains("unknown column \"Colour\""), "{p}");
    assert_eq!(job_count(&app).await, 2);
}

#[tokio::test]
async fn list_batches_newest_first_in_pages() {
    let app = TestApp::spawn().await;
    let empty = app.get("/api/v1/batches", &app.read).await.json();
    assert_eq!(empty, json!({"items": [], "next_cursor": null}));
    let mut ids = Vec::new();
    for (i, n) in [1, 2, 3, 1, 2].into_iter().enumerate() {
        let jobs: Vec<_> = (0..n).map(|j| job_body(&format!("u{i}-{j}"))).collect();
        let r = app.post_json("/api/v1/batches", &app.write, &json!({"name": format!("wave {i}"), "jobs": jobs})).await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.json()["id"].as_i64().unwrap());
    }
    app.post_json("/api/v1/jobs", &app.write, &job_body("loose")).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let page = app.get(&format!("/api/v1/batches?limit=2&cursor={cursor}"), &app.read).await.json();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        for b in items {
            let one = app.get(&format!("/api/v1/batches/{}", b["id"]), &app.read).await.json();
            assert_eq!(b, &one, "the list shows what GET /batches/{{id}} shows");
            seen.push(b["id"].as_i64().unwrap());
        }
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids.iter().rev().copied().collect::<Vec<_>>(), "newest first, each once");
    let newest = &app.get("/api/v1/batches?limit=1", &app.read).await.json()["items"][0];
    assert_eq!((&newest["name"], &newest["jobs"], &newest["states"]), (&json!("wave 4"), &json!(2), &json!({"queued": 2})));
    assert_eq!(newest["counts"]["copied"], 0);
    app.get("/api/v1/batches?cursor=abc", &app.read).await.problem(422, "/problems/validation");
    app.get("/api/v1/batches?limit=x", &app.read).await.problem(400, "/problems/bad-request");
    let r = app.req(reqwest::Method::GET, "/api/v1/batches", None);
    assert_eq!(app.send(r).await.status, 401);
}

/// Microsoft 365's file as admins have it, plus the destination password column, with the
/// lab's POP3S and IMAPS servers given once: real jobs, run by an in-process worker, copy
/// every message into the folder the batch's target names; the batch list adds them up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsoft_365_batch_runs_against_the_lab() {
    use std::time::{Duration, Instant};

    use mailferry_engine::{EngineConfig, Worker, WorkerConfig};
    use mailferry_model::netpolicy::Defaults;
    use mailferry_model::NetworkPolicy;
    use mailferry_store::ClaimLimits;
    use mailferry_tests::dovecot::Dovecot;

    let lab = Dovecot::start();
    for (user, n) in [("m1", 3), ("m2", 2)] {
        lab.add_user(user, SRC_PASSWORD);
        lab.add_user(&format!("{user}dst"), crate::DST_PASSWORD);
        let msgs: Vec<Vec<u8>> =
            (0..n).map(|i| format!("Message-ID: <{user}.{i}@lab>\r\nSubject: {user} {i}\r\n\r\nbody {i}\r\n").into_bytes()).collect();
        lab.seed(user, &msgs);
    }
    let network = std::sync::Arc::new(NetworkPolicy::new(Defaults::Api, ["127.0.0.1"], []).unwrap());
    let app = TestApp::spawn_with(mailferry_api::ApiConfig { network: network.clone(), ..mailferry_api::ApiConfig::default() }).await;
    let dst = crate::DST_PASSWORD;
    let csv = format!("EmailAddress,UserName,Password,target_password\r\nm1dst,m1,{SRC_PASSWORD},{dst}\r\nm2dst,m2,{SRC_PASSWORD},{dst}\r\n");
    let path = format!(
        "/api/v1/batches?name=m365&source=pop3s://127.0.0.1:{}&target=imaps://127.0.0.1:{}/From%20POP",
        lab.pop3s_port(),
        lab.imaps_port()
    );
    let r = post_csv(&app, &path, csv).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let batch = r.json()["id"].as_i64().unwrap();

    let config = WorkerConfig {
        id: "m365-test".into(),
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        limits: ClaimLimits { per_source_host: 8, per_target_host: 8 },
        engine: EngineConfig::default(),
        plaintext_allowed: std::sync::Arc::new(|_| false),
        extra_roots_pem: Some(lab.ca_pem()),
        network,
        archives: std::sync::Arc::clone(&app.archives),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pool = tokio::spawn(Worker::new(std::sync::Arc::clone(&app.store), app.sealer.clone(), config).run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let page = app.get("/api/v1/batches", &app.read).await.json();
        let b = page["items"][0].clone();
        if b["states"] == json!({"succeeded": 2}) {
            break b;
        }
        assert!(Instant::now() < deadline, "the batch did not finish: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shutdown.cancel();
    pool.await.unwrap();
    assert_eq!((listed["id"].as_i64(), &listed["name"]), (Some(batch), &json!("m365")));
    assert_eq!((&listed["counts"]["listed"], &listed["counts"]["copied"], &listed["counts"]["failed"]), (&json!(5), &json!(5), &json!(0)));
    assert_eq!(lab.folder_message_count("m1dst", "From POP"), 3);
    assert_eq!(lab.folder_message_count("m2dst", "From POP"), 2);
    assert_eq!(lab.message_count("m1"), 3, "delete defaults to keep");
}
