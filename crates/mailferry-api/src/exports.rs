//! Export files: when they expire, and the sweeper that deletes them. Export runs are
//! queued jobs (see `handlers::v1::archives::runs`); their files live under
//! `<root>/<archive>/exports/` and are deleted `archive_export_ttl_secs` after they were
//! written ([`spawn_export_sweeper`]); their download then answers 410.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use mailferry_archive::Archives;

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
/// `<root>/<archive>/exports/` not written to for `ttl` (an export being written is
/// written to as it goes). Works on the files, not the archives, so idle archives stay
/// closed. Ends when `archives` is dropped.
pub fn spawn_export_sweeper(archives: &Arc<Archives>, ttl: Duration) {
    let archives: Weak<Archives> = Arc::downgrade(archives);
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(archives) = archives.upgrade() else { return };
            let root = archives.root().to_path_buf();
            drop(archives);
            let _ = tokio::task::spawn_blocking(move || sweep_exports(&root, ttl, SystemTime::now())).await;
        }
    });
}

/// One sweep (see [`spawn_export_sweeper`]); how many files it deleted.
pub fn sweep_exports(root: &Path, ttl: Duration, now: SystemTime) -> usize {
    let mut deleted = 0;
    let archives = std::fs::read_dir(root).into_iter().flatten().flatten();
    for archive in archives {
        let Ok(name) = archive.file_name().into_string() else { continue };
        let files = std::fs::read_dir(archive.path().join("exports")).into_iter().flatten().flatten();
        for file in files {
            let path = file.path();
            let Some(id) = export_id(&path) else { continue };
            // Written to within the TTL (or being written: a worker writes as it goes): kept.
            let modified = file.metadata().and_then(|m| m.modified()).unwrap_or(now);
            if now.duration_since(modified).unwrap_or_default() < ttl {
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
    fn expired_exports_are_swept_and_fresh_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("legal/exports");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |id: u64, ext: &str| dir.join(format!("export-20250101T000000Z-{id}.{ext}"));
        for p in [file(1, "mbox"), sidecar(&file(1, "mbox")), file(2, "zip"), file(3, "mbox"), dir.join("notes.txt")] {
            std::fs::write(p, b"x").unwrap();
        }
        let ttl = Duration::from_secs(3600);
        assert_eq!(sweep_exports(root.path(), ttl, SystemTime::now()), 0, "younger than the TTL");
        let later = SystemTime::now() + ttl + Duration::from_secs(1);
        // Export 3 is still being written: its file is fresh at `later`.
        std::fs::File::options().write(true).open(file(3, "mbox")).unwrap().set_modified(later).unwrap();
        assert_eq!(sweep_exports(root.path(), ttl, later), 3);
        assert!(!file(1, "mbox").exists() && !sidecar(&file(1, "mbox")).exists() && !file(2, "zip").exists());
        assert!(file(3, "mbox").exists(), "still being written");
        assert!(dir.join("notes.txt").exists(), "not an export");
        assert_eq!(export_id(&sidecar(&file(12, "mbox"))), Some(12));
        assert_eq!((fmt_ttl(Duration::from_secs(86400)), fmt_ttl(Duration::from_secs(120)), fmt_ttl(Duration::from_secs(2))),
            ("24h".into(), "2 min".into(), "2 s".into()));
    }
}
