//! Archive verify and export runs started over the API.
//!
//! Issue 4 asks for verify to "run as a job with progress". The run is a tokio task in the
//! serving process; this registry holds the live ones (progress counters, outcome) and the
//! archive's index holds the record of every run (`Archive::run_started` / `run_progress` /
//! `run_finished`), so `GET …/verify/{id}` (or `…/exports/{id}`) answers after a restart and
//! from any API process sharing the index; a run whose process died shows as interrupted.
//! Ids are the records' ids, per archive. The registry keeps the latest [`MAX_RUNS`] runs;
//! when a finished export is evicted here its file stays, still downloadable through the
//! record, until it expires.
//!
//! Limits a caller cannot exhaust: at most `archive_max_concurrent_runs` runs per archive
//! at once ([`ArchiveTasks::reserve`] here, plus the running records of other processes),
//! and export files are deleted `archive_export_ttl_secs` after they were written
//! ([`spawn_export_sweeper`]); their download then answers 410.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

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
    /// Places taken per archive by runs of this process (see [`ArchiveTasks::reserve`]).
    active: Arc<Mutex<HashMap<String, usize>>>,
}

/// One of an archive's places for a concurrent run, held by the run's task in this process
/// for as long as it runs; freed on drop.
#[derive(Debug)]
pub struct Slot {
    active: Arc<Mutex<HashMap<String, usize>>>,
    archive: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = active.get_mut(&self.archive) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                active.remove(&self.archive);
            }
        }
    }
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

    /// Takes one of `limit` places for a run on `archive` in this process; `None` when
    /// every place is taken. Atomic, unlike counting the runs: two requests at once cannot
    /// both take the last place.
    pub fn reserve(&self, archive: &str, limit: usize) -> Option<Slot> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let n = active.entry(archive.to_owned()).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot { active: Arc::clone(&self.active), archive: archive.to_owned() })
    }

    /// Whether this process runs (or is starting) run `id` of `archive`.
    pub fn is_running(&self, archive: &str, id: u64) -> bool {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(&(archive.to_owned(), id)).is_some_and(|r| r.is_running())
    }

    /// The run `id` of `kind` on `archive`, if this process has it.
    pub fn get(&self, archive: &str, kind: TaskKind, id: u64) -> Option<Arc<TaskRun>> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.get(&(archive.to_owned(), id)).filter(|r| r.kind == kind).cloned()
    }
}

/// Whether an export that finished at `finished` has outlived `ttl` at `now`.
pub fn expired(finished: chrono::DateTime<Utc>, ttl: Duration, now: chrono::DateTime<Utc>) -> bool {
    chrono::Duration::from_std(ttl).is_ok_and(|ttl| now >= finished + ttl)
}

/// `86400` → `24h`, `90` → `90 s`: a TTL as the 410 answer names it.
pub fn fmt_ttl(ttl: Duration) -> String {
    let s = ttl.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Deletes an export's file and its manifest, if present.
pub fn remove_export(path: &Path) {
    for p in [path.to_path_buf(), sidecar(path)] {
        match std::fs::remove_file(&p) {
            Ok(()) => tracing::info!(file = %p.display(), "expired archive export deleted"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "cannot delete an expired archive export"),
        }
    }
}

/// Every `ttl / 4` (between 1 s and 10 min), deletes the export files under
/// `<root>/<archive>/exports/` not written to for `ttl`, except those of runs this process
/// is still running. Works on the files, not the archives, so idle archives stay closed.
/// Ends when `tasks` is dropped.
pub fn spawn_export_sweeper(root: PathBuf, tasks: &Arc<ArchiveTasks>, ttl: Duration) {
    let tasks: Weak<ArchiveTasks> = Arc::downgrade(tasks);
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(tasks) = tasks.upgrade() else { return };
            let root = root.clone();
            let _ = tokio::task::spawn_blocking(move || sweep_exports(&root, &tasks, ttl, SystemTime::now())).await;
        }
    });
}

/// One sweep (see [`spawn_export_sweeper`]); how many files it deleted.
pub fn sweep_exports(root: &Path, tasks: &ArchiveTasks, ttl: Duration, now: SystemTime) -> usize {
    let mut deleted = 0;
    let archives = std::fs::read_dir(root).into_iter().flatten().flatten();
    for archive in archives {
        let Ok(name) = archive.file_name().into_string() else { continue };
        let files = std::fs::read_dir(archive.path().join("exports")).into_iter().flatten().flatten();
        for file in files {
            let path = file.path();
            let Some(id) = export_id(&path) else { continue };
            // Written to within the TTL (or being written by another process sharing the
            // directory: it writes as it goes), or still running here: kept.
            let modified = file.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() < ttl || tasks.is_running(&name, id) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    deleted += 1;
                    tracing::info!(archive = %name, export = id, file = %path.display(), "expired archive export deleted");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(archive = %name, file = %path.display(), error = %e, "cannot delete an expired archive export"),
            }
        }
    }
    deleted
}

/// The run id in `export-<stamp>-<id>.<ext>` (or its `.sha256` manifest).
fn export_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let name = name.strip_suffix(".sha256").unwrap_or(name);
    let stem = name.strip_prefix("export-")?.rsplit_once('.')?.0;
    stem.rsplit_once('-')?.1.parse().ok()
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

    #[test]
    fn concurrent_runs_are_capped_per_archive_and_places_freed_when_runs_end() {
        let tasks = ArchiveTasks::default();
        let a = tasks.reserve("legal", 2).expect("first");
        let b = tasks.reserve("legal", 2).expect("second");
        assert!(tasks.reserve("legal", 2).is_none(), "a third run on the same archive");
        let other = tasks.reserve("other", 2).expect("another archive has its own places");
        drop(a);
        let c = tasks.reserve("legal", 2).expect("a place was freed");
        assert!(tasks.reserve("legal", 2).is_none());
        drop((b, c, other));
        assert!(tasks.active.lock().unwrap().is_empty(), "nothing left behind");
        assert!(tasks.reserve("legal", 0).is_none(), "0: no runs at all");
    }

    #[test]
    fn expired_exports_are_swept_except_running_ones() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("legal/exports");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |id: u64, ext: &str| dir.join(format!("export-20250101T000000Z-{id}.{ext}"));
        for p in [file(1, "mbox"), sidecar(&file(1, "mbox")), file(2, "zip"), file(3, "mbox"), dir.join("notes.txt")] {
            std::fs::write(p, b"x").unwrap();
        }
        let tasks = ArchiveTasks::default();
        tasks.start("legal", TaskKind::Export, 3, Some(file(3, "mbox")));
        let ttl = Duration::from_secs(3600);
        assert_eq!(sweep_exports(root.path(), &tasks, ttl, SystemTime::now()), 0, "younger than the TTL");
        let later = SystemTime::now() + ttl + Duration::from_secs(1);
        assert_eq!(sweep_exports(root.path(), &tasks, ttl, later), 3);
        assert!(!file(1, "mbox").exists() && !sidecar(&file(1, "mbox")).exists() && !file(2, "zip").exists());
        assert!(file(3, "mbox").exists(), "still being written by this process");
        assert!(dir.join("notes.txt").exists(), "not an export");
        assert_eq!(export_id(&sidecar(&file(12, "mbox"))), Some(12));
        assert_eq!((fmt_ttl(Duration::from_secs(86400)), fmt_ttl(Duration::from_secs(120)), fmt_ttl(Duration::from_secs(2))),
            ("24h".into(), "2 min".into(), "2 s".into()));
    }
}
