//! OAuth2 destinations end to end: the lab's Dovecot validates JWT access tokens locally
//! (oauth2 passdb), a token endpoint in this test mints them from a refresh token, and real
//! jobs run through `mailferry serve` (and `mailferry migrate`) with XOAUTH2.
//!
//! What is proved: a job refreshes its token by itself, both before expiry (across a forced
//! reconnect) and when the server refuses a token it believed valid; every message arrives
//! exactly once; a revoked refresh token fails the job at once with a clear error; a static
//! access token works; a refresh token the server rotates is saved to the job, so a rerun
//! continues with the new one (on SQLite and PostgreSQL); and no secret (refresh token, client secret, any access token) shows
//! in an API response or a log line.

use std::time::Duration;

use crate::common::server::*;
use crate::common::*;
use mailferry_tests::dovecot::oauth2::{TokenServer, TokenServerConfig};
use mailferry_tests::fake::{FakeConfig, FakePop3, FakeScript};
use serde_json::{json, Value};

const REFRESH_TOKEN: &str = "rt-Secr3t-refresh-0123456789";
const CLIENT_SECRET: &str = "cs-Secr3t-client-9876543210";
const CLIENT_ID: &str = "mailferry-test-client";

fn messages(n: usize, tag: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("Message-ID: <{tag}{i}@oauth>\r\nSubject: {tag} {i}\r\n\r\nbody {i}\r\n{}\r\n", "y".repeat(2000)).into_bytes())
        .collect()
}

/// A POP3 source in this process (plaintext on loopback, allowed by default).
fn source(fake: &FakePop3) -> Value {
    json!({"protocol": "pop3", "host": "127.0.0.1", "port": fake.port(), "security": "none", "username": "u", "password": SRC_PW})
}

fn oauth_target(lab: &Dovecot, user: &str, oauth2: Value) -> Value {
    json!({"protocol": "imap", "host": "127.0.0.1", "port": lab.imaps_port(), "security": "tls",
           "username": user, "folder": "INBOX", "oauth2": oauth2})
}

fn refresh_grant(server: &TokenServer) -> Value {
    json!({"refresh_token": REFRESH_TOKEN, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
           "token_url": server.url(), "scope": "mail"})
}

fn token_config(user: &str) -> TokenServerConfig {
    let mut c = TokenServerConfig::new(user, REFRESH_TOKEN, CLIENT_ID);
    c.client_secret = Some(CLIENT_SECRET.into());
    c
}

/// No secret in any response about the job or in any log.
async fn assert_no_secrets(api: &Api, server: &Server, lab: &Dovecot, id: i64, issued: &[String]) {
    let mut secrets = vec![REFRESH_TOKEN.to_owned(), CLIENT_SECRET.to_owned()];
    secrets.extend(issued.iter().cloned());
    for path in [format!("/api/v1/jobs/{id}"), "/api/v1/jobs".into(), format!("/api/v1/jobs/{id}/report")] {
        let (status, _, body) = api.get(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
        for s in &secrets {
            assert!(!body.contains(s.as_str()), "{path} leaks a secret");
        }
    }
    let logs = server.logs();
    assert!(logs.contains("obtained an OAuth2 access token"), "the refreshes are logged (without tokens)");
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a secret reached mailferry's logs");
        assert!(!lab.log().contains(s.as_str()), "a secret reached Dovecot's log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_jobs_refresh_their_access_token_and_copy_exactly_once() {
    let lab = Lab::start();
    lab.dovecot.add_oauth2_user("o365");
    lab.dovecot.add_oauth2_user("gmail");
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();

    // Job 1: tokens outlive their reported `expires_in` (1 s) at Dovecot, so only the
    // provider's own clock retires them. The source drops the connection mid-RETR, the job
    // reconnects after its backoff (at least 0.5 s), by when the token is stale: a second
    // refresh, before any refusal.
    let msgs = messages(8, "p");
    let mut cfg = FakeConfig::new("u", SRC_PW, msgs.clone());
    cfg.script = FakeScript { drop_mid_retr: Some((0, 4, 700)), ..Default::default() };
    let fake = FakePop3::start(cfg);
    let mut tc = token_config("o365");
    tc.lifetime = Duration::from_secs(120);
    tc.reported_expires_in = Some(1);
    let tokens = TokenServer::start(&lab.dovecot, tc);
    let body = json!({"source": source(&fake), "target": oauth_target(&lab.dovecot, "o365", refresh_grant(&tokens))});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(job["target"]["oauth2"]["grant"], "refresh_token", "{job}");
    assert_eq!(job["target"]["oauth2"]["client_id"], CLIENT_ID);
    assert_eq!(job["target"]["oauth2"]["has_client_secret"], true);
    assert_eq!(job["target"]["auth"], "xoauth2");
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 120).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", server.logs());
    assert_eq!(fake.connections(), 2, "one reconnect after the dropped RETR");
    assert_eq!(tokens.refreshes(), 2, "a fresh token for the reconnect: {:?}", tokens.calls());
    assert!(tokens.calls().iter().all(|c| c.grant_type.as_deref() == Some("refresh_token") && c.scope.as_deref() == Some("mail")));
    assert_same_messages(&msgs, &lab.dovecot.messages("o365"));
    assert_eq!(done["counts"]["copied"], 8);
    assert_no_secrets(&api, &server, &lab.dovecot, id, &tokens.issued()).await;

    // Job 2: the first token has already expired when it reaches Dovecot (it lapsed in
    // flight, or the clocks disagree). Dovecot refuses it; the job mints one fresh token and
    // logs in with it.
    let msgs = messages(5, "r");
    let fake = FakePop3::start(FakeConfig::new("u", SRC_PW, msgs.clone()));
    let mut tc = token_config("gmail");
    tc.first_token_expired = true;
    let tokens = TokenServer::start(&lab.dovecot, tc);
    let body = json!({"source": source(&fake), "target": oauth_target(&lab.dovecot, "gmail", refresh_grant(&tokens))});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 120).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", server.logs());
    assert_eq!(tokens.refreshes(), 2, "one refresh after the refusal: {:?}", tokens.calls());
    assert!(lab.dovecot.log().contains("Token has expired"), "Dovecot saw the expired token");
    assert!(server.logs().contains("refused the OAuth2 access token; refreshing it once"));
    assert_same_messages(&msgs, &lab.dovecot.messages("gmail"));
    assert_no_secrets(&api, &server, &lab.dovecot, id, &tokens.issued()).await;

    // A rerun (a new run of the same job) copies nothing twice.
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/rerun"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    api.wait_state(id, &["succeeded"], 60).await;
    assert_same_messages(&msgs, &lab.dovecot.messages("gmail"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_fails_the_job_at_once_and_a_static_token_works() {
    let lab = Lab::start();
    lab.dovecot.add_oauth2_user("o365");
    lab.dovecot.add_oauth2_user("static");
    let server = Server::start(&lab.dovecot, None, &[], &[]);
    let api = server.client();

    // The authorization server no longer knows our refresh token: invalid_grant.
    let fake = FakePop3::start(FakeConfig::new("u", SRC_PW, messages(3, "b")));
    let mut tc = token_config("o365");
    tc.refresh_token = "the-one-the-server-knows".into();
    let tokens = TokenServer::start(&lab.dovecot, tc);
    let body = json!({"source": source(&fake), "target": oauth_target(&lab.dovecot, "o365", refresh_grant(&tokens))});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 60).await;
    assert_eq!(done["state"], "failed", "{done}");
    let error = done["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("invalid_grant") && error.contains("refresh token"), "a clear error: {error}");
    assert!(error.contains("o365@127.0.0.1"), "names the destination: {error}");
    assert_eq!(tokens.calls().len(), 1, "not retried: {:?}", tokens.calls());
    assert_eq!(lab.dovecot.message_count("o365"), 0);
    assert_eq!(fake.remaining().len(), 3, "nothing deleted at the source");
    assert_no_secrets_in(&api, &server, id).await;

    // The token endpoint is down (503) for a while: retryable, the job gets there.
    let msgs = messages(2, "u");
    let fake = FakePop3::start(FakeConfig::new("u", SRC_PW, msgs.clone()));
    let mut tc = token_config("o365");
    tc.unavailable_first = 1;
    let tokens = TokenServer::start(&lab.dovecot, tc);
    let body = json!({"source": source(&fake), "target": oauth_target(&lab.dovecot, "o365", refresh_grant(&tokens))});
    let (_, job, _) = api.post("/api/v1/jobs", &body).await;
    let done = api.wait_state(job["id"].as_i64().unwrap(), &["succeeded", "failed", "partial"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(tokens.calls().iter().map(|c| c.status).collect::<Vec<_>>(), [503, 200]);
    assert_same_messages(&msgs, &lab.dovecot.messages("o365"));

    // A static access token, given per job.
    let msgs = messages(3, "s");
    let fake = FakePop3::start(FakeConfig::new("u", SRC_PW, msgs.clone()));
    let access = lab.dovecot.oauth2_token("static", Duration::from_secs(600));
    let body = json!({"source": source(&fake), "target": oauth_target(&lab.dovecot, "static", json!({"access_token": access}))});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(job["target"]["oauth2"], json!({"grant": "access_token", "has_client_secret": false}));
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 60).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_same_messages(&msgs, &lab.dovecot.messages("static"));
    let (_, _, body) = api.get(&format!("/api/v1/jobs/{id}")).await;
    assert!(!body.contains(&access) && !server.logs().contains(&access), "the access token leaked");

    // Password users of the same lab still log in with passwords.
    let (status, job, text) = api.post("/api/v1/jobs", &job_body(&lab.dovecot, "src", "dst", "keep")).await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(api.wait_state(job["id"].as_i64().unwrap(), &["succeeded", "failed"], 60).await["state"], "succeeded");
}

async fn assert_no_secrets_in(api: &Api, server: &Server, id: i64) {
    let (_, _, body) = api.get(&format!("/api/v1/jobs/{id}")).await;
    let logs = server.logs();
    for s in [REFRESH_TOKEN, CLIENT_SECRET, "the-one-the-server-knows"] {
        assert!(!body.contains(s) && !logs.contains(s), "a secret leaked");
    }
}

fn oauth_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--to-oauth2-token-url", url, "--to-oauth2-client-id", CLIENT_ID, "--to-oauth2-refresh-token-env", "MF_REFRESH",
        "--to-oauth2-client-secret-env", "MF_CLIENT_SECRET",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// `mailferry migrate` with the refresh-token flow: secrets from the environment only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refreshes_tokens_from_env_secrets() {
    let lab = Lab::start();
    lab.dovecot.add_oauth2_user("o365");
    let msgs = messages(4, "c");
    lab.dovecot.seed("src", &msgs);
    let tokens = TokenServer::start(&lab.dovecot, token_config("o365"));
    let migrate = |extra_env: Vec<(&'static str, String)>, args: Vec<String>| {
        let state = lab.state();
        let ca = lab.dovecot.ca_file();
        let from = lab.source_url();
        let to = format!("imaps://o365@127.0.0.1:{}/INBOX", lab.dovecot.imaps_port());
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(bin())
                    .arg("migrate")
                    .args(["--from", &from, "--to", &to, "--from-password-env", "MF_SRC_PW", "--json"])
                    .arg("--ca-file")
                    .arg(ca)
                    .arg("--state")
                    .arg(state)
                    .args(args)
                    .env("MF_SRC_PW", SRC_PW)
                    .env("MAILFERRY_LOG__FILTER", "mailferry=debug,info")
                    .envs(extra_env)
                    .output()
                    .unwrap();
                Run::from(out)
            })
            .await
            .unwrap()
        }
    };
    let url = tokens.url();
    let ok = migrate(
        vec![("MF_REFRESH", REFRESH_TOKEN.into()), ("MF_CLIENT_SECRET", CLIENT_SECRET.into())],
        oauth_args(&url, &["--allow-plaintext"]),
    )
    .await;
    ok.assert_code(0);
    assert_eq!(ok.n("copied"), 4);
    assert_eq!(tokens.refreshes(), 1);
    assert_same_messages(&msgs, &lab.dovecot.messages("o365"));
    let all = format!("{}{}", ok.stdout, ok.stderr);
    for s in tokens.issued().iter().map(String::as_str).chain([REFRESH_TOKEN, CLIENT_SECRET]) {
        assert!(!all.contains(s), "a secret reached the output");
    }

    // http:// token endpoints need --allow-plaintext; a wrong refresh token is a clear,
    // immediate failure (exit 1), not a retry loop.
    let refused = migrate(
        vec![("MF_REFRESH", REFRESH_TOKEN.into()), ("MF_CLIENT_SECRET", CLIENT_SECRET.into())],
        oauth_args(&url, &[]),
    )
    .await;
    refused.assert_code(2);
    assert!(refused.stderr.contains("--allow-plaintext"), "{}", refused.stderr);
    // Something to copy: a run with nothing to copy never contacts the destination, so it
    // would never ask for a token.
    lab.dovecot.seed("src", &[b"Subject: one more\r\n\r\nbody\r\n".to_vec()]);
    let before = tokens.calls().len();
    let bad = migrate(
        vec![("MF_REFRESH", "revoked".into()), ("MF_CLIENT_SECRET", CLIENT_SECRET.into())],
        oauth_args(&url, &["--allow-plaintext"]),
    )
    .await;
    bad.assert_code(1);
    assert!(bad.stderr.contains("invalid_grant"), "{}", bad.stderr);
    assert_eq!(tokens.calls().len(), before + 1, "one attempt, no retries");
}

/// RFC 6749 §6 rotation: the token server issues a new refresh token on every refresh and
/// revokes the one it was given. The worker must save each new one to the job before it
/// uses the access token that came with it, so the job's rerun (a new claim, which reads the
/// stored spec afresh) presents the newest token and never a revoked one.
async fn rotated_refresh_tokens_are_saved_for_the_rerun(database_url: Option<&str>) {
    let lab = Lab::start();
    lab.dovecot.add_oauth2_user("o365");
    let server = Server::start(&lab.dovecot, database_url, &[], &[]);
    let api = server.client();
    let first = messages(4, "a");
    lab.dovecot.seed("src", &first);
    // The first access token has already expired: Dovecot refuses it and the run refreshes a
    // second time, with the refresh token the first refresh rotated to.
    let mut tc = token_config("o365");
    tc.rotate = true;
    tc.first_token_expired = true;
    let tokens = TokenServer::start(&lab.dovecot, tc);
    let source = json!({"protocol": "pop3", "host": "127.0.0.1", "port": lab.dovecot.pop3s_port(), "security": "tls",
                        "username": "src", "password": SRC_PW});
    let body = json!({"source": source, "target": oauth_target(&lab.dovecot, "o365", refresh_grant(&tokens)),
                      "options": {"delete": "keep"}});
    let (status, job, text) = api.post("/api/v1/jobs", &body).await;
    assert_eq!(status, 201, "{text}");
    let id = job["id"].as_i64().unwrap();
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 120).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", server.logs());
    assert_eq!(tokens.refreshes(), 2, "a refresh after the refusal: {:?}", tokens.calls());
    assert_same_messages(&first, &lab.dovecot.messages("o365"));

    // New mail, then a rerun: it must start from the newest refresh token.
    let second = messages(3, "b");
    lab.dovecot.seed("src", &second);
    let (status, _, text) = api.post(&format!("/api/v1/jobs/{id}/rerun"), &json!({})).await;
    assert_eq!(status, 200, "{text}");
    let done = api.wait_state(id, &["succeeded", "failed", "partial"], 120).await;
    assert_eq!(done["state"], "succeeded", "{done}\n{}", server.logs());
    assert_eq!(done["runs"], 2, "{done}");

    // Every refresh presented the token valid at that moment: the configured one first, then
    // each rotated one in turn; none was refused, none revoked was ever sent again.
    let calls = tokens.calls();
    let rotated = tokens.rotated_refresh_tokens();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
    let expected: Vec<String> = std::iter::once(REFRESH_TOKEN.to_owned()).chain(rotated[..2].iter().cloned()).collect();
    let sent: Vec<String> = calls.iter().map(|c| c.refresh_token.clone().unwrap_or_default()).collect();
    assert!(sent == expected, "the refreshes presented stale refresh tokens");
    assert_eq!(tokens.valid_refresh_token(), rotated[2]);
    assert!(server.logs().contains("saved the rotated OAuth2 refresh token to the job"), "{}", server.logs());

    // Every message exactly once, the old ones not copied again.
    let all: Vec<Vec<u8>> = first.iter().chain(&second).cloned().collect();
    assert_same_messages(&all, &lab.dovecot.messages("o365"));

    let mut secrets = tokens.issued();
    secrets.extend(rotated);
    assert_no_secrets(&api, &server, &lab.dovecot, id, &secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_are_saved_for_the_rerun_sqlite() {
    rotated_refresh_tokens_are_saved_for_the_rerun(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_refresh_tokens_are_saved_for_the_rerun_postgres() {
    let db = FreshPg::create();
    rotated_refresh_tokens_are_saved_for_the_rerun(Some(&db.url)).await;
}
