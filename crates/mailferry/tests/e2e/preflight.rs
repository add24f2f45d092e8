//! Preflight (issue 17) end to end against the lab Dovecot: `POST /jobs?preflight=true`,
//! `POST /batches?preflight=true` (JSON and CSV) and `mailferry preflight`. Every check
//! asserts the verdict and the reason codes, that nothing was created or copied, and that
//! no password appears in the output.

use std::process::Command;

use crate::common::server::*;
use crate::common::*;
use serde_json::{json, Value};

fn small(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n").into_bytes()).collect()
}

fn big(bytes: usize) -> Vec<u8> {
    let mut m = b"Message-ID: <big@lab>\r\nSubject: big\r\n\r\n".to_vec();
    while m.len() < bytes {
        m.extend_from_slice(b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    m
}

fn codes(report: &Value) -> Vec<String> {
    report["reasons"].as_array().map(|r| r.iter().filter_map(|x| x["code"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn no_secret(text: &str) {
    assert!(!text.contains(SRC_PW) && !text.contains(DST_PW) && !text.contains("wrong-Pw-123"), "a password leaked: {text}");
}

async fn nothing_created(api: &Api) {
    let (_, jobs, _) = api.get("/api/v1/jobs").await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "a preflight created a job: {jobs}");
    let (_, batches, _) = api.get("/api/v1/batches").await;
    assert_eq!(batches["items"].as_array().map(Vec::len), Some(0), "a preflight created a batch: {batches}");
}

async fn post_query(api: &Api, path: &str, content_type: &str, accept: &str, body: String) -> (u16, String) {
    let r = api
        .http
        .post(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("content-type", content_type)
        .header("accept", accept)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn job_preflight_ready_wrong_passwords_and_oversized_messages() {
    job_preflight(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_job_preflight_creates_nothing() {
    let pg = FreshPg::create();
    job_preflight(Some(&pg.url)).await;
}

async fn job_preflight(database_url: Option<&str>) {
    let lab = Lab::start();
    let mut msgs = small(3, "pf");
    msgs.push(big(20_000));
    lab.dovecot.seed("src", &msgs);
    let server = Server::start(&lab.dovecot, database_url, &[], &[]);
    let api = server.client();

    let body = job_body(&lab.dovecot, "src", "dst", "keep");
    let (status, report, text) = api.post("/api/v1/jobs?preflight=true", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(report["verdict"], "ready", "{text}");
    assert_eq!(report["source"]["messages"], 4);
    assert_eq!(report["source"]["uidl"], true);
    assert_eq!(report["source"]["largest"][0]["bytes"].as_u64().unwrap() as usize, msgs[3].len(), "{text}");
    assert!(report["source"]["tls"]["version"].as_str().unwrap().starts_with("TLSv1."), "{text}");
    assert!(report["source"]["tls"]["fingerprint"].as_str().unwrap().starts_with("sha256:"), "{text}");
    assert_eq!(report["target"]["uidplus"], true);
    assert_eq!(report["target"]["folder"], "exists");
    assert!(report["estimate_secs"].as_u64().unwrap() > 0);
    no_secret(&text);

    // A folder that does not exist yet: a warning, and it is not created.
    let mut sub = body.clone();
    sub["target"]["folder"] = json!("Imported/2026");
    let (status, report, text) = api.post("/api/v1/jobs?preflight=true", &sub).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!((report["verdict"].as_str(), codes(&report)), (Some("warning"), vec!["target-folder-missing".to_owned()]), "{text}");
    assert!(!lab.dovecot.folder_dir("dst", "Imported/2026").exists(), "the preflight created the folder");

    // max_message_bytes below the big message: warned, counted.
    let mut capped = body.clone();
    capped["options"]["max_message_bytes"] = json!(10_000);
    let (_, report, text) = api.post("/api/v1/jobs?preflight=true", &capped).await;
    assert_eq!(report["verdict"], "warning", "{text}");
    assert_eq!(codes(&report), ["message-over-max-bytes"]);
    assert_eq!(report["target"]["over_max_message_bytes"], 1);

    // Wrong passwords: blocked, on the side that failed.
    let mut bad_src = body.clone();
    bad_src["source"]["password"] = json!("wrong-Pw-123");
    let (status, report, text) = api.post("/api/v1/jobs?preflight=true", &bad_src).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(report["verdict"], "blocked", "{text}");
    assert!(codes(&report).contains(&"source-login-failed".to_owned()), "{text}");
    no_secret(&text);
    let mut bad_dst = body.clone();
    bad_dst["target"]["password"] = json!("wrong-Pw-123");
    let (_, report, text) = api.post("/api/v1/jobs?preflight=true", &bad_dst).await;
    assert_eq!(report["verdict"], "blocked", "{text}");
    assert_eq!(codes(&report), ["target-login-failed"], "{text}");
    no_secret(&text);

    nothing_created(&api).await;
    assert_eq!(lab.dovecot.message_count("src"), 4, "nothing deleted");
    assert_eq!(lab.dovecot.message_count("dst"), 0, "nothing copied");
    no_secret(&server.logs());
}

/// Dovecot's quota plugin (maildir backend) with a 2 KiB storage limit, and APPENDLIMIT.
fn quota_lab() -> Lab {
    Lab::start_with(LabOptions {
        extra_config: "mail_plugins = $mail_plugins quota\n\
                       protocol imap {\n  mail_plugins = $mail_plugins imap_quota\n  imap_capability = +APPENDLIMIT=5000\n}\n\
                       plugin {\n  quota = maildir:User quota\n  quota_rule = *:storage=2K\n}\n"
            .into(),
    })
}

#[tokio::test]
async fn batch_preflight_verdicts_totals_and_csv() {
    let lab = quota_lab();
    lab.dovecot.add_user("small", SRC_PW);
    let msgs: Vec<Vec<u8>> = small(2, "b").into_iter().chain([big(8_000)]).collect();
    let total: usize = msgs.iter().map(Vec::len).sum();
    lab.dovecot.seed("src", &msgs);
    lab.dovecot.seed("small", &small(1, "s"));
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();

    let (p, q) = (lab.dovecot.pop3s_port(), lab.dovecot.imaps_port());
    let csv = format!(
        "source_host,source_port,source_user,source_password,target_host,target_port,target_user,target_password\n\
         127.0.0.1,{p},small,{SRC_PW},127.0.0.1,{q},dst,{DST_PW}\n\
         127.0.0.1,{p},src,{SRC_PW},127.0.0.1,{q},dst,{DST_PW}\n\
         127.0.0.1,{p},src,wrong-Pw-123,127.0.0.1,{q},dst,{DST_PW}\n\
         127.0.0.1,1,src,{SRC_PW},127.0.0.1,{q},dst,{DST_PW}\n"
    );
    let (status, text) = post_query(&api, "/api/v1/batches?preflight=true", "text/csv", "application/json", csv.clone()).await;
    assert_eq!(status, 200, "{text}");
    no_secret(&text);
    let report: Value = serde_json::from_str(&text).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{text}");
    let row = |n: usize| rows.iter().find(|r| r["row"] == n).unwrap_or_else(|| panic!("row {n}: {text}"));
    // A small mailbox fits the 2 KiB quota.
    assert_eq!(row(1)["verdict"], "ready", "{text}");
    assert_eq!(row(1)["target"]["quota_limit_bytes"], 2048, "{text}");
    // The big one: over the quota (blocked) and over APPENDLIMIT (counted).
    assert_eq!(row(2)["verdict"], "blocked", "{text}");
    let c2 = codes(row(2));
    assert!(c2.contains(&"target-quota-insufficient".to_owned()) && c2.contains(&"message-over-appendlimit".to_owned()), "{c2:?}");
    assert_eq!(row(2)["target"]["over_append_limit"], 1);
    assert_eq!(row(2)["source"]["bytes"].as_u64().unwrap() as usize, total);
    assert_eq!(codes(row(3)), ["source-login-failed"]);
    assert_eq!(codes(row(4)), ["source-unreachable"], "{text}");
    let t = &report["totals"];
    assert_eq!((t["ready"].as_u64(), t["warning"].as_u64(), t["blocked"].as_u64()), (Some(1), Some(0), Some(3)), "{text}");
    assert_eq!(t["messages"], 4);
    assert!(t["estimate_secs"].as_u64().unwrap() >= row(2)["estimate_secs"].as_u64().unwrap());

    // The same as CSV: a header, one line per row, the totals.
    let (status, text) = post_query(&api, "/api/v1/batches?preflight=true", "text/csv", "text/csv", csv).await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("row,verdict,reasons"), "{text}");
    assert!(lines[3].starts_with("3,blocked,source-login-failed"), "{text}");
    assert!(lines[5].starts_with("totals,,ready=1 warning=0 blocked=3"), "{text}");
    no_secret(&text);

    nothing_created(&api).await;
    assert_eq!(lab.dovecot.message_count("dst"), 0, "nothing copied");
}

fn preflight_cmd(lab: &Lab, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .arg("preflight")
        .args(args)
        .current_dir(lab.state_dir.path())
        .env("MF_SRC_PW", SRC_PW)
        .env("MF_DST_PW", DST_PW)
        .env("MF_BAD_PW", "wrong-Pw-123")
        .output()
        .unwrap()
}

#[test]
fn cli_preflight_exit_codes_json_and_table() {
    let lab = Lab::start();
    lab.dovecot.seed("src", &small(2, "c"));
    let ca = lab.dovecot.ca_file().display().to_string();
    let (from, to) = (lab.source_url(), lab.to_tls("INBOX"));
    let common = ["--ca-file", &ca, "--to-password-env", "MF_DST_PW"];

    let ok = preflight_cmd(&lab, &[&["--from", &from, "--to", &to, "--from-password-env", "MF_SRC_PW", "--json"][..], &common].concat());
    let out = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&ok.stderr));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "ready");
    assert_eq!(v["source"]["messages"], 2);
    no_secret(&out);

    let bad = preflight_cmd(&lab, &[&["--from", &from, "--to", &to, "--from-password-env", "MF_BAD_PW"][..], &common].concat());
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(3), "{out}{}", String::from_utf8_lossy(&bad.stderr));
    assert!(out.contains("blocked") && out.contains("source-login-failed"), "a table: {out}");
    no_secret(&out);

    let usage = preflight_cmd(&lab, &["--from", &from]);
    assert_eq!(usage.status.code(), Some(2), "{}", String::from_utf8_lossy(&usage.stderr));

    // A batch file: one good row, one wrong password: exit 3, totals in the table.
    let (p, q) = (lab.dovecot.pop3s_port(), lab.dovecot.imaps_port());
    let file = lab.state_dir.path().join("batch.csv");
    std::fs::write(
        &file,
        format!(
            "source_host,source_port,source_user,source_password,target_host,target_port,target_user,target_password\n\
             127.0.0.1,{p},src,{SRC_PW},127.0.0.1,{q},dst,{DST_PW}\n\
             127.0.0.1,{p},src,wrong-Pw-123,127.0.0.1,{q},dst,{DST_PW}\n"
        ),
    )
    .unwrap();
    let batch = preflight_cmd(&lab, &["--batch", file.to_str().unwrap(), "--ca-file", &ca, "--json"]);
    let out = String::from_utf8_lossy(&batch.stdout);
    assert_eq!(batch.status.code(), Some(3), "{out}{}", String::from_utf8_lossy(&batch.stderr));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["totals"]["ready"].as_u64(), v["totals"]["blocked"].as_u64()), (Some(1), Some(1)), "{out}");
    no_secret(&out);
    let good = preflight_cmd(&lab, &["--batch", file.to_str().unwrap(), "--ca-file", &ca]);
    let out = String::from_utf8_lossy(&good.stdout);
    assert!(out.contains("totals: 1 ready, 0 warning, 1 blocked"), "{out}");
    assert_eq!(lab.dovecot.message_count("dst"), 0, "nothing copied");
}
