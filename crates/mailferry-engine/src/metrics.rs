//! What the engine tells the process's metrics registry, through the `metrics` facade:
//! counters and gauges in memory, never I/O (the binary installs the recorder that
//! `/metrics` renders; without one these calls do nothing). Names are documented where
//! they are described, in `mailferry_api::metrics`.

use std::sync::{Arc, Mutex};

pub use mailferry_model::HostLabels;

use tokio::sync::watch;

use crate::progress::Progress;
use crate::error::EngineError;
use crate::sink::Target;

/// `imap` or `archive`: the `target` label.
pub(crate) fn target_kind(target: &Target) -> &'static str {
    match target {
        Target::Imap(_) => "imap",
        Target::Archive(_) => "archive",
    }
}

/// One failed attempt of a job, by class and by the side that failed.
pub(crate) fn attempt_failed(e: &EngineError) {
    let class = if e.class().is_retryable() { "retryable" } else { "fatal" };
    let side = match e {
        EngineError::Source { .. } => "source",
        EngineError::Destination { .. } => "destination",
        EngineError::Archive { .. } => "archive",
        EngineError::Store(_) => "store",
        EngineError::Spool(_) => "spool",
        // Internal errors, and whatever kinds are added later.
        _ => "other",
    };
    metrics::counter!("mailferry_errors_total", "class" => class, "side" => side).increment(1);
}

/// An open mail session, counted in `mailferry_sessions_active{protocol, host}` for as
/// long as this lives (`host` bounded by [`HostLabels::global`]).
#[derive(Debug)]
pub(crate) struct Session {
    protocol: &'static str,
    host: String,
}

impl Session {
    pub(crate) fn open(protocol: &'static str, host: &str) -> Self {
        let host = HostLabels::global().label(host);
        metrics::gauge!("mailferry_sessions_active", "protocol" => protocol, "host" => host.clone()).increment(1.0);
        Self { protocol, host }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        metrics::gauge!("mailferry_sessions_active", "protocol" => self.protocol, "host" => self.host.clone()).decrement(1.0);
    }
}

/// A claim by this process (`takeover`: from an expired lease of another worker).
pub(crate) fn claimed(takeover: bool) {
    metrics::counter!("mailferry_jobs_claimed_total", "takeover" => if takeover { "true" } else { "false" }).increment(1);
    if takeover {
        metrics::counter!("mailferry_lease_takeovers_total").increment(1);
    }
}

/// This process's lease expired and another worker took the job.
pub(crate) fn lease_lost() {
    metrics::counter!("mailferry_leases_lost_total").increment(1);
}

/// A renewal of a job's lease failed (the database did not answer).
pub(crate) fn heartbeat_failed() {
    metrics::counter!("mailferry_lease_renewals_failed_total").increment(1);
}

/// A job's run panicked (a bug): the job was failed and its lease released.
pub(crate) fn panicked() {
    metrics::counter!("mailferry_job_panics_total").increment(1);
}

/// A job handed back in `state`.
pub(crate) fn finished(state: &'static str) {
    metrics::counter!("mailferry_jobs_finished_total", "state" => state).increment(1);
}

/// Turn a run's live progress into message counters as it moves (so a long job's rate is
/// visible while it runs, not only when it ends). Dropping the guard counts what is left
/// and stops the task. `copied` includes copies found already at the destination; bytes
/// are the wire bytes appended.
pub(crate) fn meter(target: &Target, progress: watch::Receiver<Progress>) -> Meter {
    let kind = target_kind(target);
    let seen = Arc::new(Mutex::new(Progress::default()));
    let (mut rx, counted) = (progress.clone(), Arc::clone(&seen));
    let task = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            flush(kind, &rx, &counted);
        }
    });
    Meter { kind, progress, seen, task }
}

#[derive(Debug)]
pub(crate) struct Meter {
    kind: &'static str,
    progress: watch::Receiver<Progress>,
    seen: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.task.abort();
        flush(self.kind, &self.progress, &self.seen);
    }
}

/// Count the progress made since the last flush.
fn flush(kind: &'static str, progress: &watch::Receiver<Progress>, seen: &Mutex<Progress>) {
    let now = progress.borrow().clone();
    let mut seen = seen.lock().expect("meter lock");
    let delta = |a: u64, b: u64| b.saturating_sub(a);
    for (outcome, n, bytes) in [
        ("copied", delta(seen.copied, now.copied), delta(seen.bytes, now.bytes)),
        ("skipped", delta(seen.skipped, now.skipped), 0),
        ("failed", delta(seen.failed, now.failed), 0),
    ] {
        if n > 0 || bytes > 0 {
            metrics::counter!("mailferry_messages_total", "target" => kind, "outcome" => outcome).increment(n);
            metrics::counter!("mailferry_message_bytes_total", "target" => kind, "outcome" => outcome).increment(bytes);
        }
    }
    *seen = now;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn host_labels_are_the_first_n_hosts_then_other() {
        let labels = HostLabels::new(3);
        let got: HashSet<String> = (0..8).map(|i| labels.label(&format!("pop{i}.example.com"))).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(HostLabels::OTHER));
        // Named hosts keep their name, however written; later ones stay `other`.
        assert_eq!(labels.label("POP1.Example.COM."), "pop1.example.com");
        assert_eq!(labels.label("pop7.example.com"), "other");
        assert_eq!(labels.named(), 3);
        labels.set_limit(4);
        assert_eq!(labels.label("pop7.example.com"), "pop7.example.com");
        assert_eq!(labels.label("pop6.example.com"), "other");
    }

    #[test]
    fn session_gauges_are_labelled_by_at_most_the_limit_of_hosts_plus_other() {
        // The global set (other tests may have named hosts in it too): N + 5 hosts give
        // at most N + 1 label values.
        let n = HostLabels::DEFAULT_LIMIT;
        let sessions: Vec<Session> = (0..n + 5).map(|i| Session::open("pop3", &format!("h{i}.session-test.example"))).collect();
        let labels: HashSet<&str> = sessions.iter().map(|s| s.host.as_str()).collect();
        assert!(labels.len() <= n + 1, "{} label values", labels.len());
        assert!(labels.contains(HostLabels::OTHER));
    }
}
