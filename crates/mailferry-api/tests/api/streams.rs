//! Long responses: event streams (SSE) are capped per token and in total, and a stream's
//! place is freed when its client goes away; job reports are streamed page by page with
//! the bytes a whole-body report had.

use std::time::{Duration, Instant};

use mailferry_api::ApiConfig;
use reqwest::Method;

use crate::{job_body, TestApp};

async fn open_stream(app: &TestApp, id: i64, token: &str) -> reqwest::Response {
    app.req(Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(token)).send().await.unwrap()
}

/// Open a stream, retrying while the server has not yet seen a closed one go away.
async fn open_when_freed(app: &TestApp, id: i64, token: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = open_stream(app, id, token).await;
        if resp.status() == 200 || Instant::now() > deadline {
            return resp;
        }
        drop(resp);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sse_streams_are_capped_per_token_and_a_closed_stream_frees_its_place() {
    let app = TestApp::spawn_with(ApiConfig { sse_poll_ms: 50, sse_keep_alive_secs: 1, ..ApiConfig::default() }).await;
    let id = app.create_job(&job_body("hal")).await;
    // The default cap is 8 streams per token.
    let mut open = Vec::new();
    for i in 0..8 {
        let resp = open_stream(&app, id, &app.read).await;
        assert_eq!(resp.status(), 200, "stream {i}");
        open.push(resp);
    }
    let ninth = app.send(app.req(Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&app.read)));
    let r = tokio::time::timeout(Duration::from_secs(10), ninth).await.expect("the 9th stream is refused, not opened");
    let p = r.problem(429, "/problems/limit-reached");
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(p["detail"].as_str().unwrap().contains("event streams"), "{p}");
    // Another token has its own allowance.
    let other = open_stream(&app, id, &app.write).await;
    assert_eq!(other.status(), 200);

    // A client that goes away gives its place back.
    drop(open.pop());
    let again = open_when_freed(&app, id, &app.read).await;
    assert_eq!(again.status(), 200, "the place of a closed stream is reused");
    open.push(again);
    let path = format!("/api/v1/jobs/{id}/events");
    let tenth = app.get(&path, &app.read);
    tokio::time::timeout(Duration::from_secs(10), tenth).await.expect("refused").problem(429, "/problems/limit-reached");
}

/// The `items` of a page, as the exact bytes the API sent, and its `next_cursor`.
fn page_items(text: &str) -> (String, Option<String>) {
    let inner = text.strip_prefix("{\"items\":[").expect(text);
    let (items, tail) = inner.rsplit_once("],\"next_cursor\":").expect(text);
    let cursor: Option<String> = serde_json::from_str(tail.strip_suffix('}').expect(text)).unwrap();
    (items.to_owned(), cursor)
}

#[tokio::test]
async fn reports_are_streamed_page_by_page_with_the_bytes_of_a_whole_report() {
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("ida")).await;
    // Several pages of the ledger (the store returns at most 500 rows a query), ending
    // mid-page: the report used to stop after the first 500 rows.
    let run = app.store.start_run(id, false).await.unwrap();
    let listed: Vec<(String, u64)> = (0..2345).map(|i| (format!("uidl-{i:05}"), 100 + i)).collect();
    app.store.record_listed(id, run, &listed).await.unwrap();
    app.store.mark_skipped(id, run, "uidl-01000", "larger than max_message_bytes").await.unwrap();

    // What a report built whole used to be: the job, its counts, then every ledger row,
    // serialized compactly in ledger order.
    let job = app.get(&format!("/api/v1/jobs/{id}"), &app.read).await.text;
    let counts = &job[job.rfind(",\"counts\":").unwrap() + ",\"counts\":".len()..job.len() - 1];
    let mut items = Vec::new();
    let mut path = format!("/api/v1/jobs/{id}/messages?limit=500");
    loop {
        let (page, cursor) = page_items(&app.get(&path, &app.read).await.text);
        items.push(page);
        match cursor {
            Some(c) => path = format!("/api/v1/jobs/{id}/messages?limit=500&cursor={c}"),
            None => break,
        }
    }
    let listed_rows: Vec<serde_json::Value> = serde_json::from_str(&format!("[{}]", items.join(","))).unwrap();
    assert_eq!(listed_rows.len(), 2345, "pages of 500 lead to the next one");
    let expected = format!("{{\"job\":{job},\"counts\":{counts},\"messages\":[{}]}}", items.join(","));

    let r = app.get(&format!("/api/v1/jobs/{id}/report"), &app.read).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-length"), None, "streamed, not built whole");
    assert_eq!(r.text.len(), expected.len());
    assert!(r.text == expected, "the streamed report has the bytes of the whole one");
    assert_eq!(r.json()["messages"].as_array().unwrap().len(), 2345);

    let r = app.get(&format!("/api/v1/jobs/{id}/report?format=csv"), &app.read).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(r.header("content-disposition"), Some(format!("attachment; filename=\"job-{id}-report.csv\"").as_str()));
    assert_eq!(r.header("content-length"), None, "streamed, not built whole");
    let lines: Vec<&str> = r.text.split_terminator('\n').collect();
    assert_eq!(lines.len(), 2346);
    assert_eq!(lines[0], "uidl,size,state,reason,digest,dest_uid,internal_date,internal_date_source,first_seen_at,copied_at,deleted_at");
    assert!(lines[1].starts_with("uidl-00000,100,listed,,,,,,"), "{}", lines[1]);
    assert!(lines[1001].starts_with("uidl-01000,1100,skipped,larger than max_message_bytes,"), "{}", lines[1001]);
    assert!(lines[2345].starts_with("uidl-02344,2444,listed,"), "{}", lines[2345]);
    assert!(r.text.ends_with('\n'));

    // A job without a ledger: an empty list, a header line.
    let empty = app.create_job(&job_body("jo")).await;
    let r = app.get(&format!("/api/v1/jobs/{empty}/report"), &app.read).await;
    assert!(r.text.ends_with(",\"messages\":[]}"), "{}", r.text);
    assert_eq!(r.json()["job"]["id"], empty);
    let r = app.get(&format!("/api/v1/jobs/{empty}/report?format=csv"), &app.read).await;
    assert_eq!(r.text, "uidl,size,state,reason,digest,dest_uid,internal_date,internal_date_source,first_seen_at,copied_at,deleted_at\n");
    app.get("/api/v1/jobs/999/report?format=csv", &app.read).await.problem(404, "/problems/not-found");
    app.get(&format!("/api/v1/jobs/{id}/report?format=xml"), &app.read).await.problem(422, "/problems/validation");
}

#[tokio::test]
async fn sse_streams_are_capped_in_total_whatever_the_token() {
    let config = ApiConfig { sse_poll_ms: 50, sse_keep_alive_secs: 1, sse_max_per_token: 2, sse_max_total: 3, ..ApiConfig::default() };
    let app = TestApp::spawn_with(config).await;
    let id = app.create_job(&job_body("kai")).await;
    let a1 = open_stream(&app, id, &app.read).await;
    let a2 = open_stream(&app, id, &app.read).await;
    assert_eq!((a1.status().as_u16(), a2.status().as_u16()), (200, 200));
    let path = format!("/api/v1/jobs/{id}/events");
    let third = tokio::time::timeout(Duration::from_secs(10), app.get(&path, &app.read)).await.expect("refused");
    assert!(third.problem(429, "/problems/limit-reached")["detail"].as_str().unwrap().contains("api.sse_max_per_token"));
    let b1 = open_stream(&app, id, &app.write).await;
    assert_eq!(b1.status(), 200);
    let fourth = tokio::time::timeout(Duration::from_secs(10), app.get(&path, &app.admin)).await.expect("refused");
    let p = fourth.problem(429, "/problems/limit-reached");
    assert!(p["detail"].as_str().unwrap().contains("api.sse_max_total"), "{p}");
    assert!(fourth.header("retry-after").is_some());
    // The refusal costs no stream and does not count as a failed authentication.
    drop(b1);
    let admin = open_when_freed(&app, id, &app.admin).await;
    assert_eq!(admin.status(), 200);
    drop((a1, a2, admin));
}

#[tokio::test]
async fn a_stream_of_a_job_with_a_long_history_sends_every_state_change_in_order() {
    // More state changes than the poller keeps in memory (256): the older ones are read
    // from the store by the stream that needs them.
    let app = TestApp::spawn().await;
    let id = app.create_job(&job_body("lou")).await;
    for _ in 0..150 {
        app.store.control(id, mailferry_store::ControlAction::Pause).await.unwrap();
        app.store.control(id, mailferry_store::ControlAction::Resume).await.unwrap();
    }
    app.store.control(id, mailferry_store::ControlAction::Pause).await.unwrap();
    // Two clients at once, one of them resuming after the 250th change.
    let all = open_stream(&app, id, &app.read).await;
    let resumed = app
        .req(Method::GET, &format!("/api/v1/jobs/{id}/events"), Some(&app.read))
        .header("last-event-id", "250")
        .send()
        .await
        .unwrap();
    let all = tokio::time::timeout(Duration::from_secs(20), all.text()).await.expect("the stream ends").unwrap();
    let resumed = tokio::time::timeout(Duration::from_secs(20), resumed.text()).await.expect("the stream ends").unwrap();
    let states = |text: &str| -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for block in text.split("\n\n").filter(|b| b.contains("event: state")) {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).unwrap_or_else(|| panic!("{name} in {block}"));
            let data: serde_json::Value = serde_json::from_str(field("data: ")).unwrap();
            out.push((field("id: ").parse::<i64>().unwrap(), data["state"].as_str().unwrap().to_owned()));
        }
        out
    };
    let all = states(&all);
    assert_eq!(all.len(), 302, "queued, then 150 × (paused, queued), then paused");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in order, no repeats");
    assert_eq!(all[0].1, "queued");
    assert!(all[1..].chunks(2).all(|c| c[0].1 == "paused" && c.get(1).is_none_or(|q| q.1 == "queued")), "{all:?}");
    let resumed = states(&resumed);
    assert_eq!(resumed, all.iter().filter(|(e, _)| *e > 250).cloned().collect::<Vec<_>>());
}
