//! Signed receipts over HTTP (issue 14): receipts of real runs (jobs created over the API,
//! run by an in-process worker against the Dovecot lab) checked offline with the key the
//! API publishes; `?run=`; a receipt of many pages streamed whole; 400s, 404s and 401s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailferry_api::receipt_views::ReceiptDoc;
use mailferry_api::ApiConfig;
use mailferry_engine::{EngineConfig, Worker, WorkerConfig};
use mailferry_model::netpolicy::Defaults;
use mailferry_model::NetworkPolicy;
use mailferry_proof::receipt::RootBuilder;
use mailferry_proof::{check_receipt, DestinationRef, PublicKey, Receipt, ReceiptEntry, ReceiptHeader, ReceiptSigner, SourceRef, RECEIPT_FORMAT};
use mailferry_store::{ClaimLimits, StoredReceipt};
use mailferry_tests::dovecot::Dovecot;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{job_body, Resp, TestApp, DST_PASSWORD, SRC_PASSWORD};

fn loopback() -> Arc<NetworkPolicy> {
    Arc::new(NetworkPolicy::new(Defaults::Api, ["127.0.0.1"], []).unwrap())
}

/// An app that publishes `signer`'s key, and may create jobs reaching the lab on loopback.
async fn app_with_key(signer: &ReceiptSigner) -> TestApp {
    TestApp::spawn_with(ApiConfig {
        network: loopback(),
        receipt_public_key: Some(signer.public_key().to_base64()),
        sse_poll_ms: 50,
        ..ApiConfig::default()
    })
    .await
}

/// A job from `src` on the lab's POP3 to `dst` on its IMAP, plaintext on loopback.
fn lab_job(lab: &Dovecot, src: &str, dry_run: bool) -> Value {
    json!({
        "source": {"protocol": "pop3", "host": "127.0.0.1", "port": lab.pop3_port(), "security": "none",
                   "username": src, "password": SRC_PASSWORD},
        "target": {"protocol": "imap", "host": "127.0.0.1", "port": lab.imap_port(), "security": "none",
                   "username": "dst", "password": DST_PASSWORD, "folder": "INBOX"},
        "options": {"delete": "keep", "dry_run": dry_run},
    })
}

fn messages(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("Message-ID: <{tag}{i}@lab>\r\nSubject: {tag} {i}\r\n\r\n.body {i}\r\n").into_bytes()).collect()
}

/// A worker like `mailferry serve`'s: the app's store and sealer, receipts signed by `signer`.
fn worker(app: &TestApp, signer: &Arc<ReceiptSigner>) -> Worker {
    let config = WorkerConfig {
        id: "receipts-test".into(),
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll_interval: Duration::from_millis(50),
        limits: ClaimLimits { per_source_host: 8, per_target_host: 8 },
        engine: EngineConfig { receipts: Some(Arc::clone(signer)), ..EngineConfig::default() },
        plaintext_allowed: Arc::new(|_| true),
        extra_roots_pem: None,
        network: loopback(),
        archives: Arc::clone(&app.archives),
    };
    Worker::new(Arc::clone(&app.store), app.sealer.clone(), config)
}

/// The job once it has finished its `runs`-th run.
async fn finished(app: &TestApp, id: i64, runs: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = app.get(&format!("/api/v1/jobs/{id}"), &app.read).await.json();
        let done = ["succeeded", "partial", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or(""));
        if done && job["runs"].as_i64() == Some(runs) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish run {runs}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 200 receipt: JSON, streamed (no length), parsed.
#[track_caller]
fn parsed(r: &Resp) -> Receipt {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), None, "streamed, not buffered");
    Receipt::parse(r.text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {}", r.text))
}

#[track_caller]
fn assert_valid(r: &Receipt, key: &PublicKey) {
    let verdict = check_receipt(r, Some(key));
    assert!(verdict.is_valid(), "the receipt does not verify: {:?}", verdict.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_real_runs_verify_with_the_published_key() {
    let lab = Dovecot::start();
    for user in ["src", "dry", "dst"] {
        lab.add_user(user, if user == "dst" { DST_PASSWORD } else { SRC_PASSWORD });
    }
    lab.seed("src", &messages(3, "first"));
    lab.seed("dry", &messages(2, "dry"));
    let signer = Arc::new(ReceiptSigner::generate());
    let app = app_with_key(&signer).await;
    let id = app.create_job(&lab_job(&lab, "src", false)).await;
    let dry = app.create_job(&lab_job(&lab, "dry", true)).await;
    let path = format!("/api/v1/jobs/{id}/receipt");

    // Before any run.
    let p = app.get(&path, &app.read).await.problem(404, "/problems/not-found");
    assert_eq!(p["detail"], format!("job {id} has no receipt yet: receipts are issued when a run finishes (dry runs have none)"));

    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(worker(&app, &signer).run(shutdown.clone()));
    assert_eq!(finished(&app, id, 1).await["state"], "succeeded");
    assert_eq!(finished(&app, dry, 1).await["state"], "succeeded");

    // The key comes from the API, not from the receipt.
    let r = app.get("/api/v1/receipts/public-key", &app.read).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let published = r.json();
    assert_eq!(published, json!({"algorithm": "ed25519", "public_key": signer.public_key().to_base64()}));
    let key = PublicKey::parse(published["public_key"].as_str().unwrap()).unwrap();

    let first = app.get(&path, &app.read).await;
    let receipt = parsed(&first);
    assert_valid(&receipt, &key);
    let stranger = ReceiptSigner::generate().public_key();
    assert!(!check_receipt(&receipt, Some(&stranger)).is_valid(), "another installation's key must not verify it");
    let h = &receipt.header;
    assert_eq!((h.job, h.outcome.as_str(), h.counts.entries), (id, "succeeded", 3));
    assert_eq!(h.source, format!("pop3 src@127.0.0.1:{}", lab.pop3_port()));
    assert_eq!(receipt.public_key, published["public_key"]);
    assert_eq!(receipt.entries.len(), 3);
    for (i, line) in receipt.entries.iter().enumerate() {
        let e = &line.entry;
        assert_eq!(e.seq, i as u64);
        assert_eq!(e.status, "verified", "{e:?}");
        assert_eq!(e.sha256, e.readback_sha256, "read back byte for byte: {e:?}");
        let dest = e.destination.as_ref().expect("an IMAP destination");
        assert_eq!((dest.account.as_str(), dest.folder.as_str()), ("dst", "INBOX"));
        assert!(dest.uid.is_some(), "Dovecot answers APPENDUID: {e:?}");
    }
    // The OpenAPI schema describes exactly this document: every field, nothing more.
    let doc: ReceiptDoc = serde_json::from_str(&first.text).unwrap_or_else(|e| panic!("the schema disagrees with the receipt: {e}"));
    assert_eq!(serde_json::to_value(&doc).unwrap(), serde_json::from_str::<Value>(&first.text).unwrap());

    // A dry run issues none.
    let p = app.get(&format!("/api/v1/jobs/{dry}/receipt"), &app.read).await.problem(404, "/problems/not-found");
    assert_eq!(p["detail"], format!("job {dry} has no receipt yet: receipts are issued when a run finishes (dry runs have none)"));

    // A rerun (delta pass) gets its own receipt; the first stays available by its run.
    lab.seed("src", &messages(2, "late"));
    let r = app.post(&format!("/api/v1/jobs/{id}/rerun"), &app.write).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(finished(&app, id, 2).await["state"], "succeeded");
    let latest = parsed(&app.get(&path, &app.read).await);
    assert_valid(&latest, &key);
    assert!(latest.header.run > h.run, "the latest is the rerun's: {} after {}", latest.header.run, h.run);
    assert_eq!((latest.entries.len(), latest.header.counts.verified), (5, 5));
    assert_ne!(latest.header.merkle_root, h.merkle_root);

    let again = app.get(&format!("{path}?run={}", h.run), &app.read).await;
    let earlier = parsed(&again);
    assert_valid(&earlier, &key);
    assert_eq!((earlier.header.run, earlier.entries.len()), (h.run, 3));
    assert_eq!(again.text, first.text, "a stored receipt is served byte for byte as first served");

    // Runs that are not this job's.
    let missing = latest.header.run + 1000;
    let p = app.get(&format!("{path}?run={missing}"), &app.read).await.problem(404, "/problems/not-found");
    assert_eq!(p["detail"], format!("job {id} has no receipt for run {missing}: receipts are issued when a run finishes (dry runs have none)"));
    let p = app.get(&format!("/api/v1/jobs/{dry}/receipt?run={}", h.run), &app.read).await.problem(404, "/problems/not-found");
    assert!(p["detail"].as_str().unwrap().starts_with(&format!("job {dry} has no receipt for run {}", h.run)), "{p}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), pool).await.expect("the worker stops").unwrap();
}

/// An entry as the engine would write it for message `i` of a job from `alice`.
fn entry(seq: u64) -> ReceiptEntry {
    let digest = format!("{:064x}", seq + 1);
    ReceiptEntry {
        seq,
        source: SourceRef { host: "pop.example.com".into(), port: 995, account: "alice".into(), uidl: format!("uidl-{seq:06}") },
        size: 1000 + seq,
        sha256: Some(digest.clone()),
        sent_sha256: Some(digest.clone()),
        status: "verified".into(),
        destination: Some(DestinationRef {
            host: "imap.example.com".into(),
            port: 993,
            account: "alice".into(),
            folder: "INBOX".into(),
            uidvalidity: Some(42),
            uid: Some(seq as u32 + 1),
        }),
        archive: None,
        readback_sha256: Some(digest),
        verification: Some("exact".into()),
        verified_at: Some("2026-01-02T03:04:05.000Z".into()),
        copied_at: Some("2026-01-02T03:04:05.000Z".into()),
        source_action: "kept".into(),
        deleted_at: None,
        reason: None,
    }
}

#[tokio::test]
async fn a_receipt_of_many_pages_is_streamed_whole_and_verifies() {
    const N: u64 = 1234; // the reader's pages hold 500 entries: three pages and a bit
    let signer = ReceiptSigner::generate();
    let app = app_with_key(&signer).await;
    let id = app.create_job(&job_body("alice")).await;
    let run = app.store.start_run(id, false).await.unwrap();
    let mut builder = RootBuilder::default();
    let lines: Vec<String> = (0..N).map(|seq| builder.push(&entry(seq)).to_json()).collect();
    for (i, page) in lines.chunks(400).enumerate() {
        app.store.save_receipt_lines(run, i as u64 * 400, page).await.unwrap();
    }
    let header = ReceiptHeader {
        format: RECEIPT_FORMAT.into(),
        job: id,
        run,
        source: "pop3 alice@pop.example.com:995".into(),
        target: "imap alice@imap.example.com:993/INBOX".into(),
        outcome: "succeeded".into(),
        started_at: "2026-01-02T03:00:00.000Z".into(),
        finished_at: Some("2026-01-02T03:05:00.000Z".into()),
        signed_at: "2026-01-02T03:05:00.000Z".into(),
        counts: builder.counts.clone(),
        merkle_root: builder.root_hex(),
        archive_chain_head: None,
    };
    let stored = StoredReceipt {
        run,
        job: id,
        entries_run: run,
        header: String::from_utf8(header.canonical()).unwrap(),
        signature: signer.sign(&header),
        public_key: signer.public_key().to_base64(),
    };
    app.store.save_receipt(&stored).await.unwrap();
    app.store.finish_run(run, "succeeded", None, "{}").await.unwrap();

    let key = PublicKey::parse(app.get("/api/v1/receipts/public-key", &app.read).await.json()["public_key"].as_str().unwrap()).unwrap();
    let r = app.get(&format!("/api/v1/jobs/{id}/receipt"), &app.read).await;
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "sent as it is read");
    let receipt = parsed(&r);
    assert_valid(&receipt, &key);
    assert_eq!(receipt.header, header);
    assert_eq!(receipt.entries.len() as u64, N);
    assert!(receipt.entries.iter().enumerate().all(|(i, l)| l.entry.seq == i as u64 && l.entry == entry(i as u64)), "every entry, in order");
    assert_eq!(parsed(&app.get(&format!("/api/v1/jobs/{id}/receipt?run={run}"), &app.read).await), receipt);

    // The check these tests rely on notices one changed byte, and names the message.
    let forged = r.text.replacen("\"uidl\":\"uidl-000777\"", "\"uidl\":\"uidl-000778\"", 1);
    assert_ne!(forged, r.text);
    let verdict = check_receipt(&Receipt::parse(forged.as_bytes()).unwrap(), Some(&key));
    assert!(!verdict.is_valid());
    assert!(verdict.findings.iter().any(|f| f.to_string().contains("entry 777")), "{:?}", verdict.findings);
}

#[tokio::test]
async fn bad_runs_missing_jobs_and_missing_keys_are_problems() {
    // Receipts off: no key configured.
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("bob")).await;
    let path = format!("/api/v1/jobs/{id}/receipt");
    for bad in ["0", "-2", "abc", "1.5", "", "1e3"] {
        let p = app.get(&format!("{path}?run={bad}"), &app.read).await.problem(400, "/problems/bad-request");
        assert!(p["detail"].as_str().unwrap().starts_with("run must be a positive integer"), "{bad:?}: {p}");
    }
    // The query is checked first, then the job.
    app.get("/api/v1/jobs/999/receipt?run=x", &app.read).await.problem(400, "/problems/bad-request");
    let p = app.get("/api/v1/jobs/999/receipt", &app.read).await.problem(404, "/problems/not-found");
    assert_eq!(p["detail"], "there is no job 999");
    let p = app.get(&format!("{path}?run=1"), &app.read).await.problem(404, "/problems/not-found");
    assert_eq!(p["detail"], format!("job {id} has no receipt for run 1: this server issues no receipts (it has no receipt signing key)"));

    let p = app.get("/api/v1/receipts/public-key", &app.read).await.problem(404, "/problems/not-found");
    assert!(p["detail"].as_str().unwrap().contains("issues no receipts"), "{p}");

    // The same token rules as the job itself: a bearer token is needed, any scope reads.
    for route in [path.as_str(), "/api/v1/receipts/public-key"] {
        app.send(app.req(reqwest::Method::GET, route, None)).await.problem(401, "/problems/unauthorized");
        app.get(route, "mf_not-a-token").await.problem(401, "/problems/unauthorized");
        app.send(app.req(reqwest::Method::POST, route, Some(&app.admin))).await.problem(405, "/problems/method-not-allowed");
    }
    let signer = ReceiptSigner::generate();
    let keyed = app_with_key(&signer).await;
    for token in [&keyed.read, &keyed.write, &keyed.admin] {
        let r = keyed.get("/api/v1/receipts/public-key", token).await;
        assert_eq!((r.status, r.json()["public_key"].as_str()), (200, Some(signer.public_key().to_base64().as_str())));
    }
}
