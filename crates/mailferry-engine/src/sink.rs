//! Where a drain delivers: an IMAP folder or a compliance archive. The pipeline is the same;
//! what "durably confirmed" means differs (a tagged OK to APPEND; an fsynced blob plus a
//! committed archive index row), and so do the exactly-once lookups.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use mailferry_archive::{
    Archive, ArchiveConfig, ArchiveError, BlobStoreConfig, IndexConfig, KeyRing, MessageSource, Occurrence,
};
use mailferry_imap::{AppendBody, AppendMessage, AppendOutcome, Appender};
use mailferry_model::ImapEndpoint;
use tokio::sync::Mutex;

/// The destination of a drain.
#[derive(Debug, Clone)]
pub enum Target {
    Imap(ImapEndpoint),
    Archive(ArchiveTarget),
}

/// A named archive, opened once per process and shared.
#[derive(Debug, Clone)]
pub struct ArchiveTarget {
    pub name: String,
    pub archive: Arc<Archive>,
}

impl Target {
    /// `imap user@host:port/folder` or `archive NAME`; never a secret.
    pub fn display(&self) -> String {
        match self {
            Self::Imap(ep) => ep.display(),
            Self::Archive(a) => format!("archive {}", a.name),
        }
    }

    /// `imap` or `archive`, for spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Imap(_) => "imap",
            Self::Archive(_) => "archive",
        }
    }

    /// The ledger identity part of the target.
    pub fn key(&self) -> String {
        match self {
            Self::Imap(t) => format!("imap://{}@{}:{}/{}", t.username, t.host, t.port, t.folder),
            Self::Archive(a) => format!("archive:{}", a.name),
        }
    }

    /// IMAP needs CRLF; an archive keeps the retrieved bytes exactly (its identity is their
    /// SHA-256, DESIGN.md §3).
    pub fn normalizes_line_endings(&self) -> bool {
        matches!(self, Self::Imap(_))
    }
}

/// The open destination during a run (one per run, so the size difference between the
/// variants does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Sink {
    Imap(Appender),
    Archive { archive: Arc<Archive>, source_host: String, account: String, job: i64, run: i64 },
}

impl Sink {
    pub(crate) fn append_limit(&self) -> Option<u64> {
        match self {
            Self::Imap(a) => a.capabilities().append_limit,
            Self::Archive { .. } => None,
        }
    }

    pub(crate) fn precheck(&self, msg: &AppendMessage) -> Option<String> {
        match self {
            Self::Imap(a) => a.precheck(msg),
            Self::Archive { .. } => None,
        }
    }

    pub(crate) fn flags(&self, configured: &[String]) -> Vec<String> {
        match self {
            Self::Imap(_) => configured.to_vec(),
            Self::Archive { .. } => Vec::new(),
        }
    }

    /// Deliver a batch: one outcome per message. `Err` means the destination failed
    /// part-way: it carries the outcomes the destination gave before failing (the messages
    /// it confirmed are stored and must be recorded as copied); the unknown ones stay
    /// `copying` for the next run to resolve.
    pub(crate) async fn deliver(&mut self, msgs: &[AppendMessage], uidls: &[String]) -> Result<Vec<AppendOutcome>, DeliverError> {
        match self {
            Self::Imap(a) => a
                .append_batch(msgs)
                .await
                .map_err(|e| DeliverError { outcomes: e.outcomes, error: SinkError::Imap(e.error) }),
            Self::Archive { archive, source_host, account, job, run } => {
                let mut outcomes = Vec::with_capacity(msgs.len());
                for (msg, uidl) in msgs.iter().zip(uidls) {
                    let source = match &msg.body {
                        AppendBody::Memory(v) => MessageSource::from(v.clone()),
                        AppendBody::Spooled { path, .. } => MessageSource::from(path.to_path_buf()),
                    };
                    let occurrence = Occurrence {
                        source_host: source_host.clone(),
                        account: account.clone(),
                        uidl: uidl.clone(),
                        job_id: Some(*job),
                        run_id: Some(*run),
                        retrieved_at: Utc::now(),
                    };
                    // put() returns once the blob is fsynced and the index row committed.
                    match archive.put(source, occurrence).await {
                        Ok(_) => outcomes.push(AppendOutcome::Appended { uid: None, uid_validity: None }),
                        Err(ArchiveError::OccurrenceConflict(c)) => outcomes.push(AppendOutcome::Refused(format!(
                            "the archive already holds different bytes for this UIDL ({})",
                            c.existing
                        ))),
                        Err(e) => {
                            // The ones before are committed; this one and the rest are unknown.
                            let mut known: Vec<Option<AppendOutcome>> = outcomes.into_iter().map(Some).collect();
                            known.resize(msgs.len(), None);
                            return Err(DeliverError { outcomes: known, error: SinkError::Archive(e) });
                        }
                    }
                }
                Ok(outcomes)
            }
        }
    }

    pub(crate) async fn close(self) {
        if let Self::Imap(a) = self {
            a.logout().await;
        }
    }
}

#[derive(Debug)]
pub(crate) enum SinkError {
    Imap(mailferry_imap::ImapError),
    Archive(ArchiveError),
}

/// A delivery that failed part-way.
#[derive(Debug)]
pub(crate) struct DeliverError {
    /// One per message, in order: `Some` where the destination answered (stored, or
    /// refused), `None` where the outcome is unknown.
    pub(crate) outcomes: Vec<Option<AppendOutcome>>,
    pub(crate) error: SinkError,
}

/// Archives by name, each opened once per process (the search index holds a writer lock).
/// Every archive has a directory under `root` for its spool and search index; where its
/// index and blobs live is the same for all archives of a deployment: local (SQLite +
/// files under the directory, one process) or shared (a PostgreSQL schema per archive +
/// S3-compatible storage, for workers on many machines).
#[derive(Debug)]
pub struct Archives {
    root: PathBuf,
    keys: KeyRing,
    index: IndexConfig,
    blobs: BlobStoreConfig,
    open: Mutex<HashMap<String, Arc<Archive>>>,
    /// The shared index's registry, connected on first use.
    registry: tokio::sync::OnceCell<mailferry_archive::SharedRegistry>,
}

impl Archives {
    pub fn new(root: PathBuf, keys: KeyRing) -> Self {
        Self {
            root,
            keys,
            index: IndexConfig::Local,
            blobs: BlobStoreConfig::Local,
            open: Mutex::new(HashMap::new()),
            registry: tokio::sync::OnceCell::new(),
        }
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
        let mut open = self.open.lock().await;
        if let Some(a) = open.get(name) {
            return Ok(Arc::clone(a));
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
        let archive = Arc::new(Archive::open(config).await?);
        open.insert(name.to_owned(), Arc::clone(&archive));
        Ok(archive)
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
            let registry = self.registry.get_or_try_init(|| mailferry_archive::SharedRegistry::connect(url)).await?;
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
