//! Archive verify and export runs, claimed from the queue like migration jobs (issue 15:
//! one job system). The API records the run with the archive and queues an
//! [`ArchiveTask`]; the worker that claims it runs it here under the job's lease, keeps the
//! run's record current (progress, heartbeat) and stores its outcome with the archive, as
//! JSON the API presents: `{"verify": report}`, `{"export": report}` or `{"error": why}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailferry_archive::{Archive, Archives, ExportFormat, SearchQuery};
use mailferry_model::ArchiveTask;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// How often a running verify writes its progress to the run's record.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How a task's run ended.
#[derive(Debug)]
pub(crate) enum TaskEnd {
    /// Finished: the outcome to record, and whether the run failed.
    Finished { outcome: serde_json::Value, failed: bool },
    /// Stopped from outside (cancel, shutdown, lost lease) before it finished.
    Stopped,
}

/// Runs `task` until it finishes or `cancel` fires.
pub(crate) async fn run(archives: &Archives, task: &ArchiveTask, cancel: CancellationToken) -> (Option<Arc<Archive>>, TaskEnd) {
    let archive = match archives.get(task.archive()).await {
        Ok(a) => a,
        Err(e) => return (None, failed(format!("cannot open archive {:?}: {e}", task.archive()))),
    };
    let work = async {
        match task {
            ArchiveTask::Verify { run, who, .. } => verify(&archive, *run, who).await,
            ArchiveTask::Export { who, query, format, file, .. } => export(&archive, who, query, format, file).await,
        }
    };
    let end = tokio::select! {
        end = work => end,
        () = cancel.cancelled() => {
            if let ArchiveTask::Export { file, .. } = task {
                remove_export(file);
            }
            TaskEnd::Stopped
        }
    };
    (Some(archive), end)
}

/// Stores the finished run's outcome with the archive (before the job is released, so a
/// finished job always has its recorded outcome).
pub(crate) async fn record(archive: &Archive, task: &ArchiveTask, outcome: &serde_json::Value, failed: bool) {
    if let Err(e) = archive.run_finished(task.run(), failed, &outcome.to_string()).await {
        tracing::warn!(archive = %task.archive(), run = task.run(), error = %e, "cannot record the finished run");
    }
}

fn failed(why: String) -> TaskEnd {
    TaskEnd::Finished { outcome: json!({ "error": why }), failed: true }
}

async fn verify(archive: &Arc<Archive>, run: i64, who: &str) -> TaskEnd {
    let progress = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    // The record's progress doubles as its heartbeat for readers of older versions.
    let writer = {
        let (archive, progress) = (Arc::clone(archive), Arc::clone(&progress));
        crate::abort::AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let (done, total) = (progress.0.load(Ordering::Relaxed), progress.1.load(Ordering::Relaxed));
                if let Err(e) = archive.run_progress(run, done, total).await {
                    tracing::warn!(run, error = %e, "cannot record the verify run's progress");
                }
            }
        }))
    };
    let seen = Arc::clone(&progress);
    let result = archive
        .verify_with_progress(who, move |done, total| {
            seen.0.store(done, Ordering::Relaxed);
            seen.1.store(total, Ordering::Relaxed);
        })
        .await;
    drop(writer);
    let (done, total) = (progress.0.load(Ordering::Relaxed), progress.1.load(Ordering::Relaxed));
    if let Err(e) = archive.run_progress(run, done, total).await {
        tracing::warn!(run, error = %e, "cannot record the verify run's progress");
    }
    match result {
        Ok(report) => {
            if report.ok() {
                tracing::info!(archive = %report.archive, blobs = report.blobs_checked, "archive verified: no discrepancies");
            } else {
                tracing::error!(archive = %report.archive, discrepancies = report.discrepancies.len(),
                    "ARCHIVE VERIFY FOUND DISCREPANCIES");
            }
            match serde_json::to_value(&report) {
                Ok(report) => TaskEnd::Finished { outcome: json!({ "verify": report }), failed: false },
                Err(e) => failed(format!("cannot record the report: {e}")),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "archive verify failed");
            failed(e.to_string())
        }
    }
}

async fn export(archive: &Archive, who: &str, query: &serde_json::Value, format: &str, file: &str) -> TaskEnd {
    let query: SearchQuery = match serde_json::from_value(query.clone()) {
        Ok(q) => q,
        Err(e) => return failed(format!("invalid export query: {e}")),
    };
    let format: ExportFormat = match serde_json::from_value(json!(format)) {
        Ok(f) => f,
        Err(e) => return failed(format!("invalid export format: {e}")),
    };
    match archive.export(&query, format, std::path::Path::new(file), who).await {
        Ok(report) => {
            tracing::info!(messages = report.messages, "archive export written");
            match serde_json::to_value(&report) {
                Ok(report) => TaskEnd::Finished { outcome: json!({ "export": report }), failed: false },
                Err(e) => failed(format!("cannot record the report: {e}")),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "archive export failed");
            remove_export(file);
            failed(e.to_string())
        }
    }
}

/// Deletes a partial export and its manifest (`<file>.sha256`), if present.
fn remove_export(file: &str) {
    for path in [file.to_owned(), format!("{file}.sha256")] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %path, error = %e, "cannot delete a partial export"),
        }
    }
}
