//! The registry of open archives: each archive opened once per process (its search index
//! holds a writer lock), closed again when idle. Workers, the API and the CLI share it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::{Archive, ArchiveConfig, ArchiveError, BlobStoreConfig, IndexConfig, KeyRing};

/// How long an archive stays open in the registry without use, and how many may be open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenLimits {
    /// An archive nobody but the registry has held for this long is closed (its index
    /// pool, search index and files released); the next use opens it again.
    pub idle: Duration,
    /// Archives open at most: opening one more closes the least recently used ones that
    /// nobody else holds. Archives in use (a running job, an API request, a verify or
    /// export run) are never closed, so the count may exceed this while they are.
    pub max_open: usize,
}

impl Default for OpenLimits {
    fn default() -> Self {
        Self { idle: Duration::from_secs(600), max_open: 64 }
    }
}

/// An open archive and when it was last handed out or seen in use.
#[derive(Debug)]
struct Entry {
    archive: Arc<Archive>,
    last_used: Instant,
}

type OpenMap = Mutex<HashMap<String, Entry>>;

/// Archives by name, each opened once per process (the search index holds a writer lock).
/// Every archive has a directory under `root` for its spool and search index; where its
/// index and blobs live is the same for all archives of a deployment: local (SQLite +
/// files under the directory, one process) or shared (a PostgreSQL schema per archive +
/// S3-compatible storage, for workers on many machines).
///
/// Job specs name archives, so any write-scope token can make a process open one more:
/// archives are closed again when idle, and at most [`OpenLimits::max_open`] unused ones
/// stay open. Only the registry's own reference is ever dropped, and only when the
/// `Arc`'s strong count says nobody else holds it, so no two instances of one archive
/// (two search-index writers) are ever open in one process.
#[derive(Debug)]
pub struct Archives {
    root: PathBuf,
    keys: KeyRing,
    index: IndexConfig,
    blobs: BlobStoreConfig,
    open: Arc<OpenMap>,
    limits: OpenLimits,
    /// The task closing idle archives, started on first use (it needs a runtime).
    reaper: std::sync::OnceLock<()>,
    /// The shared index's registry, connected on first use.
    registry: tokio::sync::OnceCell<crate::SharedRegistry>,
    /// Open archives with [`Archive::open_read_only`] (see [`Archives::read_only`]).
    read_only: bool,
}

impl Archives {
    pub fn new(root: PathBuf, keys: KeyRing) -> Self {
        Self {
            root,
            keys,
            index: IndexConfig::Local,
            blobs: BlobStoreConfig::Local,
            open: Arc::new(Mutex::new(HashMap::new())),
            limits: OpenLimits::default(),
            reaper: std::sync::OnceLock::new(),
            registry: tokio::sync::OnceCell::new(),
            read_only: false,
        }
    }

    /// Open every archive read-only ([`Archive::open_read_only`]: no search-index writer
    /// lock), for the CLI's verify, stats, search and export beside a running service.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Keep every archive's index in this database instead of beside its directory.
    pub fn with_index(mut self, index: IndexConfig) -> Self {
        self.index = index;
        self
    }

    /// Store blobs here (S3: each archive under its own prefix, by default its name).
    pub fn with_blobs(mut self, blobs: BlobStoreConfig) -> Self {
        self.blobs = blobs;
        self
    }

    /// When idle archives are closed, and how many may stay open.
    pub fn with_open_limits(mut self, limits: OpenLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether every archive's index is local (SQLite beside it: one writing process).
    pub fn is_local(&self) -> bool {
        matches!(self.index, IndexConfig::Local)
    }

    /// The directory holding one directory per archive.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Archive names are path components: letters, digits, `.`, `_`, `-`, at most 64.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    pub async fn get(&self, name: &str) -> Result<Arc<Archive>, ArchiveError> {
        if !Self::valid_name(name) {
            return Err(ArchiveError::Config(format!("invalid archive name {name:?}")));
        }
        self.start_reaper();
        let mut open = self.open.lock().await;
        if let Some(e) = open.get_mut(name) {
            e.last_used = Instant::now();
            return Ok(Arc::clone(&e.archive));
        }
        let mut blobs = self.blobs.clone();
        if let BlobStoreConfig::S3(s3) = &mut blobs {
            // One bucket for all archives: each under `<prefix>/<name>` (or just `<name>`).
            s3.prefix = Some(match &s3.prefix {
                Some(p) => format!("{}/{name}", p.trim_end_matches('/')),
                None => name.to_owned(),
            });
        }
        let config = ArchiveConfig::local(name, self.root.join(name))
            .with_keys(self.keys.clone())
            .with_index(self.index.clone())
            .with_blobs(blobs);
        let archive = Arc::new(if self.read_only {
            Archive::open_read_only(config).await?
        } else {
            Archive::open(config).await?
        });
        open.insert(name.to_owned(), Entry { archive: Arc::clone(&archive), last_used: Instant::now() });
        if open.len() > self.limits.max_open {
            close_least_recently_used(&mut open, self.limits.max_open).await;
        }
        Ok(archive)
    }

    /// Closes the archives nobody but the registry has held for [`OpenLimits::idle`]; how
    /// many. (A task started on first use does this periodically.)
    pub async fn close_idle(&self) -> usize {
        close_idle(&self.open, self.limits.idle).await
    }

    /// How many archives the registry holds open.
    pub async fn open_count(&self) -> usize {
        self.open.lock().await.len()
    }

    /// Starts the task closing idle archives. It holds only a weak reference to the open
    /// archives: it ends when this registry is dropped.
    fn start_reaper(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.reaper.get_or_init(|| {
            let open: Weak<OpenMap> = Arc::downgrade(&self.open);
            let idle = self.limits.idle;
            let every = (idle / 2).clamp(Duration::from_millis(10), Duration::from_secs(60));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(open) = open.upgrade() else { return };
                    close_idle(&open, idle).await;
                }
            });
        });
    }

    /// Whether archive `name` exists: open in this process already, or listed by [`names`].
    pub async fn exists(&self, name: &str) -> Result<bool, ArchiveError> {
        if self.open.lock().await.contains_key(name) {
            return Ok(true);
        }
        Ok(self.names().await?.iter().any(|n| n == name))
    }

    /// Names of the archives that exist: on disk for local ones, in the shared registry
    /// for a shared index (archives created by any worker on any machine).
    pub async fn names(&self) -> Result<Vec<String>, ArchiveError> {
        if let IndexConfig::Postgres(url) = &self.index {
            let registry = self.registry.get_or_try_init(|| crate::SharedRegistry::connect(url)).await?;
            return registry.names().await;
        }
        let mut names: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| Self::valid_name(n))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Whether only the registry holds this archive (nobody can take a new reference to it
/// without the registry's lock, which the caller holds).
fn unheld(e: &Entry) -> bool {
    Arc::strong_count(&e.archive) == 1
}

/// Closes `name`'s archive, which nobody else holds, while the caller holds the registry's
/// lock: the next `get` cannot open a second instance before this one is closed.
async fn close(open: &mut HashMap<String, Entry>, name: &str) {
    let Some(entry) = open.remove(name) else { return };
    match Arc::try_unwrap(entry.archive) {
        Ok(archive) => {
            if let Err(e) = archive.close().await {
                tracing::warn!(archive = %name, error = %e, "closing an idle archive failed");
            } else {
                tracing::debug!(archive = %name, "closed an idle archive");
            }
        }
        // Not reachable under the lock (see `unheld`); keep it rather than lose track.
        Err(archive) => {
            open.insert(name.to_owned(), Entry { archive, last_used: entry.last_used });
        }
    }
}

async fn close_idle(open: &OpenMap, idle: Duration) -> usize {
    let mut open = open.lock().await;
    let now = Instant::now();
    let mut idle_names = Vec::new();
    for (name, e) in open.iter_mut() {
        if !unheld(e) {
            // In use: idle time counts from when the last user let go.
            e.last_used = now;
        } else if now.duration_since(e.last_used) >= idle {
            idle_names.push(name.clone());
        }
    }
    for name in &idle_names {
        close(&mut open, name).await;
    }
    idle_names.len()
}

/// Closes unused archives, least recently used first, until at most `max_open` are open
/// (or only archives in use are left).
async fn close_least_recently_used(open: &mut HashMap<String, Entry>, max_open: usize) {
    let mut unused: Vec<(Instant, String)> =
        open.iter().filter(|(_, e)| unheld(e)).map(|(n, e)| (e.last_used, n.clone())).collect();
    unused.sort();
    let excess = open.len().saturating_sub(max_open);
    for (_, name) in unused.into_iter().take(excess) {
        close(open, &name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Archive, Occurrence};
    use chrono::Utc;

    fn occurrence(uidl: &str) -> Occurrence {
        Occurrence {
            source_host: "pop.example.com".into(),
            account: "alice".into(),
            uidl: uidl.into(),
            job_id: None,
            run_id: None,
            retrieved_at: Utc::now(),
        }
    }

    async fn searchable(a: &Archive) -> u64 {
        a.search(&crate::SearchQuery::default(), 10, None).await.expect("search").total
    }

    #[tokio::test]
    async fn unused_archives_are_closed_when_idle_or_over_the_cap_and_held_ones_never() {
        let dir = tempfile::tempdir().unwrap();
        let idle = Duration::from_millis(300);
        let archives = Archives::new(dir.path().join("archive"), KeyRing::default())
            .with_open_limits(OpenLimits { idle, max_open: 2 });

        // "held" is in use (as by a running job) the whole time.
        let held = archives.get("held").await.unwrap();
        let b = archives.get("b").await.unwrap();
        b.put(b"Subject: one\r\n\r\nbody\r\n".to_vec(), occurrence("1")).await.unwrap();
        // Its search index (and the index's writer lock) is open.
        assert_eq!(searchable(&b).await, 1);
        drop(b);
        assert_eq!(archives.open_count().await, 2);

        // A third one is over the cap: the least recently used unheld one (b) is closed.
        let c = archives.get("c").await.unwrap();
        assert_eq!(archives.open_count().await, 2);
        drop(c);
        // Reopening b works: the closed instance released its search-index writer lock.
        let b = archives.get("b").await.unwrap();
        assert_eq!(searchable(&b).await, 1, "reopened with its data");
        assert_eq!(b.stats().await.unwrap().messages, 1);
        drop(b);
        // Over the cap again (held, c, b): c was used least recently.
        assert_eq!(archives.open_count().await, 2);

        // Idle: the background task closes b; held stays open past the idle time.
        tokio::time::sleep(idle * 3).await;
        assert_eq!(archives.open_count().await, 1, "only the held archive stays open");
        assert_eq!(archives.close_idle().await, 0);
        assert!(Arc::strong_count(&held) >= 2, "the registry still holds it too");
        let again = archives.get("held").await.unwrap();
        assert!(Arc::ptr_eq(&held, &again), "one instance per archive while held");
        drop((held, again));
        tokio::time::sleep(idle * 3).await;
        assert_eq!(archives.open_count().await, 0, "closed once nobody holds it");
    }
}
