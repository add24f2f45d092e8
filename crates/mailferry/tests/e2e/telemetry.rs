//! OTLP trace export end to end: a real OTLP receiver inside the test (a tonic gRPC
//! `TraceService`, or an axum endpoint taking `http/protobuf`), the real `mailferry serve`
//! (and `mailferry worker`) pointed at it with the standard OTEL_* variables, a job created
//! over HTTP with a W3C `traceparent`, run against the Dovecot lab.
//!
//! Checked: the request, job, run and per-message spans arrive; they continue the caller's
//! trace with the right parents (message → run → job → request → the caller's span), also
//! when the job runs in another process; and no span, event or resource attribute holds a
//! password, a mail user name, the API token, or any text of the messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use crate::common::server::*;
use crate::common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use serde_json::json;

/// The caller's span: trace id and span id the job's trace must continue.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

const SRC_USER: &str = "alicetelemetry";
const DST_USER: &str = "bobtelemetry";
const BODY_MARK: &str = "Quarterly-Body-Text-7f3a";
const SUBJECT_MARK: &str = "Subject-Text-c91e";

/// One exported span with what the assertions need, flattened from the protobuf.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: HashMap<String, String>,
    /// Every string the span carries anywhere: names, attribute keys and values, its
    /// events' names and attributes, its resource's attributes.
    all_text: Vec<String>,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Got>>>);

impl Received {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut got = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let resource: Vec<KeyValue> = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = resource.iter().find(|kv| kv.key == "service.name").map(|kv| text(&kv.value)).unwrap_or_default();
            let mut resource_text = Vec::new();
            flatten(&resource, &mut resource_text);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let mut all_text = resource_text.clone();
                    all_text.push(s.name.clone());
                    flatten(&s.attributes, &mut all_text);
                    for e in &s.events {
                        all_text.push(e.name.clone());
                        flatten(&e.attributes, &mut all_text);
                    }
                    for l in &s.links {
                        flatten(&l.attributes, &mut all_text);
                    }
                    if let Some(st) = &s.status {
                        all_text.push(st.message.clone());
                    }
                    got.push(Got {
                        service: service.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        attrs: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                        all_text,
                    });
                }
            }
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(any_value::Value::ArrayValue(a)) => a.values.iter().map(|v| text(&Some(v.clone()))).collect::<Vec<_>>().join(","),
        Some(any_value::Value::KvlistValue(l)) => {
            let mut out = Vec::new();
            flatten(&l.values, &mut out);
            out.join(",")
        }
        _ => String::new(),
    }
}

fn flatten(kvs: &[KeyValue], out: &mut Vec<String>) {
    for kv in kvs {
        out.push(kv.key.clone());
        out.push(text(&kv.value));
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// An OTLP/gRPC receiver on 127.0.0.1; returns its endpoint URL.
async fn grpc_receiver(received: Received) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(TraceServiceServer::new(received)).serve_with_incoming(incoming));
    format!("http://{addr}")
}

/// An OTLP/HTTP (protobuf) receiver on 127.0.0.1; returns its base endpoint URL (the
/// exporter appends `/v1/traces`, OTLP §"OTLP/HTTP").
async fn http_receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let received = received.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(req) => {
                        received.take(req);
                        let ok = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], ok)
                    }
                    Err(_) => (axum::http::StatusCode::BAD_REQUEST, [("content-type", "text/plain")], b"bad protobuf".to_vec()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn messages() -> Vec<Vec<u8>> {
    (0..3)
        .map(|i| {
            format!(
                "From: {SRC_USER}@lab.example\r\nTo: {DST_USER}@lab.example\r\nSubject: {SUBJECT_MARK} {i}\r\n\
                 Message-ID: <otel{i}@lab>\r\n\r\n{BODY_MARK} number {i}\r\n"
            )
            .into_bytes()
        })
        .collect()
}

/// Wait (bounded) until the receiver holds everything the job should have produced.
async fn wait_for_spans(received: &Received, messages: usize, secs: u64) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let spans = received.spans();
        let in_trace: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
        let count = |name: &str| in_trace.iter().filter(|s| s.name == name).count();
        if count("message") >= messages && count("run") >= 1 && count("job") >= 1 && count("POST /api/v1/jobs") >= 1 {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans still missing after {secs}s; got {:?}",
            spans.iter().map(|s| (&s.name, &s.trace_id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn one<'a>(spans: &'a [Got], name: &str) -> &'a Got {
    let found: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID && s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name:?} span in the trace: {found:?}");
    found[0]
}

/// The scenario; `separate_worker` runs the job in a `mailferry worker` process while
/// `serve --no-workers` takes the request, so the trace context must cross through the
/// job row.
async fn job_spans_continue_the_callers_trace(protocol: &str, separate_worker: bool) {
    let lab = Lab::start();
    lab.dovecot.add_user(SRC_USER, SRC_PW);
    lab.dovecot.add_user(DST_USER, DST_PW);
    let msgs = messages();
    lab.dovecot.seed(SRC_USER, &msgs);

    let received = Received::default();
    let endpoint = match protocol {
        "grpc" => grpc_receiver(received.clone()).await,
        _ => http_receiver(received.clone()).await,
    };
    let otel_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_SERVICE_NAME", "mailferry-telemetry-test"),
    ];
    let serve_args: &[&str] = if separate_worker { &["--no-workers"] } else { &[] };
    let mut server = Server::start(&lab.dovecot, None, &otel_env, serve_args);
    if separate_worker {
        server.spawn_worker(&[("OTEL_SERVICE_NAME", "mailferry-telemetry-worker")]);
    }
    let api = server.client();

    let mut body = job_body(&lab.dovecot, SRC_USER, DST_USER, "keep");
    body["labels"] = json!({});
    let r = api
        .http
        .post(format!("{}/api/v1/jobs", api.base))
        .bearer_auth(&api.token)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let job: serde_json::Value = r.json().await.unwrap();
    let id = job["id"].as_i64().unwrap();
    let job = api.wait_state(id, &["succeeded"], 60).await;
    assert_eq!(job["counts"]["copied"], 3, "{job}");

    let spans = wait_for_spans(&received, msgs.len(), 30).await;

    // The request continues the caller's span.
    let request = one(&spans, "POST /api/v1/jobs");
    assert_eq!(request.parent, CALLER_SPAN, "the request span's parent is the caller's span");
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.attrs.get("http.route").map(String::as_str), Some("/api/v1/jobs"));
    assert_eq!(request.attrs.get("http.request.method").map(String::as_str), Some("POST"));
    assert_eq!(request.attrs.get("http.response.status_code").map(String::as_str), Some("201"));
    assert!(request.attrs.contains_key("latency_ms"), "{request:?}");
    assert_eq!(request.service, "mailferry-telemetry-test");

    // job → request (stored in the job row, read back by whichever worker ran it).
    let job_span = one(&spans, "job");
    assert_eq!(job_span.parent, request.span_id, "the job span's parent is the creating request");
    assert_eq!(job_span.attrs.get("job.id"), Some(&id.to_string()));
    assert_eq!(job_span.attrs.get("target.kind").map(String::as_str), Some("imap"));
    assert_eq!(job_span.attrs.get("job.state").map(String::as_str), Some("succeeded"));
    let worker_service = if separate_worker { "mailferry-telemetry-worker" } else { "mailferry-telemetry-test" };
    assert_eq!(job_span.service, worker_service, "the job ran where expected");

    // run → job.
    let run = one(&spans, "run");
    assert_eq!(run.parent, job_span.span_id, "the run span's parent is the job span");
    assert_eq!(run.attrs.get("job.id"), Some(&id.to_string()));
    assert!(run.attrs.contains_key("run.id"), "{run:?}");
    assert_eq!(run.attrs.get("outcome").map(String::as_str), Some("succeeded"));
    assert_eq!(run.attrs.get("messages.copied").map(String::as_str), Some("3"));
    assert_eq!(run.attrs.get("target.kind").map(String::as_str), Some("imap"));

    // message → run, one per message, each with its UIDL, sizes and outcome.
    let messages: Vec<&Got> = spans.iter().filter(|s| s.trace_id == TRACE_ID && s.name == "message").collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    let mut uidls = Vec::new();
    for m in &messages {
        assert_eq!(m.parent, run.span_id, "a message span's parent is the run span");
        assert_eq!(m.attrs.get("outcome").map(String::as_str), Some("copied"), "{m:?}");
        let size: u64 = m.attrs.get("message.size").and_then(|s| s.parse().ok()).expect("message.size");
        assert!(size > 50, "{m:?}");
        assert!(m.attrs.contains_key("message.wire_size"), "{m:?}");
        uidls.push(m.attrs.get("uidl").cloned().expect("uidl"));
    }
    uidls.sort();
    uidls.dedup();
    assert_eq!(uidls.len(), 3, "one span per UIDL");

    // Nothing secret, personal or from the messages, anywhere, in any span received.
    assert!(spans.len() >= 6);
    assert_nothing_forbidden(&spans, &[SRC_PW, DST_PW, server.token.as_str(), SRC_USER, DST_USER, BODY_MARK, SUBJECT_MARK]);

    // Graceful shutdown still works with an exporter (it flushes, bounded).
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "serve exited with {status}");
}

fn assert_nothing_forbidden(spans: &[Got], forbidden: &[&str]) {
    for s in spans {
        for t in &s.all_text {
            for f in forbidden {
                assert!(!t.contains(f), "span {:?} carries a forbidden string in {t:?}", s.name);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_of_request_job_run_and_message_spans() {
    job_spans_continue_the_callers_trace("grpc", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_with_the_job_in_a_worker_process() {
    job_spans_continue_the_callers_trace("http/protobuf", true).await;
}


/// A job that fails (the destination refuses the login): its job and run spans are marked
/// as errors, with a reason, and still carry no user name or password, although the
/// engine's own error text names the endpoint as `user@host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_an_error_span_without_user_names() {
    const WRONG_PW: &str = "not-the-Dst-pw-5e2b";
    let lab = Lab::start();
    lab.dovecot.add_user(SRC_USER, SRC_PW);
    lab.dovecot.add_user(DST_USER, DST_PW);
    lab.dovecot.seed(SRC_USER, &messages());
    let received = Received::default();
    let endpoint = grpc_receiver(received.clone()).await;
    let otel_env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let server = Server::start(&lab.dovecot, None, &otel_env, &[]);
    let api = server.client();
    let mut body = job_body(&lab.dovecot, SRC_USER, DST_USER, "keep");
    body["target"]["password"] = json!(WRONG_PW);
    let r = api
        .http
        .post(format!("{}/api/v1/jobs", api.base))
        .bearer_auth(&api.token)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_i64().unwrap();
    let job = api.wait_state(id, &["failed"], 60).await;
    assert!(job["last_error"].as_str().unwrap_or("").contains(DST_USER), "the job row says which account: {job}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = received.spans();
        let done = |name: &str| spans.iter().any(|s| s.trace_id == TRACE_ID && s.name == name);
        if done("job") && done("run") {
            break spans;
        }
        assert!(Instant::now() < deadline, "job and run spans missing: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job_span = one(&spans, "job");
    assert_eq!(job_span.attrs.get("job.state").map(String::as_str), Some("failed"));
    let run = one(&spans, "run");
    assert_eq!(run.parent, job_span.span_id);
    assert_eq!(run.attrs.get("outcome").map(String::as_str), Some("failed"));
    let status = run.all_text.iter().any(|t| t.starts_with("destination: "));
    assert!(status, "the run's status says which side failed: {run:?}");
    assert_nothing_forbidden(&spans, &[SRC_PW, DST_PW, WRONG_PW, server.token.as_str(), SRC_USER, DST_USER, BODY_MARK, SUBJECT_MARK]);
}
