//! The [`Archive`] handle: open, get (verified), metadata, stats and the event log. Ingest,
//! per-run Merkle roots, retention, Object Lock upkeep, search, verify and export live in
//! their own modules above this one, as further `impl Archive` blocks; the records are in
//! `types.rs` and the index's rows and queries under `index/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sqlx::AnyPool;

use crate::backend::Backend;
use crate::blob;
use crate::chain::{Event, EventKind};
use crate::config::{ArchiveConfig, IndexConfig};
use crate::digest::Digest;
use crate::error::{ArchiveError, IntegrityError, IntegrityKind, Result};
use crate::index::events;
use crate::index::rows::{self, parse_ts};
use crate::keys::KeyRing;
use crate::meta::{self, Extracted};
use crate::search::SearchIndex;
use crate::types::{ArchiveStats, BlobState, MessageRecord, OccurrenceRecord, Tombstone};

/// One named archive. Open it once per process (the search index takes a writer lock);
/// share it behind an `Arc`. All methods take `&self`. [`Archive::open_read_only`] takes
/// no lock, for reading beside the process that holds it.
pub struct Archive {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) spool: PathBuf,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) scan_limit: usize,
    pub(crate) backend: Backend,
    /// The index: SQLite beside a local archive, or a PostgreSQL schema shared by workers.
    pub(crate) db: AnyPool,
    /// `Some(advisory lock key)` when the index is shared through PostgreSQL.
    pub(crate) shared: Option<i64>,
    /// Serialises writers in this process: the event chain needs "read head, append" to be
    /// atomic (across processes a PostgreSQL advisory lock does the same, see
    /// [`Archive::begin_write`]). Readers are never blocked.
    pub(crate) write: tokio::sync::Mutex<()>,
    /// Serialises search catch-up/reindex for a shared archive (see `search_guard`).
    pub(crate) search_sync: tokio::sync::Mutex<()>,
    /// The tantivy index in `<dir>/search`, opened on first use: a worker feeding a shared
    /// archive never opens it (the searching process catches up from the event log).
    pub(crate) search: tokio::sync::OnceCell<SearchIndex>,
    search_dir: PathBuf,
    search_commit_every: usize,
    /// Opened with [`Archive::open_read_only`]: the search index without its writer.
    pub(crate) read_only: bool,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}


impl Archive {
    /// Opens (creating if needed) the archive described by `cfg`, migrates its index and
    /// brings the search index up to date with the SQLite index.
    pub async fn open(cfg: ArchiveConfig) -> Result<Self> {
        Self::open_with(cfg, false).await
    }

    /// Opens the archive for reading beside a process that holds it (a running `serve` or
    /// `worker`): the tantivy search index is opened without an `IndexWriter`, so its
    /// writer lock is not taken, and what that process has not committed to it yet is
    /// indexed into memory from the event log when searched. Reads, search, stats, verify
    /// and export work, and may append their own events (verify, export) to the chain; what
    /// changes the search index (ingest, purge, reindex) needs [`Archive::open`].
    pub async fn open_read_only(cfg: ArchiveConfig) -> Result<Self> {
        Self::open_with(cfg, true).await
    }

    async fn open_with(cfg: ArchiveConfig, read_only: bool) -> Result<Self> {
        if cfg.name.is_empty() || cfg.name.contains(['/', '\\']) {
            return Err(ArchiveError::Config(format!(
                "bad archive name {:?}",
                cfg.name
            )));
        }
        std::fs::create_dir_all(&cfg.dir)?;
        let spool = cfg.dir.join("tmp");
        std::fs::create_dir_all(&spool)?;
        let backend = Backend::open(&cfg)?;
        let (db, shared) = match &cfg.index {
            IndexConfig::Local => (crate::index::open_sqlite(&cfg.dir.join("index.sqlite")).await?, None),
            IndexConfig::Postgres(url) => {
                let (db, key) = crate::index::open_postgres(url.expose(), &cfg.name).await?;
                (db, Some(key))
            }
        };
        let archive = Archive {
            name: cfg.name,
            dir: cfg.dir.clone(),
            spool,
            keys: Arc::new(cfg.keys),
            scan_limit: cfg.metadata_scan_limit,
            backend,
            db,
            shared,
            write: tokio::sync::Mutex::new(()),
            search_sync: tokio::sync::Mutex::new(()),
            search: tokio::sync::OnceCell::new(),
            search_dir: cfg.dir.join("search"),
            search_commit_every: cfg.search_commit_every,
            read_only,
        };
        // Read-only, catching up waits for the first search (verify or stats need none).
        if archive.shared.is_none() && !read_only {
            // A local archive keeps its search index current as it ingests; after a crash
            // it catches up here.
            archive.catch_up_search().await?;
        }
        Ok(archive)
    }

    /// The search index, opened (and its writer lock taken, unless read-only) on first use.
    pub(crate) async fn search_index(&self) -> Result<&SearchIndex> {
        self.search
            .get_or_try_init(|| async {
                if self.read_only {
                    SearchIndex::open_read_only(&self.search_dir)
                } else {
                    SearchIndex::open(&self.search_dir, self.search_commit_every)
                }
            })
            .await
    }

    /// Whether this handle was opened with [`Archive::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Starts a write transaction that may append to the event chain: this process's writer
    /// mutex, and for a shared index a transaction-scoped advisory lock, so writers on every
    /// machine append one after another and the chain stays linear.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, ()>, sqlx::Transaction<'static, sqlx::Any>)> {
        let guard = self.write.lock().await;
        // SQLite: take the write lock up front. A deferred transaction that reads the chain
        // head and then writes fails at once (SQLITE_BUSY, no busy wait) when another
        // process wrote in between: an API process recording a run, a CLI beside a worker.
        let mut tx = match self.shared {
            Some(_) => self.db.begin().await?,
            None => self.db.begin_with("BEGIN IMMEDIATE").await?,
        };
        if let Some(key) = self.shared {
            // Wrapped so the void result never reaches the Any driver's row decoding.
            sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        Ok((guard, tx))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob's file is on local disk (local backend only).
    pub fn blob_path(&self, digest: &Digest) -> Option<PathBuf> {
        self.backend.local_path(digest)
    }

    /// Closes the index cleanly (commits pending search documents).
    pub async fn close(self) -> Result<()> {
        if let Some(search) = self.search.get() {
            search.commit()?;
        }
        self.db.close().await;
        Ok(())
    }

    /// Whether (host, account, UIDL) is already archived, and as which digest (the engine's
    /// "diff against the destination" when its ledger is lost, DESIGN.md §2.2).
    pub async fn find_occurrence(
        &self,
        source_host: &str,
        account: &str,
        uidl: &str,
    ) -> Result<Option<OccurrenceRecord>> {
        rows::occurrence_by_key(&self.db, &self.name, source_host, account, uidl).await
    }

    /// The message's exact bytes, decrypted, decompressed and re-hashed. A mismatch is an
    /// [`ArchiveError::Integrity`]; the bytes are never returned then.
    pub async fn get(&self, digest: &Digest) -> Result<Bytes> {
        let mut out = Vec::new();
        self.decode_into(digest, move |r| {
            let n = r(&mut out)?;
            Ok((out, n))
        })
        .await
        .map(|(v, _)| v.into())
    }

    /// Like [`get`](Self::get) but writes to `dest` (via a temp file renamed into place only
    /// after the digest checked out); memory stays bounded whatever the message size.
    pub async fn get_to_path(&self, digest: &Digest, dest: &Path) -> Result<u64> {
        let dest = dest.to_path_buf();
        self.decode_into(digest, move |r| {
            let dir = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            let n = {
                let mut w = std::io::BufWriter::new(tmp.as_file_mut());
                let n = r(&mut w)?;
                std::io::Write::flush(&mut w)?;
                n
            };
            tmp.persist(&dest).map_err(|e| e.error)?;
            Ok(n)
        })
        .await
    }

    /// Read the stored blob back from its backend (decrypted, decompressed) and re-hash it,
    /// keeping nothing: its size when it hashed to `digest`, an [`ArchiveError::Integrity`]
    /// otherwise. What the engine calls before a message counts as verified (issue 14).
    pub async fn read_back(&self, digest: &Digest) -> Result<u64> {
        self.decode_into(digest, |decode| decode(&mut std::io::sink())).await
    }

    /// The verified message in an unnamed temp file (gone when closed), rewound, with its
    /// size: for serving large messages without holding them in memory. Nothing is handed
    /// out unless the whole message hashed to its digest.
    pub async fn open_verified(&self, digest: &Digest) -> Result<(std::fs::File, u64)> {
        let spool = self.spool.clone();
        self.decode_into(digest, move |r| {
            let mut f = tempfile::tempfile_in(&spool)?;
            let n = {
                let mut w = std::io::BufWriter::new(&mut f);
                let n = r(&mut w)?;
                std::io::Write::flush(&mut w)?;
                n
            };
            std::io::Seek::rewind(&mut f)?;
            Ok((f, n))
        })
        .await
    }

    /// Streams the stored blob through [`blob::decode`] on a blocking thread; `sink` gets a
    /// function that decodes into any writer and returns the plaintext length.
    async fn decode_into<T: Send + 'static>(
        &self,
        digest: &Digest,
        sink: impl FnOnce(&mut dyn FnMut(&mut dyn std::io::Write) -> Result<u64>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.check_stored(digest).await?;
        let mut src = self.backend.reader(digest).await?.ok_or(ArchiveError::Integrity(IntegrityError {
            digest: *digest,
            kind: IntegrityKind::Missing,
        }))?;
        let keys = self.keys.clone();
        let d = *digest;
        tokio::task::spawn_blocking(move || {
            let mut decode = |mut w: &mut dyn std::io::Write| blob::decode(&d, &mut src, &mut w, &keys).map(|(_, n)| n);
            sink(&mut decode)
        })
        .await?
    }

    async fn check_stored(&self, digest: &Digest) -> Result<()> {
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM blobs WHERE digest = $1")
            .bind(digest.to_hex())
            .fetch_optional(&self.db)
            .await?;
        match state.as_deref() {
            None => Err(ArchiveError::NotFound(*digest)),
            Some("purged") => Err(ArchiveError::Purged(*digest)),
            _ => Ok(()),
        }
    }

    /// Metadata and every occurrence of one message.
    pub async fn meta(&self, digest: &Digest) -> Result<MessageRecord> {
        #[derive(sqlx::FromRow)]
        struct B {
            size: i64,
            stored_size: i64,
            key_id: Option<String>,
            stored_at: String,
            state: String,
        }
        let b: B = sqlx::query_as(
            "SELECT size, stored_size, key_id, stored_at, state FROM blobs WHERE digest = $1",
        )
        .bind(digest.to_hex())
        .fetch_optional(&self.db)
        .await?
        .ok_or(ArchiveError::NotFound(*digest))?;
        let meta = rows::message_meta(&self.db, digest).await?;
        let occurrences = self.occurrences_of(digest).await?;
        let tombstone = self.tombstone(digest).await?;
        Ok(MessageRecord {
            digest: *digest,
            state: if b.state == "purged" {
                BlobState::Purged
            } else {
                BlobState::Stored
            },
            size: b.size as u64,
            stored_size: b.stored_size as u64,
            key_id: b.key_id,
            stored_at: parse_ts(&b.stored_at)?,
            meta,
            occurrences,
            tombstone,
        })
    }

    pub async fn occurrences_of(&self, digest: &Digest) -> Result<Vec<OccurrenceRecord>> {
        rows::occurrences_of(&self.db, &self.name, digest).await
    }

    /// Occurrences of one job run, in ingest order (for the job report).
    pub async fn occurrences_of_run(&self, job_id: i64, run_id: i64) -> Result<Vec<OccurrenceRecord>> {
        rows::occurrences_of_run(&self.db, &self.name, job_id, run_id).await
    }

    pub async fn stats(&self) -> Result<ArchiveStats> {
        let (messages, unique, stored): (i64, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), CAST(SUM(size) AS BIGINT), CAST(SUM(stored_size) AS BIGINT) FROM blobs WHERE state = 'stored'",
        )
        .fetch_one(&self.db)
        .await?;
        let purged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE state = 'purged'")
            .fetch_one(&self.db)
            .await?;
        let (occurrences, logical): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), CAST(SUM(o.size) AS BIGINT) FROM occurrences o JOIN blobs b ON b.digest = o.digest \
             WHERE b.state = 'stored'",
        )
        .fetch_one(&self.db)
        .await?;
        let (unique, stored, logical) = (
            unique.unwrap_or(0) as u64,
            stored.unwrap_or(0) as u64,
            logical.unwrap_or(0) as u64,
        );
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        Ok(ArchiveStats {
            name: self.name.clone(),
            messages: messages as u64,
            occurrences: occurrences as u64,
            purged: purged as u64,
            stored_bytes: stored,
            logical_bytes: logical,
            unique_bytes: unique,
            dedup_ratio: ratio(logical, unique),
            storage_ratio: if logical == 0 {
                1.0
            } else {
                ratio(stored, logical)
            },
        })
    }

    /// The event log, `seq > after`, at most `limit` records.
    pub async fn events(&self, after: i64, limit: u32) -> Result<Vec<Event>> {
        events::after(&self.db, after, limit).await
    }

    /// The hash of the newest event: publish it (job report, ticket, email) and any later
    /// rewrite of history up to that point is detectable even by someone who can edit
    /// the whole database.
    pub async fn chain_head(&self) -> Result<Option<(i64, String)>> {
        events::head(&self.db).await
    }

    pub(crate) async fn log_event(
        &self,
        kind: EventKind,
        actor: &str,
        detail: serde_json::Value,
    ) -> Result<Event> {
        let (_w, mut tx) = self.begin_write().await?;
        let ev = events::append_event(&mut tx, kind, actor, detail).await?;
        tx.commit().await?;
        Ok(ev)
    }

    pub async fn tombstone(&self, digest: &Digest) -> Result<Option<Tombstone>> {
        rows::tombstone(&self.db, digest).await
    }

    pub async fn tombstones(&self) -> Result<Vec<Tombstone>> {
        rows::tombstones(&self.db).await
    }

    /// Re-reads a stored blob and re-extracts what the search index needs.
    pub(crate) async fn extract_stored(&self, digest: &Digest) -> Result<Extracted> {
        let bytes = self.get(digest).await?;
        let limit = self.scan_limit;
        Ok(tokio::task::spawn_blocking(move || {
            let n = bytes.len() as u64;
            meta::extract(&bytes[..bytes.len().min(limit)], n)
        })
        .await?)
    }
}
