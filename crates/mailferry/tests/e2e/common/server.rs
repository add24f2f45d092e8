//! A real `mailferry serve` (and `mailferry worker` processes) for API tests: fresh data
//! dir, fresh database (SQLite file or a new PostgreSQL database), an admin token, and the
//! lab's CA trusted by the workers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailferry_tests::Dovecot;

use super::{DST_PW, SRC_PW};
use serde_json::{json, Value};

/// A PostgreSQL database made for one test and dropped after it.
pub struct FreshPg {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl FreshPg {
    pub fn create() -> Self {
        let admin_url = std::env::var("MAILFERRY_TEST_DATABASE_URL")
            .expect("MAILFERRY_TEST_DATABASE_URL must point at a PostgreSQL server (./scripts/test sets it)");
        let name = format!("mf_api_{}_{}", std::process::id(), rand_suffix());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url.rsplit_once('/').expect("database URL with a database name");
        let url = format!("{base}/{name}");
        Self { admin_url, name, url }
    }
}

impl Drop for FreshPg {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args(["-qc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % 1_000_000_000
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").arg(url).args(["-tAqc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    pub data: tempfile::TempDir,
    env: Vec<(String, String)>,
    workers: Vec<Child>,
    serve_args: Vec<String>,
}

fn spawn_serve(data: &std::path::Path, env: &[(String, String)], serve_args: &[&str]) -> (Child, String) {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data.join("serve.log")).unwrap();
    let mut child = Command::new(bin())
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(serve_args)
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.trim().rsplit(' ').next().expect("listening line").to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "unexpected first line {line:?}; log: {}",
        std::fs::read_to_string(data.join("serve.log")).unwrap_or_default()
    );
    (child, base)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailferry")
}

/// The lab (Dovecot, the OAuth2 token server) listens on 127.0.0.1, which jobs created over
/// the API may not reach by default (DESIGN.md §2.9): the test servers allow it explicitly,
/// as an operator allows a mail host on the LAN. A test of the default passes
/// `(LAB_NETWORK_ALLOW.0, "")` in `extra_env`, which replaces it with an empty list.
pub const LAB_NETWORK_ALLOW: (&str, &str) = ("MAILFERRY_NETWORK__ALLOW", "127.0.0.1");

impl Server {
    /// `mailferry serve` on 127.0.0.1:0. `database_url` None = the embedded SQLite default.
    /// The lab's loopback address is allowed ([`LAB_NETWORK_ALLOW`]).
    pub fn start(lab: &Dovecot, database_url: Option<&str>, extra_env: &[(&str, &str)], serve_args: &[&str]) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("MAILFERRY_DATA_DIR".into(), data.path().display().to_string()),
            ("MAILFERRY_SECURITY__CA_FILE".into(), lab.ca_file().display().to_string()),
            ("MAILFERRY_LOG__FILTER".into(), "info,mailferry_engine=debug".into()),
            (LAB_NETWORK_ALLOW.0.into(), LAB_NETWORK_ALLOW.1.into()),
        ];
        if let Some(url) = database_url {
            env.push(("DATABASE_URL".into(), url.into()));
        }
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));

        let out = Command::new(bin()).args(["token", "create", "--scope", "admin"]).envs(env.clone()).output().unwrap();
        assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let token = stdout.split_whitespace().last().expect("token printed last").to_owned();

        let (child, base) = spawn_serve(data.path(), &env, serve_args);
        Self { child, base, token, data, env, workers: Vec::new(), serve_args: serve_args.iter().map(|a| a.to_string()).collect() }
    }

    /// SIGTERM the server and wait for it to exit (graceful shutdown).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start `mailferry serve` again on the same data and database.
    pub fn restart(&mut self) {
        let args: Vec<&str> = self.serve_args.iter().map(String::as_str).collect();
        let (child, base) = spawn_serve(self.data.path(), &self.env, &args);
        self.child = child;
        self.base = base;
    }

    /// Start a `mailferry worker` process sharing this server's database; returns its index.
    pub fn spawn_worker(&mut self, extra_env: &[(&str, &str)]) -> usize {
        let n = self.workers.len();
        let log = std::fs::File::create(self.data.path().join(format!("worker{n}.log"))).unwrap();
        let child = Command::new(bin())
            .arg("worker")
            .envs(self.env.clone())
            .envs(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.workers.push(child);
        n
    }

    pub fn worker_pid(&self, n: usize) -> u32 {
        self.workers[n].id()
    }

    /// SIGTERM worker `n` and wait for it to exit (graceful shutdown).
    pub fn terminate_worker(&mut self, n: usize, within: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.workers[n].id().to_string()]).status();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.workers[n].try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker {n} did not stop within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill_worker(&mut self, n: usize) {
        let _ = self.workers[n].kill(); // SIGKILL
        let _ = self.workers[n].wait();
    }

    pub fn worker_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.data.path().join(format!("worker{n}.log"))).unwrap_or_default()
    }

    /// Everything the server and its workers logged.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.data.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    pub fn client(&self) -> Api {
        Api { http: reqwest::Client::new(), base: self.base.clone(), token: self.token.clone() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value, String) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token).json(body).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    pub async fn get(&self, path: &str) -> (u16, Value, String) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    pub async fn job(&self, id: i64) -> Value {
        let (status, job, text) = self.get(&format!("/api/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{text}");
        job
    }

    /// Poll until the job is in one of `states` (or panic after `secs`).
    pub async fn wait_state(&self, id: i64, states: &[&str], secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if states.contains(&job["state"].as_str().unwrap_or("")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} still {} after {secs}s: {job}", job["state"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll an archive verify or export run (`path`) until it is no longer running.
    pub async fn wait_run(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, run, text) = self.get(path).await;
            assert_eq!(status, 200, "{text}");
            if run["state"] != "running" {
                return run;
            }
            assert!(Instant::now() < deadline, "{path} still running: {run}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Read the job's SSE stream to its end: (event, data) pairs.
    pub async fn events(&self, id: i64, secs: u64) -> Vec<(String, Value)> {
        use futures::StreamExt;
        let r = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/events", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let mut stream = r.bytes_stream();
        let mut buf = String::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = "message".to_owned();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim());
                    }
                }
                if !data.is_empty() {
                    events.push((event, serde_json::from_str(&data).unwrap_or(Value::String(data))));
                }
            }
        }
        events
    }
}

/// A job body for the lab: pop3s source, imaps target.
pub fn job_body(lab: &Dovecot, src: &str, dst: &str, delete: &str) -> Value {
    json!({
        "source": {"protocol": "pop3", "host": "127.0.0.1", "port": lab.pop3s_port(), "security": "tls",
                   "username": src, "password": SRC_PW},
        "target": {"protocol": "imap", "host": "127.0.0.1", "port": lab.imaps_port(), "security": "tls",
                   "username": dst, "password": DST_PW, "folder": "INBOX"},
        "options": {"delete": delete},
        "labels": {"wave": "1"}
    })
}
