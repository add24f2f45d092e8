//! The worker pool under faults: a panic inside a job's run ends the job `failed` with a
//! reason and hands its lease back; it is never left `running` under a lease that a
//! detached heartbeat renews forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailferry_archive::KeyRing;
use mailferry_engine::{Archives, EngineConfig, Worker, WorkerConfig};
use mailferry_model::{
    JobOptions, JobSpec, JobState, NetworkPolicy, Pop3Auth, Sealer, Security, SourceSpec, TargetSpec,
};
use mailferry_store::{ClaimLimits, SqliteStore, Store};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// A job spec for a source at `pop_port` and a destination nobody listens on: the tests
/// below never get as far as the destination.
pub fn spec(sealer: &Sealer, pop_port: u16) -> JobSpec {
    JobSpec {
        source: SourceSpec {
            host: "127.0.0.1".into(),
            port: pop_port,
            security: Security::None,
            username: "panic-user".into(),
            password: sealer.seal(&SecretString::from("p")),
            auth: Pop3Auth::Auto,
            tls_pin: None,
        },
        target: TargetSpec::Imap {
            host: "127.0.0.1".into(),
            port: 9,
            security: Security::None,
            username: "dst".into(),
            password: Some(sealer.seal(&SecretString::from("dst-pw"))),
            auth: Default::default(),
            folder: "INBOX".into(),
            flags: vec![],
            oauth2: None,
            tls_pin: None,
        },
        options: JobOptions::default(),
        labels: Default::default(),
        schedule: None,
    }
}

pub fn worker(store: Arc<dyn Store>, sealer: &Sealer, id: &str, lease: Duration, state: &std::path::Path) -> Worker {
    let config = WorkerConfig {
        id: id.into(),
        concurrency: 1,
        lease,
        poll_interval: Duration::from_millis(50),
        limits: ClaimLimits { per_source_host: 8, per_target_host: 8 },
        engine: EngineConfig::default(),
        plaintext_allowed: Arc::new(|_| true),
        extra_roots_pem: None,
        network: Arc::new(NetworkPolicy::default()),
        archives: Arc::new(Archives::new(state.join("archives"), KeyRing::none())),
    };
    Worker::new(store, sealer.clone(), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_a_job_fails_the_job_and_releases_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("state.db")).await.unwrap());
    let sealer = Sealer::new(&[7u8; 32]).unwrap();
    let (_, jobs) = store.create_jobs(None, &[spec(&sealer, 9)]).await.unwrap();
    let id = jobs[0].id;

    // Stands in for any bug, or bytes no parser expected: the run panics at its start.
    fail::cfg("engine::attempt", "return(panic-user)").unwrap();
    let lease = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(worker(Arc::clone(&store), &sealer, "w-panic", lease, dir.path()).run(shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = store.get_job(id).await.unwrap().unwrap();
        if job.state.is_terminal() || Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    fail::remove("engine::attempt");
    assert_eq!(job.state, JobState::Failed, "a panicking run must end its job failed, not leave it {:?}", job.state);
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("panicked") && error.contains("injected by the test for panic-user"), "the reason names the panic: {error}");
    assert_eq!((job.lease_owner, job.lease_expires_at), (None, None), "the lease is released");

    // Nothing renews a lease for it any more, and no worker runs it again.
    tokio::time::sleep(lease * 2).await;
    let again = store.get_job(id).await.unwrap().unwrap();
    assert_eq!((again.state, again.runs), (JobState::Failed, 1), "the failed job stays failed");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), pool).await.expect("the worker stops").unwrap();
}
