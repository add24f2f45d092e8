//! Archive verify and export runs started over the API.
//!
//! Issue 4 asks for verify to "run as a job with progress". This is the light form of that:
//! the run is a tokio task in the serving process, its progress and result live in this
//! in-memory registry, and clients poll `GET …/verify/{id}` (or `…/exports/{id}`). Runs are
//! not persisted: a restart forgets them (the archive's own event log still records every
//! verify and export), and an interrupted run is simply started again. The registry keeps
//! the latest [`MAX_RUNS`] runs; when a finished export is evicted its file is deleted.

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

    fn running(&self) -> bool {
        matches!(self.outcome().0, Outcome::Running)
    }
}

/// Every run this process knows about, by id.
#[derive(Debug, Default)]
pub struct ArchiveTasks {
    next: AtomicU64,
    runs: Mutex<BTreeMap<u64, Arc<TaskRun>>>,
}

impl ArchiveTasks {
    /// Register a new running task. `path` is chosen from the id by `path_for`.
    pub fn start(&self, archive: &str, kind: TaskKind, path_for: impl FnOnce(u64) -> Option<PathBuf>) -> Arc<TaskRun> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let run = Arc::new(TaskRun {
            id,
            archive: archive.to_owned(),
            kind,
            started_at: Utc::now(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            state: Mutex::new((Outcome::Running, None)),
            path: path_for(id),
        });
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert(id, Arc::clone(&run));
        // Oldest first (ids grow); keep every running one.
        let excess = runs.len().saturating_sub(MAX_RUNS);
        let evict: Vec<u64> = runs.iter().filter(|(_, r)| !r.running()).map(|(id, _)| *id).take(excess).collect();
        for id in evict {
            if let Some(old) = runs.remove(&id) {
                if let Some(p) = &old.path {
                    let _ = std::fs::remove_file(p);
                    let _ = std::fs::remove_file(sidecar(p));
                }
            }
        }
        run
    }

    /// The run `id` of `kind` on `archive`, if this process has it.
    pub fn get(&self, archive: &str, kind: TaskKind, id: u64) -> Option<Arc<TaskRun>> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(&id).filter(|r| r.archive == archive && r.kind == kind).cloned()
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
        let a = tasks.start("legal", TaskKind::Verify, |_| None);
        assert!(tasks.get("legal", TaskKind::Verify, a.id).is_some());
        assert!(tasks.get("other", TaskKind::Verify, a.id).is_none());
        assert!(tasks.get("legal", TaskKind::Export, a.id).is_none());
        a.finish(Outcome::Failed("x".into()));
        for _ in 0..MAX_RUNS {
            tasks.start("legal", TaskKind::Verify, |_| None).finish(Outcome::Failed("y".into()));
        }
        assert!(tasks.get("legal", TaskKind::Verify, a.id).is_none(), "the oldest finished run is evicted");
        let running = tasks.start("legal", TaskKind::Verify, |_| None);
        assert!(matches!(running.outcome().0, Outcome::Running));
    }
}
