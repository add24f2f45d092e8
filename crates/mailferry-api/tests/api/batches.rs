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
