//! Archive verify and export runs started over the API.
//!
//! Issue 4 asks for verify to "run as a job with progress". The run is a tokio task in the
//! serving process; this registry holds the live ones (progress counters, outcome) and the
//! archive's index holds the record of every run (`Archive::run_started` / `run_progress` /
//! `run_finished`), so `GET …/verify/{id}` (or `…/exports/{id}`) answers after a restart and
//! from any API process sharing the index; a run whose process died shows as interrupted.
//! Ids are the records' ids, per archive. The registry keeps the latest [`MAX_RUNS`] runs;
//! when a finished export is evicted here its file stays until the record's owner removes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mailferry_archive::{ExportReport, VerifyReport};

/// Runs kept in memory (running ones are never evicted).
pub const MAX_RUNS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Verify,
    Export,
}

/// Where a run is.
#[derive(Debug, Clone)]
pub enum Outcome {
    Running,
    Verified(Box<VerifyReport>),
    Exported(Box<ExportReport>),
    Failed(String),
}

/// One verify or export run.
#[derive(Debug)]
pub struct TaskRun {
    pub id: u64,
    pub archive: String,
    pub kind: TaskKind,
    pub started_at: DateTime<Utc>,
    /// Blobs checked so far / to check (verify).
    pub done: AtomicU64,
    pub total: AtomicU64,
    state: Mutex<(Outcome, Option<DateTime<Utc>>)>,
    /// The export file (export runs).
    pub path: Option<PathBuf>,
}

impl TaskRun {
    /// The outcome so far and when the run finished.
    pub fn outcome(&self) -> (Outcome, Option<DateTime<Utc>>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn finish(&self, outcome: Outcome) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (outcome, Some(Utc::now()));
    }

    pub fn progress(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn is_running(&self) -> bool {
        matches!(self.outcome().0, Outcome::Running)
    }
}

/// Every run this process is executing or has executed, by (archive, id).
#[derive(Debug, Default)]
pub struct ArchiveTasks {
    runs: Mutex<BTreeMap<(String, u64), Arc<TaskRun>>>,
}

impl ArchiveTasks {
    /// Register a new running task under its recorded `id`; `path` is its output file.
    pub fn start(&self, archive: &str, kind: TaskKind, id: u64, path: Option<PathBuf>) -> Arc<TaskRun> {
        let run = Arc::new(TaskRun {
            id,
            archive: archive.to_owned(),
            kind,
            started_at: Utc::now(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            state: Mutex::new((Outcome::Running, None)),
            path,
        });
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert((archive.to_owned(), id), Arc::clone(&run));
        // Oldest first; keep every running one. The records stay in the archive's index
        // (and an evicted export's file stays on disk, still downloadable through them).
        let excess = runs.len().saturating_sub(MAX_RUNS);
        let mut finished: Vec<(chrono::DateTime<Utc>, (String, u64))> =
            runs.iter().filter(|(_, r)| !r.is_running()).map(|(k, r)| (r.started_at, k.clone())).collect();
        finished.sort();
        for (_, key) in finished.into_iter().take(excess) {
            runs.remove(&key);
        }
        run
    }

    /// The run `id` of `kind` on `archive`, if this process has it.
    pub fn get(&self, archive: &str, kind: TaskKind, id: u64) -> Option<Arc<TaskRun>> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(&(archive.to_owned(), id)).filter(|r| r.kind == kind).cloned()
    }
}

/// `<file>.sha256`, the manifest an mbox export writes beside itself.
pub fn sidecar(path: &std::path::Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_scoped_to_their_archive_and_kind_and_old_ones_evicted() {
        let tasks = ArchiveTasks::default();
        let a = tasks.start("legal", TaskKind::Verify, 1, None);
        assert!(tasks.get("legal", TaskKind::Verify, a.id).is_some());
        assert!(tasks.get("other", TaskKind::Verify, a.id).is_none());
        assert!(tasks.get("legal", TaskKind::Export, a.id).is_none());
        // Ids are per archive: the same id in another archive is another run.
        let other = tasks.start("other", TaskKind::Verify, 1, None);
        assert_eq!(tasks.get("other", TaskKind::Verify, 1).map(|r| r.archive.clone()).as_deref(), Some("other"));
        assert_eq!(tasks.get("legal", TaskKind::Verify, 1).map(|r| r.archive.clone()).as_deref(), Some("legal"));
        other.finish(Outcome::Failed("z".into()));
        a.finish(Outcome::Failed("x".into()));
        for i in 0..MAX_RUNS as u64 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            tasks.start("legal", TaskKind::Verify, 2 + i, None).finish(Outcome::Failed("y".into()));
        }
        assert!(tasks.get("legal", TaskKind::Verify, a.id).is_none(), "the oldest finished run is evicted");
        let running = tasks.start("legal", TaskKind::Verify, 10_000, None);
        assert!(matches!(running.outcome().0, Outcome::Running));
    }
}
