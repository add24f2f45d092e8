//! The archive over HTTP against a real `mailferry serve` and the lab Dovecot: archive jobs
//! created through the API, the archive list with dedup, search, exact bytes, provenance,
//! verify (clean, then after tampering with a blob), holds and retention (admin scope) and
//! an mbox export.

use std::path::{Path, PathBuf};

use crate::common::server::{job_body, Api, Server};
use crate::common::{expected_at_destination, Lab, SRC_PW};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn msg(id: &str, from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: legal@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}@lab>\r\n\
         Date: Mon, 4 Mar 2024 10:00:00 +0000\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

fn hex_digest(m: &[u8]) -> String {
    let d = Sha256::digest(expected_at_destination(m));
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn archive_job(lab: &Lab, user: &str) -> Value {
    let mut body = job_body(&lab.dovecot, user, "dst", "keep");
    body["target"] = json!({"protocol": "archive", "archive": "legal"});
    body
}

async fn send(api: &Api, method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = api.http.request(method, format!("{}{path}", api.base)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GET raw bytes: (status, content type, body).
async fn get_bytes(api: &Api, path: &str) -> (u16, String, Vec<u8>, Option<String>) {
    let r = api.http.get(format!("{}{path}", api.base)).bearer_auth(&api.token).send().await.unwrap();
    let status = r.status().as_u16();
    let h = |k: &str| r.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let ct = h("content-type").unwrap_or_default();
    let cd = h("content-disposition");
    (status, ct, r.bytes().await.unwrap().to_vec(), cd)
}

fn find_blob(dir: &Path, digest: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() {
            if let Some(found) = find_blob(&p, digest) {
                return Some(found);
            }
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(digest)) {
            return Some(p);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_jobs_search_read_verify_hold_and_export_over_http() {
    let lab = Lab::start();
    lab.dovecot.add_user("alice", SRC_PW);
    lab.dovecot.add_user("bob", SRC_PW);
    let shared = [
        msg("s1", "carol@example.com", "Quarterly invoice", "Please pay the zeppelin invoice."),
        msg("s2", "dave@example.com", "Board minutes", "Minutes attached.\r\nFrom the chair: approved."),
    ];
    let alice_own = vec![msg("a1", "erin@example.com", "Lunch", "Tacos?")];
    let bob_own = vec![
        msg("b1", "frank@example.com", "Merger plans", "Strictly confidential."),
        msg("b2", "grace@example.com", "Re: Lunch", "Sure."),
    ];
    let alice: Vec<Vec<u8>> = shared.iter().chain(&alice_own).cloned().collect();
    let bob: Vec<Vec<u8>> = shared.iter().chain(&bob_own).cloned().collect();
    lab.dovecot.seed("alice", &alice);
    lab.dovecot.seed("bob", &bob);
    let mut server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();

    // Unknown archives are 404 problems.
    let (status, p, _) = api.get("/api/v1/archives/legal/messages").await;
    assert_eq!((status, p["type"].as_str()), (404, Some("/problems/not-found")), "{p}");

    // Two archive jobs over HTTP; the job shows its archive target.
    let mut ids = Vec::new();
    for user in ["alice", "bob"] {
        let (status, job, text) = api.post("/api/v1/jobs", &archive_job(&lab, user)).await;
        assert_eq!(status, 201, "{text}");
        assert_eq!(job["target"], json!({"protocol": "archive", "archive": "legal"}));
        ids.push(job["id"].as_i64().unwrap());
    }
    for id in &ids {
        let job = api.wait_state(*id, &["succeeded", "failed", "partial"], 90).await;
        assert_eq!(job["state"], "succeeded", "{job}\n{}", server.logs());
    }
    let (status, bad, _) = api.post("/api/v1/jobs", &{
        let mut b = archive_job(&lab, "alice");
        b["target"]["archive"] = "../../etc".into();
        b
    }).await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["errors"][0]["field"], "target.archive");

    // The list: identical bytes stored once, every arrival an occurrence.
    let (status, list, text) = api.get("/api/v1/archives").await;
    assert_eq!(status, 200, "{text}");
    let a = &list["items"][0];
    assert_eq!(a["name"], "legal");
    assert_eq!(a["messages"], 5, "{a}");
    assert_eq!(a["occurrences"], 7, "{a}");
    assert!(a["dedup_ratio"].as_f64().unwrap() > 1.0, "{a}");
    assert!(a["logical_bytes"].as_u64().unwrap() > a["unique_bytes"].as_u64().unwrap(), "{a}");
    assert!(a["stored_bytes"].as_u64().unwrap() > 0);
    assert_eq!(a["retention_days"], Value::Null);
    assert_eq!(a["holds"], json!([]));

    // Search by field and by free text; a shared message is one hit per mailbox.
    let (_, page, text) = api.get("/api/v1/archives/legal/messages?subject=invoice").await;
    assert_eq!(page["total"], 2, "{text}");
    let accounts: Vec<&str> = page["items"].as_array().unwrap().iter().map(|h| h["account"].as_str().unwrap()).collect();
    assert_eq!(accounts.len(), 2);
    assert!(accounts.contains(&"alice") && accounts.contains(&"bob"), "{accounts:?}");
    let hit = &page["items"][0];
    let invoice = hex_digest(&shared[0]);
    assert_eq!(hit["digest"], invoice.as_str());
    assert_eq!(hit["subject"], "Quarterly invoice");
    assert_eq!(hit["from"][0].as_str().map(|f| f.contains("carol@example.com")), Some(true), "{hit}");
    assert_eq!(hit["has_attachment"], false);
    assert!(hit["uidl"].as_str().is_some_and(|u| !u.is_empty()) && hit["retrieved_at"].is_string(), "{hit}");
    let (_, page, text) = api.get("/api/v1/archives/legal/messages?from=frank%40example.com").await;
    assert_eq!(page["total"], 1, "{text}");
    assert_eq!(page["items"][0]["subject"], "Merger plans");
    let (_, page, text) = api.get("/api/v1/archives/legal/messages?q=zeppelin&account=bob").await;
    assert_eq!(page["total"], 1, "{text}");
    assert_eq!(page["items"][0]["digest"], invoice.as_str());
    let (_, page, _) = api.get("/api/v1/archives/legal/messages?limit=3").await;
    assert_eq!((page["total"].as_u64(), page["items"].as_array().unwrap().len()), (Some(7), 3));
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    let (_, next, _) = api.get(&format!("/api/v1/archives/legal/messages?limit=3&cursor={cursor}")).await;
    assert_eq!(next["items"].as_array().unwrap().len(), 3);
    assert_ne!(next["items"][0]["occurrence_id"], page["items"][0]["occurrence_id"]);
    let (status, p, _) = api.get("/api/v1/archives/legal/messages?date_from=someday").await;
    assert_eq!((status, p["errors"][0]["field"].as_str()), (422, Some("date_from")), "{p}");

    // The exact bytes, and the provenance of both arrivals.
    let (status, ct, bytes, cd) = get_bytes(&api, &format!("/api/v1/archives/legal/messages/{invoice}")).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "message/rfc822");
    assert!(cd.unwrap_or_default().starts_with("attachment"), "downloaded, never rendered");
    assert_eq!(bytes, expected_at_destination(&shared[0]));
    let (status, meta, text) = api.get(&format!("/api/v1/archives/legal/messages/{invoice}/meta")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(meta["digest"], invoice.as_str());
    assert_eq!(meta["state"], "stored");
    assert_eq!(meta["headers"]["subject"], "Quarterly invoice");
    let occ = meta["occurrences"].as_array().unwrap();
    assert_eq!(occ.len(), 2, "{meta}");
    let mut who: Vec<&str> = occ.iter().map(|o| o["account"].as_str().unwrap()).collect();
    who.sort();
    assert_eq!(who, ["alice", "bob"]);
    assert_eq!(occ[0]["source_host"], "127.0.0.1");
    assert_eq!(meta["tombstone"], Value::Null);
    let (status, _, _) = api.get(&format!("/api/v1/archives/legal/messages/{}", "0".repeat(64))).await;
    assert_eq!(status, 404);
    let (status, _, _) = api.get("/api/v1/archives/legal/messages/not-a-digest").await;
    assert_eq!(status, 400);

    // Verify: clean.
    let (status, run, text) = api.post("/api/v1/archives/legal/verify", &json!({})).await;
    assert_eq!(status, 202, "{text}");
    let run = api.wait_run(&format!("/api/v1/archives/legal/verify/{}", run["id"])).await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["report"]["ok"], true, "{run}");
    assert_eq!(run["report"]["discrepancies"], json!([]));
    assert_eq!(run["report"]["blobs_checked"], 5);
    assert_eq!(run["progress"], json!({"done": 5, "total": 5}));
    let verified = run.clone();
    let (status, _, _) = api.get("/api/v1/archives/legal/verify/999").await;
    assert_eq!(status, 404);

    // Export bob's messages as mbox: every message, exactly.
    let (status, run, text) = api.post("/api/v1/archives/legal/exports", &json!({"query": {"account": "bob"}, "format": "mbox"})).await;
    assert_eq!(status, 202, "{text}");
    let run = api.wait_run(&format!("/api/v1/archives/legal/exports/{}", run["id"])).await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["result"]["messages"], 4, "{run}");
    let download = run["result"]["download"].as_str().unwrap();
    let (status, ct, mbox, cd) = get_bytes(&api, download).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/mbox");
    assert!(cd.unwrap_or_default().contains("legal-export-"));
    assert_eq!(format!("{:x}", Sha256::digest(&mbox)), run["result"]["file_sha256"].as_str().unwrap());
    let mut got = mailferry_archive::mboxrd_split(&mbox);
    let mut want: Vec<Vec<u8>> = bob.iter().map(|m| expected_at_destination(m)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the mbox holds bob's messages byte for byte");
    assert_eq!(run["result"]["manifest"].as_str().unwrap().lines().count(), 4);
    let exported = run.clone();
    let (status, zip, _) = api.post("/api/v1/archives/legal/exports", &json!({"format": "eml-zip"})).await;
    assert_eq!(status, 202);
    let zip = api.wait_run(&format!("/api/v1/archives/legal/exports/{}", zip["id"])).await;
    let (_, ct, bytes, _) = get_bytes(&api, zip["result"]["download"].as_str().unwrap()).await;
    assert_eq!((ct.as_str(), &bytes[..2]), ("application/zip", &b"PK"[..]));
    let (status, p, _) = api.post("/api/v1/archives/legal/exports", &json!({"format": "pst"})).await;
    assert_eq!(status, 422, "{p}");

    // Runs are recorded with the archive: after a restart the server still reports them,
    // exactly as before, and still serves the export file.
    assert!(server.terminate(std::time::Duration::from_secs(20)).success());
    server.restart();
    let api = server.client();
    let (status, again, text) = api.get(&format!("/api/v1/archives/legal/verify/{}", verified["id"])).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(again, verified, "the verify run as recorded");
    let (status, again, text) = api.get(&format!("/api/v1/archives/legal/exports/{}", exported["id"])).await;
    assert_eq!((status, &again), (200, &exported), "{text}");
    let (status, _, again_mbox, _) = get_bytes(&api, exported["result"]["download"].as_str().unwrap()).await;
    assert_eq!((status, again_mbox), (200, mbox));
    // Ids are the archive's: a new run after the restart gets a new one.
    let (status, run, text) = api.post("/api/v1/archives/legal/verify", &json!({})).await;
    assert_eq!(status, 202, "{text}");
    assert!(run["id"].as_u64() > verified["id"].as_u64(), "{run} after {verified}");
    api.wait_run(&format!("/api/v1/archives/legal/verify/{}", run["id"])).await;

    // Holds and retention: admin only.
    let (status, tok, text) = api.post("/api/v1/tokens", &json!({"name": "writer", "scope": "write"})).await;
    assert_eq!(status, 201, "{text}");
    let writer = tok["token"].as_str().unwrap().to_owned();
    let hold = json!({"scope": {"account": "alice"}, "reason": "matter 42"});
    let (status, p) = send(&api, reqwest::Method::POST, "/api/v1/archives/legal/holds", &writer, Some(hold.clone())).await;
    assert_eq!((status, p["type"].as_str()), (403, Some("/problems/forbidden")), "{p}");
    let (status, placed) = send(&api, reqwest::Method::POST, "/api/v1/archives/legal/holds", &api.token, Some(hold)).await;
    assert_eq!(status, 201, "{placed}");
    assert_eq!(placed["scope"], json!({"account": "alice"}));
    let q = json!({"scope": {"query": {"subject": "merger"}}, "reason": "SEC inquiry"});
    let (status, qhold) = send(&api, reqwest::Method::POST, "/api/v1/archives/legal/holds", &api.token, Some(q)).await;
    assert_eq!(status, 201, "{qhold}");
    assert_eq!(qhold["scope"]["query"]["subject"], "merger");
    let (status, p) = send(&api, reqwest::Method::PUT, "/api/v1/archives/legal/retention", &writer, Some(json!({"days": 7}))).await;
    assert_eq!(status, 403, "{p}");
    let (status, ret) = send(&api, reqwest::Method::PUT, "/api/v1/archives/legal/retention", &api.token, Some(json!({"days": 2555}))).await;
    assert_eq!(status, 200, "{ret}");
    assert_eq!(ret["retention_days"], 2555);
    let (_, list, _) = api.get("/api/v1/archives").await;
    assert_eq!(list["items"][0]["retention_days"], 2555);
    assert_eq!(list["items"][0]["holds"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["items"][0]["holds"][0]["reason"], "matter 42");
    let release = format!("/api/v1/archives/legal/holds/{}", placed["id"]);
    let (status, _) = send(&api, reqwest::Method::DELETE, &release, &writer, None).await;
    assert_eq!(status, 403);
    let (status, _) = send(&api, reqwest::Method::DELETE, &release, &api.token, None).await;
    assert_eq!(status, 204);
    let (status, p) = send(&api, reqwest::Method::DELETE, &release, &api.token, None).await;
    assert_eq!(status, 404, "{p}");
    let (_, list, _) = api.get("/api/v1/archives").await;
    assert_eq!(list["items"][0]["holds"].as_array().unwrap().len(), 1);

    // Tamper with a stored blob: verify names it, and the message is never served.
    let blob = find_blob(&server.data.path().join("archive/legal/blobs"), &invoice).expect("the invoice's blob file");
    let mut raw = std::fs::read(&blob).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x55;
    std::fs::write(&blob, &raw).unwrap();
    let (status, run, _) = api.post("/api/v1/archives/legal/verify", &json!({})).await;
    assert_eq!(status, 202);
    let run = api.wait_run(&format!("/api/v1/archives/legal/verify/{}", run["id"])).await;
    assert_eq!(run["state"], "done", "{run}");
    assert_eq!(run["report"]["ok"], false);
    let found = run["report"]["discrepancies"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{run}");
    assert_eq!(found[0]["digest"], invoice.as_str(), "{run}");
    let (status, ct, body, _) = get_bytes(&api, &format!("/api/v1/archives/legal/messages/{invoice}")).await;
    assert_eq!(status, 500);
    assert_eq!(ct, "application/problem+json");
    let p: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(p["type"], "/problems/integrity", "{p}");
    assert_eq!(p["digest"], invoice.as_str());
    assert!(!String::from_utf8_lossy(&body).contains("zeppelin"), "never the bytes");
    assert!(server.logs().contains("ARCHIVE INTEGRITY FAILURE"), "loudly logged");
    // The other messages are still served.
    let (status, _, bytes, _) = get_bytes(&api, &format!("/api/v1/archives/legal/messages/{}", hex_digest(&bob_own[0]))).await;
    assert_eq!((status, bytes), (200, expected_at_destination(&bob_own[0])));
}
