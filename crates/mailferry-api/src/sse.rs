//! What live progress streams (`GET /jobs/{id}/events`) share: a cap on open streams, per
//! token and in total ([`StreamLimits`]), and one poller per process ([`JobWatcher`]).
//!
//! The poller reads the watched jobs from the store at the `api.sse_poll_ms` cadence
//! (state, counts and new `job_events` rows: three queries per watched job and tick, however
//! many clients watch it) and publishes a [`Snapshot`] per job on a `watch` channel when
//! something changed. Streams subscribe to the jobs they follow; a job nobody watches any
//! more is dropped at the next tick, and the poller task ends when nothing is watched (the
//! next subscription starts it again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use mailferry_model::{JobCounts, JobState};
use mailferry_store::{JobEvent, JobProgress};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Open event streams, counted per token and in total.
#[derive(Debug)]
pub struct StreamLimits {
    per_token: usize,
    total: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_token: HashMap<i64, usize>,
}

/// Why a stream was refused: which cap it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    PerToken(usize),
    Total(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PerToken(n) => write!(f, "this token already has {n} open event streams (api.sse_max_per_token); close one first"),
            Self::Total(n) => write!(f, "the server already serves {n} event streams (api.sse_max_total); try again later"),
        }
    }
}

/// One open stream's place; dropping it (the stream ended or its client went away) frees it.
#[derive(Debug)]
pub struct StreamPermit {
    limits: Arc<StreamLimits>,
    token: i64,
}

impl StreamLimits {
    pub fn new(per_token: usize, total: usize) -> Self {
        Self { per_token, total, open: Mutex::default() }
    }

    /// A place for one more stream of `token`, or the cap it would exceed.
    pub fn try_acquire(self: &Arc<Self>, token: i64) -> Result<StreamPermit, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(Refused::Total(self.total));
        }
        let mine = open.by_token.entry(token).or_default();
        if *mine >= self.per_token {
            return Err(Refused::PerToken(self.per_token));
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamPermit { limits: Arc::clone(self), token })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_token.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_token.remove(&self.token);
            }
        }
    }
}

/// What the poller last read about one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// False until the job was polled once.
    pub ready: bool,
    pub state: Option<JobState>,
    pub last_error: Option<String>,
    pub counts: JobCounts,
    /// The job's latest `job_events` rows, oldest first: every row with an id above
    /// `floor` (older ones were dropped to bound memory; a stream that needs them reads
    /// them from the store).
    pub events: Arc<VecDeque<JobEvent>>,
    pub floor: i64,
    /// The job was deleted.
    pub gone: bool,
    /// The store failed [`MAX_FAILURES`] polls in a row.
    pub unavailable: bool,
}

/// Consecutive store failures after which the job's streams give up.
pub const MAX_FAILURES: u32 = 20;
/// `job_events` rows kept per watched job.
const RING: usize = 256;
/// `job_events` rows read per query, and queries per job and tick at most.
const EVENTS_PAGE: u32 = 100;
const EVENT_PAGES_PER_TICK: usize = 10;
/// Jobs polled at once.
const CONCURRENCY: usize = 8;

/// The one poller of a process and the jobs it watches.
#[derive(Debug)]
pub struct JobWatcher {
    poll: Duration,
    inner: Mutex<Watched>,
    /// A job was added: poll it now instead of at the next tick.
    wake: Notify,
}

#[derive(Debug, Default)]
struct Watched {
    jobs: HashMap<i64, watch::Sender<Arc<Snapshot>>>,
    running: bool,
    /// Ticks since the process started (for tests and debugging).
    ticks: u64,
}

impl JobWatcher {
    pub fn new(poll: Duration) -> Self {
        Self { poll, inner: Mutex::default(), wake: Notify::new() }
    }

    /// Follow job `id`: the receiver sees each new snapshot. Starts the poller (reading
    /// `store`) if it is not running; it stops by itself once every receiver is gone.
    pub fn subscribe<S: JobProgress + ?Sized + 'static>(
        self: &Arc<Self>,
        id: i64,
        store: &Arc<S>,
        shutdown: &CancellationToken,
    ) -> watch::Receiver<Arc<Snapshot>> {
        let mut inner = self.lock();
        let (rx, new) = match inner.jobs.get(&id) {
            Some(tx) => (tx.subscribe(), false),
            None => {
                let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
                inner.jobs.insert(id, tx);
                (rx, true)
            }
        };
        if !inner.running {
            inner.running = true;
            tokio::spawn(Arc::clone(self).run(Arc::clone(store), shutdown.clone()));
        }
        drop(inner);
        if new {
            self.wake.notify_one();
        }
        rx
    }

    /// Jobs watched now.
    pub fn watched(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Whether the poller task is running.
    pub fn running(&self) -> bool {
        self.lock().running
    }

    /// Polling rounds done so far.
    pub fn ticks(&self) -> u64 {
        self.lock().ticks
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run<S: JobProgress + ?Sized + 'static>(self: Arc<Self>, store: Arc<S>, shutdown: CancellationToken) {
        let mut polled: HashMap<i64, PollState> = HashMap::new();
        // A wake-up polls only the jobs added since; the others keep their cadence (a
        // client that keeps connecting cannot delay them).
        let mut next_full = tokio::time::Instant::now();
        loop {
            let only_new = tokio::time::Instant::now() < next_full;
            if !only_new {
                next_full = tokio::time::Instant::now() + self.poll;
            }
            let jobs: Vec<(i64, watch::Sender<Arc<Snapshot>>)> = {
                let mut inner = self.lock();
                inner.jobs.retain(|_, tx| tx.receiver_count() > 0);
                if inner.jobs.is_empty() || shutdown.is_cancelled() {
                    // Under the lock: a subscriber that comes now starts a new poller.
                    inner.running = false;
                    return;
                }
                if !only_new {
                    inner.ticks += 1;
                }
                inner.jobs.iter().map(|(id, tx)| (*id, tx.clone())).collect()
            };
            polled.retain(|id, _| jobs.iter().any(|(j, _)| j == id));
            let mut due = Vec::with_capacity(jobs.len());
            for (id, tx) in jobs {
                match polled.remove(&id) {
                    Some(st) if only_new => {
                        polled.insert(id, st);
                    }
                    st => due.push((id, tx, st.unwrap_or_default())),
                }
            }
            let done: Vec<(i64, PollState)> = futures::stream::iter(due)
                .map(|(id, tx, mut st)| {
                    let store = Arc::clone(&store);
                    async move {
                        if let Some(snapshot) = st.poll(&*store, id).await {
                            tx.send_replace(Arc::new(snapshot));
                        }
                        (id, st)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            polled.extend(done);
            tokio::select! {
                () = tokio::time::sleep_until(next_full) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
}

/// The poller's memory of one job between ticks.
#[derive(Debug, Default)]
struct PollState {
    /// The last `job_events` id read.
    cursor: i64,
    events: VecDeque<JobEvent>,
    floor: i64,
    failures: u32,
    last: Option<Snapshot>,
}

impl PollState {
    /// Read the job; the new snapshot if anything changed.
    async fn poll<S: JobProgress + ?Sized>(&mut self, store: &S, id: i64) -> Option<Snapshot> {
        let next = match self.read(store, id).await {
            Ok(next) => {
                self.failures = 0;
                next
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(job.id = id, error = %e, failures = self.failures, "SSE poll failed");
                if self.failures < MAX_FAILURES {
                    return None;
                }
                Snapshot { ready: true, unavailable: true, ..self.last.clone().unwrap_or_default() }
            }
        };
        if self.last.as_ref() == Some(&next) {
            return None;
        }
        self.last = Some(next.clone());
        Some(next)
    }

    async fn read<S: JobProgress + ?Sized>(&mut self, store: &S, id: i64) -> mailferry_store::Result<Snapshot> {
        let Some(job) = store.get_job(id).await? else {
            return Ok(Snapshot { ready: true, gone: true, ..Snapshot::default() });
        };
        let counts = store.job_counts(id).await?;
        let mut fresh = false;
        for _ in 0..EVENT_PAGES_PER_TICK {
            let page = store.job_events(id, self.cursor, EVENTS_PAGE).await?;
            let full = page.len() == EVENTS_PAGE as usize;
            for event in page {
                self.cursor = event.id;
                self.events.push_back(event);
                fresh = true;
            }
            if !full {
                break;
            }
        }
        while self.events.len() > RING {
            if let Some(old) = self.events.pop_front() {
                self.floor = old.id;
            }
        }
        let events = match &self.last {
            Some(last) if !fresh => Arc::clone(&last.events),
            _ => Arc::new(self.events.clone()),
        };
        Ok(Snapshot {
            ready: true,
            state: Some(job.state),
            last_error: job.last_error,
            counts,
            events,
            floor: self.floor,
            gone: false,
            unavailable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures::future::BoxFuture;
    use mailferry_store::JobRecord;

    use super::*;

    /// A store of two running jobs that counts how often it is read. The methods are
    /// written as `async_trait` expands them.
    #[derive(Default)]
    struct Counting {
        reads: AtomicU64,
    }

    impl JobProgress for Counting {
        fn get_job<'a, 'f>(&'a self, id: i64) -> BoxFuture<'f, mailferry_store::Result<Option<JobRecord>>>
        where
            'a: 'f,
            Self: 'f,
        {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(Some(JobRecord {
                    id,
                    state: JobState::Running,
                    spec: None,
                    source: String::new(),
                    target: String::new(),
                    batch_id: None,
                    labels: Default::default(),
                    created_at: String::new(),
                    updated_at: String::new(),
                    started_at: None,
                    finished_at: None,
                    last_error: None,
                    runs: 1,
                    cancel_requested: false,
                    pause_requested: false,
                    lease_owner: None,
                    lease_expires_at: None,
                    trace_parent: None,
                    task: None,
                    next_run_at: None,
                    cutover: None,
                }))
            })
        }

        fn job_counts<'a, 'f>(&'a self, _id: i64) -> BoxFuture<'f, mailferry_store::Result<JobCounts>>
        where
            'a: 'f,
            Self: 'f,
        {
            Box::pin(async { Ok(JobCounts { listed: 3, ..JobCounts::default() }) })
        }

        fn job_events<'a, 'f>(&'a self, job: i64, after: i64, _limit: u32) -> BoxFuture<'f, mailferry_store::Result<Vec<JobEvent>>>
        where
            'a: 'f,
            Self: 'f,
        {
            let event = JobEvent { id: job * 10, job_id: job, at: String::new(), state: JobState::Running, detail: None };
            Box::pin(async move { Ok(if after < event.id { vec![event] } else { Vec::new() }) })
        }
    }

    #[tokio::test]
    async fn one_poller_reads_each_watched_job_once_a_tick_and_stops_when_nobody_watches() {
        let store = Arc::new(Counting::default());
        let shutdown = CancellationToken::new();
        let watcher = Arc::new(JobWatcher::new(Duration::from_millis(20)));
        // Ten streams on each of two jobs.
        let mut streams: Vec<_> = (0..20).map(|i| watcher.subscribe(1 + i % 2, &store, &shutdown)).collect();
        assert!(watcher.running());
        assert_eq!(watcher.watched(), 2);
        for rx in &mut streams {
            tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| s.ready)).await.unwrap().unwrap();
        }
        let snap = streams[1].borrow().clone();
        assert_eq!((snap.state, snap.counts.listed, snap.events.len()), (Some(JobState::Running), 3, 1));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (reads, ticks) = (store.reads.load(Ordering::SeqCst), watcher.ticks());
        assert!(ticks >= 3, "{ticks}");
        // Two jobs a tick, plus at most one early read of a newly watched job each.
        assert!(reads <= 2 * (ticks + 1) + 2, "{reads} reads in {ticks} ticks for 20 streams on 2 jobs");

        // Half the streams go: both jobs are still watched.
        streams.truncate(10);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(watcher.watched(), 2);
        // Every stream of job 2 goes: only job 1 is read.
        streams.retain(|rx| rx.borrow().events.front().is_some_and(|e| e.job_id == 1));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(watcher.watched(), 1);
        // Nobody watches: the poller ends, and reads stop.
        drop(streams);
        tokio::time::timeout(Duration::from_secs(5), async {
            while watcher.running() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the poller stops");
        assert_eq!(watcher.watched(), 0);
        let after = store.reads.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.reads.load(Ordering::SeqCst), after);

        // A new stream starts it again; shutdown stops it.
        let rx = watcher.subscribe(3, &store, &shutdown);
        assert!(watcher.running());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), async {
            while watcher.running() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the poller stops at shutdown");
        drop(rx);
    }

    #[test]
    fn permits_are_capped_per_token_and_in_total_and_freed_on_drop() {
        let limits = Arc::new(StreamLimits::new(2, 3));
        let a1 = limits.try_acquire(1).unwrap();
        let a2 = limits.try_acquire(1).unwrap();
        assert_eq!(limits.try_acquire(1).unwrap_err(), Refused::PerToken(2));
        let b1 = limits.try_acquire(2).unwrap();
        assert_eq!(limits.try_acquire(3).unwrap_err(), Refused::Total(3));
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let a3 = limits.try_acquire(1).unwrap();
        drop((a2, a3, b1));
        assert_eq!(limits.open(), 0);
        assert!(limits.open.lock().unwrap().by_token.is_empty(), "no entry is kept for tokens without streams");
        assert!(Refused::PerToken(8).to_string().contains("api.sse_max_per_token"));
        assert!(Refused::Total(256).to_string().contains("api.sse_max_total"));
    }
}
