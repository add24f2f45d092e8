//! App tests: the real router served by `axum::serve` on 127.0.0.1:0, a fresh store per
//! test, driven over HTTP (STYLE.md, tests 3). SQLite by default; with
//! `MAILFERRY_API_TEST_BACKEND=postgres` every test runs on a fresh PostgreSQL database at
//! `MAILFERRY_TEST_DATABASE_URL` instead (./scripts/test runs the suite both ways).

mod archive_runs;
mod audit;
mod auth;
mod batches;
mod jobs;
mod limits;
mod metrics;
mod misc;
mod network;
mod receipts;
mod schedules;
mod streams;
mod web;

use std::sync::Arc;

use mailferry_api::{app, new_token, ApiConfig, AppState};
use mailferry_model::{Scope, Sealer};
use mailferry_store::{PgStore, SqliteStore, Store};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

pub const SRC_PASSWORD: &str = "src-Secret-7f3a9";
pub const DST_PASSWORD: &str = "dst-Secret-91bc2";

pub struct TestApp {
    pub base: String,
    pub store: Arc<dyn Store>,
    _pg: Option<PgDatabase>,
    pub http: reqwest::Client,
    pub admin: String,
    pub write: String,
    pub read: String,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The app's archives (under `<dir>/archive`), the instances the handlers use.
    pub archives: Arc<mailferry_archive::Archives>,
    /// The app's sealer, for an in-process worker that runs the jobs created over HTTP.
    pub sealer: Sealer,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("base", &self.base).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An RFC 9457 problem with this status and type; returns the body.
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{}", self.text);
        let body = self.json();
        assert_eq!(body["type"], kind, "{body}");
        assert_eq!(body["status"], status, "{body}");
        assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
        body
    }

    /// No secret of the test jobs appears anywhere in the response.
    #[track_caller]
    pub fn no_secrets(&self) -> &Self {
        for s in [SRC_PASSWORD, DST_PASSWORD, "v1:"] {
            assert!(!self.text.contains(s), "{s} leaked into a response: {}", self.text);
        }
        self
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(ApiConfig { sse_poll_ms: 50, ..ApiConfig::default() }).await
    }

    pub async fn spawn_with(config: ApiConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (store, pg): (Arc<dyn Store>, Option<PgDatabase>) =
            match std::env::var("MAILFERRY_API_TEST_BACKEND").as_deref() {
                Ok("postgres") => {
                    let db = PgDatabase::create();
                    (Arc::new(PgStore::connect(&db.url).await.unwrap()), Some(db))
                }
                _ => (Arc::new(SqliteStore::open(&dir.path().join("state.db")).await.unwrap()), None),
            };
        let mut tokens = Vec::new();
        for (name, scope) in [("admin", Scope::Admin), ("write", Scope::Write), ("read", Scope::Read)] {
            let (token, hash) = new_token();
            store.create_token(name, scope, &hash).await.unwrap();
            tokens.push(token);
        }
        let sealer = Sealer::from_hex(&Sealer::generate_hex()).unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let archives = Arc::new(mailferry_archive::Archives::new(dir.path().join("archive"), Default::default()));
        let state = AppState::new(Arc::clone(&store), sealer.clone(), config, Arc::clone(&archives)).with_shutdown(shutdown.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // With connection info, as `mailferry serve` does: the audit log and the
        // authentication limit know the client's address.
        let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
        let read = tokens.pop().unwrap();
        let write = tokens.pop().unwrap();
        let admin = tokens.pop().unwrap();
        Self {
            base: format!("http://{addr}"),
            store,
            _pg: pg,
            http: reqwest::Client::new(),
            admin,
            write,
            read,
            shutdown,
            archives,
            sealer,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        Resp { status, headers, text: r.text().await.unwrap() }
    }

    pub fn req(&self, method: reqwest::Method, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(self.req(reqwest::Method::GET, path, Some(token))).await
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.send(self.req(reqwest::Method::POST, path, Some(token)).json(body)).await
    }

    pub async fn post(&self, path: &str, token: &str) -> Resp {
        self.send(self.req(reqwest::Method::POST, path, Some(token))).await
    }

    /// Create a job through the API; its id.
    pub async fn create_job(&self, body: &Value) -> i64 {
        let r = self.post_json("/api/v1/jobs", &self.write, body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()["id"].as_i64().unwrap()
    }
}

/// A valid job body for `user`.
pub fn job_body(user: &str) -> Value {
    json!({
        "source": {"protocol": "pop3", "host": "pop.example.com", "port": 995, "security": "tls",
                   "username": user, "password": SRC_PASSWORD, "auth": "user"},
        "target": {"protocol": "imap", "host": "imap.example.com", "security": "tls",
                   "username": user, "password": DST_PASSWORD, "folder": "INBOX", "flags": ["\\Seen"]},
        "options": {"delete": "keep", "max_message_bytes": null, "dry_run": false},
        "labels": {"wave": "1"}
    })
}

/// A PostgreSQL database made for one test and dropped after it (even when the test fails).
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    fn create() -> Self {
        let admin_url = std::env::var("MAILFERRY_TEST_DATABASE_URL")
            .expect("MAILFERRY_API_TEST_BACKEND=postgres needs MAILFERRY_TEST_DATABASE_URL");
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "mf_api_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        let out = std::process::Command::new("psql")
            .arg(&admin_url)
            .args(["-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .expect("psql");
        assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
        let (base, _) = admin_url.rsplit_once('/').expect("URL with a database");
        let url = format!("{base}/{name}");
        Self { admin_url, name, url }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(&self.admin_url)
            .args(["-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}
