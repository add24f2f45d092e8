//! Store conformance: every story runs on SQLite (a temporary file) and on PostgreSQL (a
//! fresh database per test under `MAILFERRY_TEST_DATABASE_URL`, dropped afterwards even
//! when the test fails). Both backends must tell the same story (STYLE.md "Tests" §2).
//!
//! The PostgreSQL tests fail, never skip, when `MAILFERRY_TEST_DATABASE_URL` is unset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailferry_model::{JobSpec, JobState, LedgerState, OAuth2Spec, Scope, Sealer, Security, SourceSpec, TargetSpec};
use mailferry_store::{
    AuditFilter, ClaimLimits, ControlAction, ControlOutcome, CopyDone, CopyIntent, JobFilter, NewAuditEntry, PgStore,
    Release, SqliteStore, Store, StoredResponse,
};
use secrecy::{ExposeSecret, SecretString};

#[path = "conformance/batches.rs"]
mod batches;
use batches::batch_list;
#[path = "conformance/claims.rs"]
mod claims;
use claims::{ledger_queries, readback_story, source_claims_and_fencing};
#[path = "conformance/tasks.rs"]
mod tasks;
use tasks::archive_runs_are_queued_jobs;
#[path = "conformance/schedules.rs"]
mod schedules;
use schedules::{schedules_and_cutover, schedules_are_edited};
#[path = "conformance/receipts.rs"]
mod receipts;
use receipts::receipt_story;

// ---------------------------------------------------------------------------------------
// Harness

macro_rules! stories {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (_dir, store) = super::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (_db, store) = super::pg_store().await;
                    super::$name(store).await;
                }
            )*
        }
    };
}

stories!(
    ping,
    archive_runs_are_queued_jobs,
    ledger_story,
    cli_jobs_are_never_claimable,
    create_list_filter_paginate,
    control_transitions,
    claim_order_and_not_before,
    lease_expiry_takeover,
    source_mailbox_is_exclusive,
    per_host_caps,
    racing_claims,
    batch_aggregates,
    batch_list,
    tokens,
    idempotency_insert_if_absent,
    ledger_pages_and_counts,
    audit_log,
    cluster_figures,
    trace_context,
    refresh_token_rotation,
    source_claims_and_fencing,
    ledger_queries,
    readback_story,
    receipt_story,
    schedules_and_cutover,
    schedules_are_edited,
);

async fn sqlite_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state.db")).await.unwrap();
    (dir, Arc::new(store))
}

/// A database created for one test; dropped (connections forced out) when this goes out of
/// scope, whether the test passed or panicked.
struct TestDb {
    admin_url: String,
    name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop cannot await, and may run inside the test's runtime: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

async fn pg_store() -> (TestDb, Arc<dyn Store>) {
    let admin_url = std::env::var("MAILFERRY_TEST_DATABASE_URL").expect(
        "MAILFERRY_TEST_DATABASE_URL is not set: the PostgreSQL conformance tests need a server, e.g. \
         MAILFERRY_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (each test creates and drops its own database)",
    );
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let name = format!("mf_test_{}_{}_{nanos}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to MAILFERRY_TEST_DATABASE_URL ({admin_url}): {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let db = TestDb { admin_url: admin_url.clone(), name: name.clone() };
    let mut url = url::Url::parse(&admin_url).expect("MAILFERRY_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    let store = PgStore::connect(url.as_str()).await.unwrap();
    (db, Arc::new(store))
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn sealer() -> Sealer {
    Sealer::from_hex(&Sealer::generate_hex()).unwrap()
}

fn spec(user: &str, source_host: &str, target: TargetSpec, labels: &[(&str, &str)]) -> JobSpec {
    JobSpec {
        source: SourceSpec {
            host: source_host.into(),
            port: 995,
            security: Security::Tls,
            username: user.into(),
            password: sealer().seal(&SecretString::from("pop-secret")),
            auth: Default::default(),
            tls_pin: None,
        },
        target,
        options: Default::default(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        schedule: None,
    }
}

fn imap(user: &str, host: &str, folder: &str) -> TargetSpec {
    TargetSpec::Imap {
        host: host.into(),
        port: 993,
        security: Security::Tls,
        username: user.into(),
        password: Some(sealer().seal(&SecretString::from("imap-secret"))),
        auth: Default::default(),
        folder: folder.into(),
        flags: vec![],
        oauth2: None,
        tls_pin: None,
    }
}

fn archive(name: &str) -> TargetSpec {
    TargetSpec::Archive { archive: name.into() }
}

const WIDE: ClaimLimits = ClaimLimits { per_source_host: 100, per_target_host: 100 };
const MINUTE: Duration = Duration::from_secs(60);

fn intent(uidl: &str, wire_size: u64) -> CopyIntent {
    CopyIntent {
        uidl: uidl.into(),
        size: 10,
        digest: format!("d-{uidl}"),
        wire_digest: format!("w-{uidl}"),
        wire_size,
        normalized: true,
        message_id: Some(format!("<{uidl}@x>")),
        internal_date: Some("01-Jan-2024 10:00:00 +0000".into()),
        internal_date_source: "date",
    }
}

fn done(uidl: &str, uid: u32) -> CopyDone {
    CopyDone { uidl: uidl.into(), dest_uid: Some(uid), dest_uidvalidity: Some(1), found_at_destination: false }
}

fn release(state: JobState) -> Release {
    Release { state, error: None, not_before: None }
}

async fn create(s: &Arc<dyn Store>, specs: Vec<JobSpec>) -> Vec<i64> {
    s.create_jobs(None, &specs).await.unwrap().1.into_iter().map(|j| j.id).collect()
}

fn is_rfc3339(t: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z')
}

// ---------------------------------------------------------------------------------------
// Stories

async fn ping(s: Arc<dyn Store>) {
    s.ping().await.unwrap();
}

async fn ledger_story(s: Arc<dyn Store>) {
    let job = s.ensure_job("k", "pop3 a@h:995", "imap b@h:993/INBOX").await.unwrap();
    assert_eq!(s.ensure_job("k", "x", "y").await.unwrap(), job, "same key, same job");
    let run = s.start_run(job, false).await.unwrap();
    s.record_listed(job, run, &[("u1".into(), 10), ("u2".into(), 20), ("u3".into(), 30)]).await.unwrap();
    s.mark_copying(job, run, &[intent("u1", 11), intent("u2", 11)]).await.unwrap();
    s.mark_copied(job, run, &[done("u1", 7)]).await.unwrap();
    s.revert_copying(job, &["u2".into()]).await.unwrap();
    s.mark_skipped(job, run, "u3", "too large").await.unwrap();
    // Deleting is refused for anything not copied.
    s.mark_source_deleted(job, run, &["u1".into(), "u2".into()]).await.unwrap();
    // A failure cannot overwrite a confirmed copy.
    s.mark_failed(job, run, "u1", "boom").await.unwrap();
    s.mark_skipped(job, run, "u1", "nope").await.unwrap();

    let mut ledger = s.ledger(job).await.unwrap();
    ledger.sort_by(|a, b| a.uidl.cmp(&b.uidl));
    let states: Vec<_> = ledger.iter().map(|e| e.state).collect();
    assert_eq!(states, [LedgerState::SourceDeleted, LedgerState::Listed, LedgerState::Skipped]);
    assert_eq!(ledger[0].wire_size, Some(11));
    assert_eq!(ledger[0].wire_digest.as_deref(), Some("w-u1"));
    assert_eq!(ledger[0].message_id.as_deref(), Some("<u1@x>"));
    assert!(ledger[0].copied_at.as_deref().is_some_and(is_rfc3339));
    assert_eq!(ledger[1].copied_at, None);

    let counts = s.run_counts(job, run).await.unwrap();
    assert_eq!(counts.copied, 1);
    assert_eq!(counts.found, 0);
    assert_eq!(counts.bytes, 11);
    assert_eq!(counts.deleted, 1);
    assert_eq!(counts.skipped, vec![("u3".to_string(), "too large".to_string())]);
    assert!(counts.failed.is_empty());

    // Listing again leaves known rows alone; a found-at-destination copy counts as found.
    let run2 = s.start_run(job, false).await.unwrap();
    s.record_listed(job, run2, &[("u1".into(), 10), ("u4".into(), 40)]).await.unwrap();
    assert_eq!(s.ledger(job).await.unwrap().len(), 4);
    assert_eq!(s.run_counts(job, run2).await.unwrap(), Default::default());
    s.mark_copying(job, run2, &[intent("u2", 21)]).await.unwrap();
    s.mark_copied(job, run2, &[CopyDone { found_at_destination: true, ..done("u2", 8) }]).await.unwrap();
    s.mark_failed(job, run2, "u4", "refused").await.unwrap();
    let counts = s.run_counts(job, run2).await.unwrap();
    assert_eq!((counts.copied, counts.found, counts.bytes), (0, 1, 0));
    assert_eq!(counts.failed, vec![("u4".to_string(), "refused".to_string())]);
    s.finish_run(run2, "partial", None, "{}").await.unwrap();

    // A UIDL reused for other bytes: the run that superseded the old row reports it, by its
    // real name; other runs do not.
    let run3 = s.start_run(job, false).await.unwrap();
    s.supersede_reused(job, run3, "u2", "reused: 11 then 99 bytes").await.unwrap();
    assert_eq!(s.run_counts(job, run3).await.unwrap().reused, vec![("u2".to_string(), "reused: 11 then 99 bytes".to_string())]);
    assert!(s.run_counts(job, run2).await.unwrap().reused.is_empty());
}

async fn cli_jobs_are_never_claimable(s: Arc<dyn Store>) {
    let job = s.ensure_job("cli", "pop3 Ann@Mail.Example:995", "imap ann@new:993/INBOX").await.unwrap();
    let rec = s.get_job(job).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Running);
    assert_eq!(rec.spec, None);
    assert_eq!(rec.source, "pop3 Ann@Mail.Example:995");
    assert!(s.claim_job("w", MINUTE, WIDE).await.unwrap().is_none());
    let run = s.start_run(job, false).await.unwrap();
    assert_eq!(s.get_job(job).await.unwrap().unwrap().runs, 1);
    s.finish_run(run, "succeeded", None, "{}").await.unwrap();
    let rec = s.get_job(job).await.unwrap().unwrap();
    assert_eq!(rec.state, JobState::Succeeded);
    assert!(rec.finished_at.is_some());
    // The service does not drive CLI jobs.
    assert_eq!(s.control(job, ControlAction::Rerun).await.unwrap(), ControlOutcome::Conflict(JobState::Succeeded));
    assert!(s.claim_job("w", MINUTE, WIDE).await.unwrap().is_none());
    // A rerun of the CLI finds the same job and marks it running again.
    assert_eq!(s.ensure_job("cli", "pop3 Ann@Mail.Example:995", "imap ann@new:993/INBOX").await.unwrap(), job);
    assert_eq!(s.get_job(job).await.unwrap().unwrap().state, JobState::Running);
    let run = s.start_run(job, false).await.unwrap();
    s.finish_run(run, "failed", Some("auth refused"), "{}").await.unwrap();
    let rec = s.get_job(job).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.last_error.as_deref(), rec.runs), (JobState::Failed, Some("auth refused"), 2));
}

async fn create_list_filter_paginate(s: Arc<dyn Store>) {
    let batch_specs = vec![
        spec("alice", "pop.old.example", imap("alice", "imap.new.example", "INBOX"), &[("dept", "sales"), ("wave", "1")]),
        spec("bob", "pop.old.example", imap("bob", "imap.new.example", "INBOX"), &[("dept", "ops")]),
        spec("carol", "pop.other.example", archive("legal"), &[("dept", "sales")]),
    ];
    let (batch, jobs) = s.create_jobs(Some("wave 1"), &batch_specs).await.unwrap();
    let batch = batch.unwrap();
    assert_eq!(batch.name, "wave 1");
    assert!(is_rfc3339(&batch.created_at));
    assert_eq!(jobs.len(), 3);
    for (job, spec) in jobs.iter().zip(&batch_specs) {
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.spec.as_ref(), Some(spec), "the spec round-trips, sealed secrets included");
        assert_eq!(job.batch_id, Some(batch.id));
        assert_eq!(job.labels, spec.labels);
        assert_eq!(job.source, spec.source_display());
        assert_eq!(job.target, spec.target_display());
        assert_eq!((job.runs, job.cancel_requested, job.pause_requested), (0, false, false));
        assert_eq!((&job.lease_owner, &job.started_at, &job.finished_at), (&None, &None, &None));
        assert!(is_rfc3339(&job.created_at) && is_rfc3339(&job.updated_at));
        assert_eq!(s.get_job(job.id).await.unwrap().as_ref(), Some(job));
    }
    assert!(jobs.windows(2).all(|w| w[0].id < w[1].id));
    let (none, loose) = s
        .create_jobs(None, &[spec("dave", "pop.old.example", archive("legal"), &[]), spec("Erin", "POP.Third.example", archive("x"), &[])])
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(loose[0].batch_id, None);
    assert!(loose[0].labels.is_empty());
    assert_eq!(s.create_jobs(Some("empty"), &[]).await.unwrap().1, vec![]);
    assert!(s.get_job(999_999).await.unwrap().is_none());

    let ids = |v: Vec<mailferry_store::JobRecord>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let all: Vec<i64> = jobs.iter().chain(&loose).map(|j| j.id).collect();
    let list = |f: JobFilter| {
        let s = Arc::clone(&s);
        async move { ids(s.list_jobs(&f).await.unwrap()) }
    };
    assert_eq!(list(JobFilter::default()).await, all, "limit 0 means the default page");
    assert_eq!(list(JobFilter { batch: Some(batch.id), ..Default::default() }).await, all[..3]);
    assert_eq!(
        list(JobFilter { label: Some(("dept".into(), "sales".into())), ..Default::default() }).await,
        [all[0], all[2]]
    );
    assert_eq!(list(JobFilter { label: Some(("wave".into(), "1".into())), ..Default::default() }).await, [all[0]]);
    assert_eq!(list(JobFilter { label: Some(("dept".into(), "hr".into())), ..Default::default() }).await, Vec::<i64>::new());
    assert_eq!(list(JobFilter { text: Some("BOB@".into()), ..Default::default() }).await, [all[1]]);
    assert_eq!(list(JobFilter { text: Some("legal".into()), ..Default::default() }).await, [all[2], all[3]]);
    assert_eq!(list(JobFilter { text: Some("pop.third".into()), ..Default::default() }).await, [all[4]]);
    assert_eq!(list(JobFilter { text: Some("%".into()), ..Default::default() }).await, Vec::<i64>::new(), "no wildcards");
    assert_eq!(
        list(JobFilter { batch: Some(batch.id), label: Some(("dept".into(), "sales".into())), text: Some("carol".into()), ..Default::default() })
            .await,
        [all[2]]
    );

    // Claim one: the state filter sees it.
    let claimed = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, all[0]);
    assert_eq!(list(JobFilter { state: Some(JobState::Running), ..Default::default() }).await, [all[0]]);
    assert_eq!(list(JobFilter { state: Some(JobState::Queued), ..Default::default() }).await, all[1..]);

    // Cursor pagination walks everything once, in id order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = list(JobFilter { after, limit: 2, ..Default::default() }).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, all);
    assert_eq!(list(JobFilter { after: Some(all[1]), limit: 2, state: Some(JobState::Queued), ..Default::default() }).await, all[2..4]);
}

async fn control_transitions(s: Arc<dyn Store>) {
    use ControlAction::*;
    let ids = create(&s, vec![spec("a", "h1", archive("x"), &[]), spec("b", "h2", archive("x"), &[])]).await;
    let (a, b) = (ids[0], ids[1]);
    let state = |o: ControlOutcome| match o {
        ControlOutcome::Done(j) => j.state,
        other => panic!("expected Done, got {other:?}"),
    };
    assert_eq!(s.control(999_999, Cancel).await.unwrap(), ControlOutcome::NotFound);

    // queued → paused → queued → cancelled → queued (rerun).
    assert_eq!(state(s.control(a, Pause).await.unwrap()), JobState::Paused);
    assert_eq!(s.control(a, Pause).await.unwrap(), ControlOutcome::Conflict(JobState::Paused));
    assert_eq!(s.control(a, Rerun).await.unwrap(), ControlOutcome::Conflict(JobState::Paused));
    // A paused job is not claimable: b is taken instead.
    let claimed = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, b);
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none());
    assert_eq!(state(s.control(a, Resume).await.unwrap()), JobState::Queued);
    assert_eq!(s.control(a, Resume).await.unwrap(), ControlOutcome::Conflict(JobState::Queued));
    let ControlOutcome::Done(cancelled) = s.control(a, Cancel).await.unwrap() else { panic!() };
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(s.control(a, Cancel).await.unwrap(), ControlOutcome::Conflict(JobState::Cancelled));
    assert_eq!(s.control(a, Pause).await.unwrap(), ControlOutcome::Conflict(JobState::Cancelled));
    assert_eq!(s.control(a, Resume).await.unwrap(), ControlOutcome::Conflict(JobState::Cancelled));
    let ControlOutcome::Done(rerun) = s.control(a, Rerun).await.unwrap() else { panic!() };
    assert_eq!((rerun.state, rerun.finished_at), (JobState::Queued, None));
    // Paused → cancelled directly.
    assert_eq!(state(s.control(a, Pause).await.unwrap()), JobState::Paused);
    assert_eq!(state(s.control(a, Cancel).await.unwrap()), JobState::Cancelled);

    // Running: requests, seen by the heartbeat; the state stays running.
    let ControlOutcome::Done(j) = s.control(b, Pause).await.unwrap() else { panic!() };
    assert_eq!((j.state, j.pause_requested, j.cancel_requested), (JobState::Running, true, false));
    let hb = s.heartbeat(b, "w1", MINUTE).await.unwrap();
    assert_eq!((hb.held, hb.pause_requested, hb.cancel_requested), (true, true, false));
    let ControlOutcome::Done(j) = s.control(b, Resume).await.unwrap() else { panic!() };
    assert!(!j.pause_requested, "resume withdraws a pending pause");
    assert_eq!(s.control(b, Resume).await.unwrap(), ControlOutcome::Conflict(JobState::Running));
    let ControlOutcome::Done(j) = s.control(b, Cancel).await.unwrap() else { panic!() };
    assert_eq!((j.state, j.cancel_requested), (JobState::Running, true));
    assert_eq!(s.control(b, Rerun).await.unwrap(), ControlOutcome::Conflict(JobState::Running));
    assert!(s.heartbeat(b, "w1", MINUTE).await.unwrap().cancel_requested);

    // The worker honours the cancel; the flags are cleared with the lease.
    assert!(s.release_job(b, "w1", &release(JobState::Cancelled)).await.unwrap());
    let j = s.get_job(b).await.unwrap().unwrap();
    assert_eq!((j.state, j.cancel_requested, j.pause_requested), (JobState::Cancelled, false, false));
    assert_eq!((j.lease_owner, j.lease_expires_at), (None, None));
    assert!(j.finished_at.is_some());

    // A failed job keeps its error until rerun.
    assert_eq!(state(s.control(b, Rerun).await.unwrap()), JobState::Queued);
    let c = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.runs), (b, 2));
    assert!(s
        .release_job(b, "w1", &Release { state: JobState::Failed, error: Some("auth refused".into()), not_before: None })
        .await
        .unwrap());
    assert_eq!(s.get_job(b).await.unwrap().unwrap().last_error.as_deref(), Some("auth refused"));
    let ControlOutcome::Done(j) = s.control(b, Rerun).await.unwrap() else { panic!() };
    assert_eq!((j.state, j.last_error, j.finished_at), (JobState::Queued, None, None));

    // The worker pauses a running job on request; resume queues it again.
    let c = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(c.job.id, b);
    s.control(b, Pause).await.unwrap();
    assert!(s.release_job(b, "w1", &release(JobState::Paused)).await.unwrap());
    let j = s.get_job(b).await.unwrap().unwrap();
    assert_eq!((j.state, j.pause_requested, j.finished_at), (JobState::Paused, false, None));
    assert_eq!(state(s.control(b, Resume).await.unwrap()), JobState::Queued);

    // Every change above left an event, in order (database triggers, same transaction).
    use JobState::*;
    let events = s.job_events(b, 0, 100).await.unwrap();
    let seen: Vec<(JobState, Option<&str>)> = events.iter().map(|e| (e.state, e.detail.as_deref())).collect();
    assert_eq!(
        seen,
        vec![
            (Queued, None),
            (Running, None),
            (Running, Some("pause requested")),
            (Running, Some("cancel requested")),
            (Cancelled, None),
            (Queued, None),
            (Running, None),
            (Failed, Some("auth refused")),
            (Queued, None),
            (Running, None),
            (Running, Some("pause requested")),
            (Paused, None),
            (Queued, None),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    let after = s.job_events(b, events[10].id, 100).await.unwrap();
    assert_eq!(after.len(), 2, "resume from the last id seen");
}

async fn claim_order_and_not_before(s: Arc<dyn Store>) {
    let ids = create(
        &s,
        vec![spec("a", "h1", archive("x"), &[]), spec("b", "h2", archive("x"), &[]), spec("c", "h3", archive("x"), &[])],
    )
    .await;
    let c1 = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c1.job.id, c1.takeover, c1.job.runs), (ids[0], false, 1));
    assert_eq!(c1.job.state, JobState::Running);
    assert_eq!(c1.job.lease_owner.as_deref(), Some("w1"));
    assert!(c1.job.lease_expires_at.as_deref().is_some_and(is_rfc3339));
    assert!(c1.job.started_at.is_some());
    let c2 = s.claim_job("w2", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(c2.job.id, ids[1]);

    // Only the owner may release; a released-for-retry job waits for its not_before.
    assert!(!s.release_job(ids[1], "w1", &release(JobState::Succeeded)).await.unwrap());
    let retry = Release { state: JobState::Queued, error: Some("connection reset".into()), not_before: Some(Duration::from_millis(300)) };
    assert!(s.release_job(ids[1], "w2", &retry).await.unwrap());
    assert!(!s.release_job(ids[1], "w2", &retry).await.unwrap(), "no longer held");
    let j = s.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!((j.state, j.last_error.as_deref(), j.lease_owner), (JobState::Queued, Some("connection reset"), None));
    assert_eq!(j.finished_at, None);
    let c3 = s.claim_job("w3", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(c3.job.id, ids[2], "the job in backoff is passed over");
    assert!(s.claim_job("w4", MINUTE, WIDE).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = s.claim_job("w4", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((again.job.id, again.takeover, again.job.runs), (ids[1], false, 2));

    // Releases: terminal states are finished, the lease is gone, released jobs stay put.
    assert!(s.release_job(ids[0], "w1", &release(JobState::Succeeded)).await.unwrap());
    let j = s.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!((j.state, j.lease_owner, j.lease_expires_at, j.last_error), (JobState::Succeeded, None, None, None));
    assert!(j.finished_at.is_some());
    assert!(!s.heartbeat(ids[0], "w1", MINUTE).await.unwrap().held);
    assert!(s.claim_job("w1", MINUTE, WIDE).await.unwrap().is_none());
    // A shutdown release (queued, no delay) is claimable at once.
    assert!(s.release_job(ids[2], "w3", &release(JobState::Queued)).await.unwrap());
    let c = s.claim_job("w5", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.runs), (ids[2], 2));
}

async fn lease_expiry_takeover(s: Arc<dyn Store>) {
    let ids = create(&s, vec![spec("a", "h1", archive("x"), &[])]).await;
    let short = Duration::from_millis(200);
    let c = s.claim_job("w1", short, WIDE).await.unwrap().unwrap();
    assert_eq!(c.job.id, ids[0]);
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none(), "a live lease is not taken");
    // A heartbeat keeps it alive past the first expiry.
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(s.heartbeat(ids[0], "w1", Duration::from_millis(600)).await.unwrap().held);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(s.claim_job("w2", MINUTE, WIDE).await.unwrap().is_none(), "the heartbeat extended the lease");
    assert!(!s.heartbeat(ids[0], "w2", MINUTE).await.unwrap().held, "not w2's lease");

    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = s.claim_job("w2", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!((t.job.id, t.takeover, t.job.runs), (ids[0], true, 1), "a takeover is not a new pass");
    assert_eq!(t.job.lease_owner.as_deref(), Some("w2"));
    assert_eq!(t.job.started_at, c.job.started_at);

    // The old owner has lost it: heartbeat says so, release is refused.
    assert!(!s.heartbeat(ids[0], "w1", MINUTE).await.unwrap().held);
    assert!(!s.release_job(ids[0], "w1", &release(JobState::Failed)).await.unwrap());
    assert_eq!(s.get_job(ids[0]).await.unwrap().unwrap().state, JobState::Running);
    assert!(s.heartbeat(ids[0], "w2", MINUTE).await.unwrap().held);
    assert!(s.release_job(ids[0], "w2", &release(JobState::Partial)).await.unwrap());
    assert_eq!(s.get_job(ids[0]).await.unwrap().unwrap().state, JobState::Partial);
}

async fn source_mailbox_is_exclusive(s: Arc<dyn Store>) {
    // Same maildrop (host case differs), two destinations.
    let ids = create(
        &s,
        vec![
            spec("ann", "pop.example", imap("ann", "imap.example", "INBOX"), &[]),
            spec("ann", "POP.example", archive("legal"), &[]),
            spec("ben", "pop.example", archive("legal"), &[]),
        ],
    )
    .await;
    let a = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(a.job.id, ids[0]);
    let b = s.claim_job("w2", MINUTE, WIDE).await.unwrap().unwrap();
    assert_eq!(b.job.id, ids[2], "ann's maildrop is busy; ben's is not");
    assert!(s.claim_job("w3", MINUTE, WIDE).await.unwrap().is_none());
    assert!(s.release_job(ids[0], "w1", &release(JobState::Succeeded)).await.unwrap());
    assert_eq!(s.claim_job("w3", MINUTE, WIDE).await.unwrap().unwrap().job.id, ids[1]);
}

async fn per_host_caps(s: Arc<dyn Store>) {
    // Source cap: two mailboxes on one POP3 host, cap 1.
    let src = ClaimLimits { per_source_host: 1, per_target_host: 100 };
    let ids = create(&s, vec![spec("a", "pop.one", archive("x"), &[]), spec("b", "Pop.One", archive("x"), &[])]).await;
    assert_eq!(s.claim_job("w1", MINUTE, src).await.unwrap().unwrap().job.id, ids[0]);
    assert!(s.claim_job("w2", MINUTE, src).await.unwrap().is_none());
    assert!(s.release_job(ids[0], "w1", &release(JobState::Succeeded)).await.unwrap());
    assert_eq!(s.claim_job("w2", MINUTE, src).await.unwrap().unwrap().job.id, ids[1]);
    assert!(s.release_job(ids[1], "w2", &release(JobState::Succeeded)).await.unwrap());

    // Target cap: two source hosts, one IMAP host, cap 1.
    let dst = ClaimLimits { per_source_host: 100, per_target_host: 1 };
    let ids = create(
        &s,
        vec![spec("c", "pop.two", imap("c", "imap.new", "INBOX"), &[]), spec("d", "pop.three", imap("d", "IMAP.new", "INBOX"), &[])],
    )
    .await;
    assert_eq!(s.claim_job("w1", MINUTE, dst).await.unwrap().unwrap().job.id, ids[0]);
    assert!(s.claim_job("w2", MINUTE, dst).await.unwrap().is_none());
    // An expired lease no longer counts against the cap.
    assert!(s.release_job(ids[0], "w1", &release(JobState::Succeeded)).await.unwrap());
    let c = s.claim_job("w2", Duration::from_millis(200), dst).await.unwrap().unwrap();
    assert_eq!(c.job.id, ids[1]);
    assert!(s.claim_job("w3", MINUTE, dst).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = s.claim_job("w3", MINUTE, dst).await.unwrap().unwrap();
    assert_eq!((t.job.id, t.takeover), (ids[1], true));
    assert!(s.release_job(ids[1], "w3", &release(JobState::Succeeded)).await.unwrap());

    // Archive targets have no target host, so no target cap.
    let ids = create(&s, vec![spec("e", "pop.four", archive("x"), &[]), spec("f", "pop.five", archive("x"), &[])]).await;
    assert_eq!(s.claim_job("w1", MINUTE, dst).await.unwrap().unwrap().job.id, ids[0]);
    assert_eq!(s.claim_job("w2", MINUTE, dst).await.unwrap().unwrap().job.id, ids[1]);

    // Caps of 0 mean "no cap".
    let ids = create(&s, vec![spec("g", "pop.six", archive("x"), &[]), spec("h", "pop.six", archive("x"), &[])]).await;
    let none = ClaimLimits { per_source_host: 0, per_target_host: 0 };
    assert_eq!(s.claim_job("w1", MINUTE, none).await.unwrap().unwrap().job.id, ids[0]);
    assert_eq!(s.claim_job("w2", MINUTE, none).await.unwrap().unwrap().job.id, ids[1]);
}

async fn racing_claims(s: Arc<dyn Store>) {
    // 3 POP3 hosts × 5 mailboxes, one IMAP host: at most 2 per source host and 5 on the
    // target, so exactly 5 jobs can be running at once however the claims interleave.
    let mut specs = Vec::new();
    for h in 0..3 {
        for u in 0..5 {
            let user = format!("u{h}{u}");
            specs.push(spec(&user, &format!("pop{h}.example"), imap(&user, "imap.example", "INBOX"), &[]));
        }
    }
    // Plus two jobs on one maildrop: never both at once.
    specs.push(spec("shared", "pop9.example", archive("x"), &[]));
    specs.push(spec("shared", "pop9.example", archive("y"), &[]));
    create(&s, specs).await;
    let limits = ClaimLimits { per_source_host: 2, per_target_host: 5 };
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let worker = format!("w{w}");
            let mut got = Vec::new();
            while let Some(c) = s.claim_job(&worker, MINUTE, limits).await.unwrap() {
                assert_eq!(c.job.lease_owner.as_deref(), Some(worker.as_str()));
                assert!(!c.takeover);
                got.push((c.job.id, worker.clone()));
            }
            got
        });
    }
    let mut claims = Vec::new();
    while let Some(r) = tasks.join_next().await {
        claims.extend(r.unwrap());
    }
    let unique: HashSet<i64> = claims.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), claims.len(), "a job was handed to two workers: {claims:?}");
    assert_eq!(claims.len(), 6, "5 capped IMAP jobs + 1 of the shared maildrop: {claims:?}");
    let mut per_host: HashMap<String, usize> = HashMap::new();
    let mut per_target = 0;
    for (id, worker) in &claims {
        let j = s.get_job(*id).await.unwrap().unwrap();
        assert_eq!(j.lease_owner.as_ref(), Some(worker));
        let spec = j.spec.unwrap();
        *per_host.entry(spec.source.host.clone()).or_default() += 1;
        per_target += usize::from(spec.target_host() == "imap.example");
    }
    assert!(per_host.values().all(|n| *n <= 2), "{per_host:?}");
    assert_eq!(per_host.get("pop9.example"), Some(&1));
    assert_eq!(per_target, 5);
}

async fn batch_aggregates(s: Arc<dyn Store>) {
    let (batch, jobs) = s
        .create_jobs(Some("cutover"), &[spec("a", "h1", archive("x"), &[]), spec("b", "h2", archive("x"), &[])])
        .await
        .unwrap();
    let batch = batch.unwrap();
    create(&s, vec![spec("outside", "h3", archive("x"), &[])]).await;
    let (a, b) = (jobs[0].id, jobs[1].id);

    let sum = s.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!(sum.batch, batch);
    assert_eq!((sum.jobs, sum.states.clone()), (2, vec![(JobState::Queued, 2)]));
    assert_eq!(sum.counts, Default::default());

    assert_eq!(s.claim_job("w", MINUTE, WIDE).await.unwrap().unwrap().job.id, a);
    let run = s.start_run(a, false).await.unwrap();
    s.record_listed(a, run, &[("1".into(), 10), ("2".into(), 20), ("3".into(), 30)]).await.unwrap();
    s.mark_copying(a, run, &[intent("1", 100), intent("2", 200)]).await.unwrap();
    s.mark_copied(a, run, &[done("1", 1), done("2", 2)]).await.unwrap();
    s.mark_source_deleted(a, run, &["1".into()]).await.unwrap();
    s.mark_failed(a, run, "3", "boom").await.unwrap();
    assert_eq!(s.get_job(a).await.unwrap().unwrap().runs, 1, "start_run does not count service passes twice");
    let run_b = s.start_run(b, false).await.unwrap();
    s.record_listed(b, run_b, &[("x".into(), 5)]).await.unwrap();
    s.mark_skipped(b, run_b, "x", "too old").await.unwrap();

    let sum = s.get_batch(batch.id).await.unwrap().unwrap();
    assert_eq!(sum.jobs, 2);
    assert_eq!(sum.states, vec![(JobState::Queued, 1), (JobState::Running, 1)]);
    let c = sum.counts;
    assert_eq!((c.listed, c.copied, c.skipped, c.failed, c.deleted, c.bytes), (4, 2, 1, 1, 1, 300));
    assert_eq!(s.job_counts(b).await.unwrap().skipped, 1);
    assert!(s.get_batch(999_999).await.unwrap().is_none());
}

async fn tokens(s: Arc<dyn Store>) {
    assert!(s.list_tokens().await.unwrap().is_empty());
    let admin = s.create_token("ci", Scope::Admin, "hash-1").await.unwrap();
    let reader = s.create_token("dash", Scope::Read, "hash-2").await.unwrap();
    assert_eq!((admin.name.as_str(), admin.scope), ("ci", Scope::Admin));
    assert!(is_rfc3339(&admin.created_at));
    assert!(s.create_token("dup", Scope::Read, "hash-1").await.is_err(), "hashes are unique");
    assert_eq!(s.token_by_hash("hash-1").await.unwrap(), Some(admin.clone()));
    assert_eq!(s.token_by_hash("hash-2").await.unwrap(), Some(reader.clone()));
    assert_eq!(s.token_by_hash("nope").await.unwrap(), None);
    assert_eq!(s.list_tokens().await.unwrap(), vec![admin.clone(), reader.clone()]);
    assert!(s.delete_token(admin.id).await.unwrap());
    assert!(!s.delete_token(admin.id).await.unwrap());
    assert_eq!(s.token_by_hash("hash-1").await.unwrap(), None);
    assert_eq!(s.list_tokens().await.unwrap(), vec![reader]);
}

async fn idempotency_insert_if_absent(s: Arc<dyn Store>) {
    let t1 = s.create_token("a", Scope::Write, "h1").await.unwrap().id;
    let t2 = s.create_token("b", Scope::Write, "h2").await.unwrap().id;
    let first = StoredResponse { request_hash: "rh1".into(), status: 201, body: r#"{"id":1}"#.into() };
    let second = StoredResponse { request_hash: "rh2".into(), status: 202, body: r#"{"id":2}"#.into() };
    assert_eq!(s.idempotency_get(t1, "k").await.unwrap(), None);
    s.idempotency_put(t1, "k", &first).await.unwrap();
    s.idempotency_put(t1, "k", &second).await.unwrap();
    assert_eq!(s.idempotency_get(t1, "k").await.unwrap(), Some(first.clone()), "the first response wins");
    assert_eq!(s.idempotency_get(t2, "k").await.unwrap(), None, "keys are per token");
    s.idempotency_put(t2, "k", &second).await.unwrap();
    assert_eq!(s.idempotency_get(t2, "k").await.unwrap(), Some(second.clone()));

    // Racing puts of one key: exactly one response is kept, every put succeeds.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8u16 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let r = StoredResponse { request_hash: format!("r{i}"), status: 200 + i, body: format!("{i}") };
            s.idempotency_put(t1, "race", &r).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let kept = s.idempotency_get(t1, "race").await.unwrap().unwrap();
    assert_eq!(kept.body, (kept.status - 200).to_string());

    // Deleting a token forgets its keys.
    assert!(s.delete_token(t1).await.unwrap());
    assert_eq!(s.idempotency_get(t1, "k").await.unwrap(), None);
    assert_eq!(s.idempotency_get(t2, "k").await.unwrap(), Some(second));
}

async fn ledger_pages_and_counts(s: Arc<dyn Store>) {
    let ids = create(&s, vec![spec("a", "h1", archive("x"), &[])]).await;
    let job = ids[0];
    let other = create(&s, vec![spec("b", "h2", archive("x"), &[])]).await[0];
    assert_eq!(s.job_counts(job).await.unwrap(), Default::default());
    assert!(s.ledger_page(job, None, 10).await.unwrap().is_empty());

    let run = s.start_run(job, false).await.unwrap();
    let uidls = ["u1", "u2", "u3", "u4", "u5", "U0", "u10"];
    let listed: Vec<(String, u64)> = uidls.iter().map(|u| (u.to_string(), 10)).collect();
    s.record_listed(job, run, &listed).await.unwrap();
    let orun = s.start_run(other, false).await.unwrap();
    s.record_listed(other, orun, &[("u1".into(), 1)]).await.unwrap();
    s.mark_copying(job, run, &[intent("u1", 11), intent("u2", 12), intent("u3", 13)]).await.unwrap();
    s.mark_copied(job, run, &[done("u1", 41), done("u2", 42)]).await.unwrap();
    s.mark_source_deleted(job, run, &["u2".into()]).await.unwrap();
    s.mark_skipped(job, run, "u4", "too large").await.unwrap();
    s.mark_failed(job, run, "u5", "NO [LIMIT]").await.unwrap();

    let c = s.job_counts(job).await.unwrap();
    assert_eq!((c.listed, c.copied, c.skipped, c.failed, c.deleted, c.bytes), (7, 2, 1, 1, 1, 23));

    // Pages in byte order of UIDL (upper case first), after the cursor.
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.ledger_page(job, after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.uidl.clone());
        all.extend(page);
    }
    let order: Vec<&str> = all.iter().map(|r| r.uidl.as_str()).collect();
    assert_eq!(order, ["U0", "u1", "u10", "u2", "u3", "u4", "u5"]);
    let by: BTreeMap<&str, _> = all.iter().map(|r| (r.uidl.as_str(), r)).collect();
    let u1 = by["u1"];
    assert_eq!((u1.state, u1.size, u1.dest_uid, u1.digest.as_deref()), (LedgerState::Copied, 10, Some(41), Some("d-u1")));
    assert_eq!((u1.internal_date.as_deref(), u1.internal_date_source.as_deref()), (Some("01-Jan-2024 10:00:00 +0000"), Some("date")));
    assert!(is_rfc3339(&u1.first_seen_at) && u1.copied_at.as_deref().is_some_and(is_rfc3339));
    assert_eq!(u1.deleted_at, None);
    assert_eq!(by["u2"].state, LedgerState::SourceDeleted);
    assert!(by["u2"].deleted_at.as_deref().is_some_and(is_rfc3339));
    assert_eq!(by["u3"].state, LedgerState::Copying);
    assert_eq!((by["u4"].state, by["u4"].reason.as_deref()), (LedgerState::Skipped, Some("too large")));
    assert_eq!((by["u5"].state, by["u5"].reason.as_deref()), (LedgerState::Failed, Some("NO [LIMIT]")));
    assert_eq!((by["U0"].state, by["U0"].digest.as_deref(), by["U0"].copied_at.as_deref()), (LedgerState::Listed, None, None));
    assert_eq!(s.ledger_page(job, Some("u5"), 3).await.unwrap(), vec![]);
    assert_eq!(s.ledger_page(job, None, 0).await.unwrap().len(), 7, "limit 0 means the default page");
    assert_eq!(s.ledger_page(other, None, 10).await.unwrap().len(), 1);
}

fn audit(token: Option<(i64, &str)>, method: &str, route: &str, target: Option<&str>, status: u16) -> NewAuditEntry {
    NewAuditEntry {
        token_id: token.map(|t| t.0),
        token_name: token.map(|t| t.1.to_owned()),
        method: method.into(),
        route: route.into(),
        target: target.map(str::to_owned),
        status,
        client: Some("192.0.2.7".into()),
    }
}

async fn audit_log(s: Arc<dyn Store>) {
    let all = |limit| AuditFilter { limit, ..AuditFilter::default() };
    assert!(s.list_audit(&all(0)).await.unwrap().is_empty());
    let ci = s.create_token("ci", Scope::Write, "h-ci").await.unwrap();
    let ops = s.create_token("ops", Scope::Admin, "h-ops").await.unwrap();
    let written = [
        audit(Some((ci.id, "ci")), "POST", "/api/v1/jobs", Some("1"), 201),
        audit(Some((ci.id, "ci")), "POST", "/api/v1/jobs/{id}/cancel", Some("1"), 409),
        audit(Some((ops.id, "ops")), "DELETE", "/api/v1/tokens/{id}", Some(&ci.id.to_string()), 204),
        audit(Some((ops.id, "ops")), "POST", "/api/v1/tokens", None, 422),
    ];
    let mut ids = Vec::new();
    for e in &written {
        ids.push(s.record_audit(e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    // Revoking a token does not rewrite what it did.
    assert!(s.delete_token(ci.id).await.unwrap());

    let page = s.list_audit(&all(0)).await.unwrap();
    assert_eq!(page.len(), 4);
    let got: Vec<NewAuditEntry> = page.iter().map(|e| e.entry.clone()).collect();
    let newest_first: Vec<NewAuditEntry> = written.iter().rev().cloned().collect();
    assert_eq!(got, newest_first, "newest first, every field as written");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), ids.iter().rev().copied().collect::<Vec<_>>());
    assert!(page.iter().all(|e| is_rfc3339(&e.at)), "{page:?}");
    assert!(page.windows(2).all(|w| w[0].at >= w[1].at));

    // Cursor pages of two.
    let first = s.list_audit(&all(2)).await.unwrap();
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[3], ids[2]]);
    let second = s.list_audit(&AuditFilter { before: Some(ids[2]), limit: 2, ..AuditFilter::default() }).await.unwrap();
    assert_eq!(second.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[1], ids[0]]);
    assert!(s.list_audit(&AuditFilter { before: Some(ids[0]), ..AuditFilter::default() }).await.unwrap().is_empty());

    // Filters: token, method, time range (and all of them together).
    let by_ci = s.list_audit(&AuditFilter { token_id: Some(ci.id), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(by_ci.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[1], ids[0]]);
    let deletes = s.list_audit(&AuditFilter { method: Some("DELETE".into()), ..AuditFilter::default() }).await.unwrap();
    assert_eq!(deletes.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[2]]);
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now();
    let window = |since, until| AuditFilter { since, until, ..AuditFilter::default() };
    assert_eq!(s.list_audit(&window(Some(now - hour), Some(now + hour))).await.unwrap().len(), 4);
    assert!(s.list_audit(&window(Some(now + hour), None)).await.unwrap().is_empty());
    assert!(s.list_audit(&window(None, Some(now - hour))).await.unwrap().is_empty());
    let at0 = chrono::DateTime::parse_from_rfc3339(&page[3].at).unwrap().with_timezone(&chrono::Utc);
    assert!(s.list_audit(&window(None, Some(at0))).await.unwrap().is_empty(), "until is exclusive");
    assert_eq!(s.list_audit(&window(Some(at0), None)).await.unwrap().len(), 4, "since is inclusive");
    let combined = AuditFilter {
        since: Some(now - hour),
        token_id: Some(ops.id),
        method: Some("POST".into()),
        ..AuditFilter::default()
    };
    assert_eq!(s.list_audit(&combined).await.unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), vec![ids[3]]);
}

async fn cluster_figures(s: Arc<dyn Store>) {
    let f = s.cluster_figures().await.unwrap();
    assert_eq!(f.jobs_by_state.len(), JobState::ALL.len(), "every state, zeros included: {f:?}");
    assert!(f.jobs_by_state.iter().all(|(_, n)| *n == 0));
    assert_eq!(f.ledger_by_state.len(), 7, "every ledger state, verified included");
    assert_eq!((f.queue_ready, f.expired_leases, f.oldest_queued_age_secs), (0, 0, 0.0));
    assert!(f.sessions_by_source_host.is_empty() && f.sessions_by_target_host.is_empty());

    let ids = create(
        &s,
        vec![
            spec("a", "Pop.A", imap("a", "IMAP.X", "INBOX"), &[]),
            spec("b", "pop.a", archive("legal"), &[]),
            spec("c", "pop.b", imap("c", "imap.x", "INBOX"), &[]),
            spec("d", "pop.c", imap("d", "imap.y", "INBOX"), &[]),
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let f = s.cluster_figures().await.unwrap();
    let state = |f: &mailferry_store::ClusterFigures, st: JobState| f.jobs_by_state.iter().find(|(s, _)| *s == st).unwrap().1;
    assert_eq!((state(&f, JobState::Queued), f.queue_ready), (4, 4));
    assert!(f.oldest_queued_age_secs >= 0.02 && f.oldest_queued_age_secs < 60.0, "{f:?}");

    // Three leases (hosts compare lower-cased), one of them short; one job left queued.
    let a = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    let b = s.claim_job("w1", MINUTE, WIDE).await.unwrap().unwrap();
    let c = s.claim_job("w2", Duration::from_millis(100), WIDE).await.unwrap().unwrap();
    assert_eq!((a.job.id, b.job.id, c.job.id), (ids[0], ids[1], ids[2]));
    let f = s.cluster_figures().await.unwrap();
    assert_eq!((state(&f, JobState::Running), state(&f, JobState::Queued)), (3, 1));
    assert_eq!(f.sessions_by_source_host, vec![("pop.a".to_owned(), 2), ("pop.b".to_owned(), 1)]);
    assert_eq!(f.sessions_by_target_host, vec![("imap.x".to_owned(), 2)], "archive targets hold no IMAP session");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let f = s.cluster_figures().await.unwrap();
    assert_eq!(f.expired_leases, 1, "{f:?}");
    assert_eq!(f.sessions_by_source_host, vec![("pop.a".to_owned(), 2)], "an expired lease holds no session");
    assert_eq!(f.sessions_by_target_host, vec![("imap.x".to_owned(), 1)]);

    // A retry backoff keeps a queued job out of the ready count, not out of the queue.
    assert!(s.release_job(ids[1], "w1", &Release { state: JobState::Queued, error: None, not_before: Some(MINUTE) }).await.unwrap());
    let f = s.cluster_figures().await.unwrap();
    assert_eq!((state(&f, JobState::Queued), f.queue_ready), (2, 1), "{f:?}");

    // The ledger, by state, over every job.
    let run = s.start_run(ids[0], false).await.unwrap();
    s.record_listed(ids[0], run, &[("u1".into(), 10), ("u2".into(), 20), ("u3".into(), 30)]).await.unwrap();
    s.mark_copying(ids[0], run, &[intent("u1", 11), intent("u2", 21)]).await.unwrap();
    s.mark_copied(ids[0], run, &[done("u1", 1)]).await.unwrap();
    assert!(s.release_job(ids[0], "w1", &release(JobState::Succeeded)).await.unwrap());
    let f = s.cluster_figures().await.unwrap();
    let ledger = |st: LedgerState| f.ledger_by_state.iter().find(|(s, _)| *s == st).unwrap().1;
    assert_eq!((ledger(LedgerState::Listed), ledger(LedgerState::Copying), ledger(LedgerState::Copied)), (1, 1, 1));
    assert_eq!(state(&f, JobState::Succeeded), 1);
    assert_eq!(f.jobs_by_state.iter().map(|(_, n)| n).sum::<u64>(), 4);
}

/// The `traceparent` a job was created under comes back on every read and on the claim
/// (the worker continues the trace from it); jobs created without one have none.
async fn trace_context(s: Arc<dyn Store>) {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let specs = vec![spec("a", "h1", archive("x"), &[]), spec("b", "h2", archive("x"), &[])];
    let (batch, jobs) = s.create_jobs_traced(Some("traced"), &specs, Some(tp)).await.unwrap();
    assert!(batch.is_some());
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j.trace_parent.as_deref() == Some(tp)), "{jobs:?}");
    let plain = create(&s, vec![spec("c", "h3", archive("x"), &[])]).await[0];
    assert_eq!(s.get_job(plain).await.unwrap().unwrap().trace_parent, None);
    assert_eq!(s.get_job(jobs[1].id).await.unwrap().unwrap().trace_parent.as_deref(), Some(tp));
    let listed = s.list_jobs(&JobFilter::default()).await.unwrap();
    let by_id: HashMap<i64, Option<String>> = listed.into_iter().map(|j| (j.id, j.trace_parent)).collect();
    assert_eq!(by_id[&jobs[0].id].as_deref(), Some(tp));
    assert_eq!(by_id[&plain], None);
    let claimed = s.claim_job("w1", Duration::from_secs(60), WIDE).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, jobs[0].id);
    assert_eq!(claimed.job.trace_parent.as_deref(), Some(tp));
}

/// A rotated refresh token replaces the stored one, and nothing else: only while the stored
/// one is still the token the caller had (compare-and-swap), only in a refresh-token grant,
/// in any job state, and without a job event.
async fn refresh_token_rotation(s: Arc<dyn Store>) {
    let sealer = sealer();
    let seal = |t: &str| sealer.seal(&SecretString::from(t.to_owned()));
    let (rt1, rt2, rt3) = (seal("rt-1"), seal("rt-2"), seal("rt-3"));
    let secret = seal("client-secret");
    let grant = |refresh_token: mailferry_model::Sealed| {
        Box::new(OAuth2Spec::RefreshToken {
            token_url: "https://login.example.com/token".into(),
            client_id: "client-1".into(),
            client_secret: Some(secret.clone()),
            refresh_token,
            scope: Some("imap offline_access".into()),
        })
    };
    let oauth_target = |refresh_token| TargetSpec::Imap {
        host: "outlook.example.com".into(),
        port: 993,
        security: Security::Tls,
        username: "o365".into(),
        password: None,
        auth: Default::default(),
        folder: "Archive".into(),
        flags: vec!["\\Seen".into()],
        oauth2: Some(grant(refresh_token)),
        tls_pin: None,
    };
    let original = spec("alice", "pop.example.com", oauth_target(rt1.clone()), &[("team", "a")]);
    let ids = create(
        &s,
        vec![
            original.clone(),
            spec("bob", "pop.example.com", imap("bob", "imap.example.com", "INBOX"), &[]),
            spec("carol", "pop.example.com", archive("vault"), &[]),
        ],
    )
    .await;
    let (job, password_job, archive_job) = (ids[0], ids[1], ids[2]);
    let events = s.job_events(job, 0, 100).await.unwrap().len();

    // Rotation: the new token is stored, everything else is as it was.
    assert!(s.replace_refresh_token(job, &rt1, &rt2).await.unwrap());
    let stored = s.get_job(job).await.unwrap().unwrap();
    let mut expected = original.clone();
    expected.target = oauth_target(rt2.clone());
    assert_eq!(stored.spec.as_ref(), Some(&expected));
    let Some(TargetSpec::Imap { oauth2: Some(g), .. }) = stored.spec.map(|s| s.target) else { unreachable!() };
    let OAuth2Spec::RefreshToken { refresh_token, .. } = *g else { unreachable!() };
    assert_eq!(sealer.open(&refresh_token).unwrap().expose_secret(), "rt-2");
    assert_eq!(stored.state, JobState::Queued);
    assert_eq!(s.job_events(job, 0, 100).await.unwrap().len(), events, "a spec change is not a job event");

    // A stale caller (it still holds rt-1, or sealed rt-2 itself again) changes nothing.
    assert!(!s.replace_refresh_token(job, &rt1, &rt3).await.unwrap());
    assert!(!s.replace_refresh_token(job, &seal("rt-2"), &rt3).await.unwrap());
    assert_eq!(s.get_job(job).await.unwrap().unwrap().spec, Some(expected.clone()));

    // While the job runs (leased by a worker) the rotation is saved all the same.
    let claimed = s.claim_job("w1", MINUTE, WIDE).await.unwrap().expect("a claimable job");
    assert_eq!(claimed.job.id, job);
    assert!(s.replace_refresh_token(job, &rt2, &rt3).await.unwrap());
    let running = s.get_job(job).await.unwrap().unwrap();
    assert_eq!((running.state, running.lease_owner.as_deref()), (JobState::Running, Some("w1")));
    expected.target = oauth_target(rt3.clone());
    assert_eq!(running.spec, Some(expected));

    // No refresh-token grant, or no job: false, nothing changed.
    let before = s.get_job(password_job).await.unwrap().unwrap().spec;
    assert!(!s.replace_refresh_token(password_job, &rt3, &rt1).await.unwrap());
    assert_eq!(s.get_job(password_job).await.unwrap().unwrap().spec, before);
    assert!(!s.replace_refresh_token(archive_job, &rt3, &rt1).await.unwrap());
    assert!(!s.replace_refresh_token(999_999, &rt3, &rt1).await.unwrap());
    let cli = s.ensure_job("pop3://x@h:995 -> imap://y@h:993/INBOX", "x", "y").await.unwrap();
    assert!(!s.replace_refresh_token(cli, &rt3, &rt1).await.unwrap());
}
