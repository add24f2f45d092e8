//! Blob storage over `object_store`, with a durable `put` for local disk.
//!
//! `object_store::local::LocalFileSystem::put` stages into a temp file and renames it into
//! place, but (checked in object_store 0.13.1, `src/local.rs`) never calls `fsync`: after a
//! power cut the rename may be on disk while the data is not, and DESIGN.md §2.1 lets
//! the engine DELE the source once `put` returns. So for the local backend we write the
//! object ourselves — temp file in the same filesystem, `fsync` it, `rename`, `fsync` the
//! directory (and any directory we created) — and use `LocalFileSystem` only to read,
//! list and delete. Remote stores acknowledge a PUT only once it is durable.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::config::{ArchiveConfig, BlobStoreConfig};
use crate::digest::Digest;
use crate::error::{ArchiveError, Result};

#[derive(Debug, Clone)]
pub(crate) struct Backend {
    store: Arc<dyn ObjectStore>,
    /// `Some(root)` when blobs live on local disk under `root`.
    local_root: Option<PathBuf>,
    prefix: Option<ObjPath>,
    /// S3 Object Lock per object, when configured.
    #[cfg(feature = "aws")]
    pub(crate) locker: Option<crate::object_lock::ObjectLocker>,
}

/// `blobs/ab/cd/<hex>`: two levels of fan-out keep directories small on local disk.
pub(crate) fn blob_key(d: &Digest) -> String {
    let h = d.to_hex();
    format!("blobs/{}/{}/{}", &h[0..2], &h[2..4], h)
}

impl Backend {
    pub(crate) fn open(cfg: &ArchiveConfig) -> Result<Self> {
        match &cfg.blobs {
            BlobStoreConfig::Local => {
                std::fs::create_dir_all(&cfg.dir)?;
                let root = cfg.dir.canonicalize()?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&root)?;
                Ok(Self {
                    store: Arc::new(fs),
                    local_root: Some(root),
                    prefix: None,
                    #[cfg(feature = "aws")]
                    locker: None,
                })
            }
            #[cfg(feature = "aws")]
            BlobStoreConfig::S3(s3) => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(!s3.path_style && s3.endpoint.is_none());
                if let Some(e) = &s3.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                let prefix = s3.prefix.clone().unwrap_or_else(|| cfg.name.clone());
                let store = Arc::new(b.clone().build()?);
                let locker = s3
                    .object_lock
                    .map(|mode| crate::object_lock::ObjectLocker::new(&b, store.clone(), mode))
                    .transpose()?;
                Ok(Self {
                    store,
                    local_root: None,
                    prefix: Some(ObjPath::from(prefix)),
                    locker,
                })
            }
            BlobStoreConfig::Custom(store) => Ok(Self {
                store: store.clone(),
                local_root: None,
                prefix: Some(ObjPath::from(cfg.name.clone())),
                #[cfg(feature = "aws")]
                locker: None,
            }),
        }
    }

    fn path(&self, key: &str) -> ObjPath {
        match &self.prefix {
            Some(p) => ObjPath::from(format!("{p}/{key}")),
            None => ObjPath::from(key),
        }
    }

    /// The blob's full object key (with the archive prefix).
    pub(crate) fn object_key(&self, d: &Digest) -> String {
        self.path(&blob_key(d)).to_string()
    }

    /// Where a blob sits on local disk (local backend only; for tests and operators).
    pub(crate) fn local_path(&self, d: &Digest) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(blob_key(d)))
    }

    /// Stores the already-encoded, already-fsynced staged file under the blob's key.
    /// Returns only when the object is durable.
    pub(crate) async fn put_staged(
        &self,
        d: &Digest,
        staged: tempfile::NamedTempFile,
    ) -> Result<()> {
        let dirs = self.put_staged_unsynced(d, staged).await?;
        self.sync_dirs(dirs).await
    }

    /// Like [`put_staged`](Self::put_staged), except that on local disk the directories the
    /// object's entry (and any fan-out directory created for it) live in are returned
    /// instead of fsynced: the object is durable only once [`sync_dirs`](Self::sync_dirs)
    /// has synced them. A group ingest syncs each directory once for the whole group.
    pub(crate) async fn put_staged_unsynced(
        &self,
        d: &Digest,
        staged: tempfile::NamedTempFile,
    ) -> Result<Vec<PathBuf>> {
        if let Some(root) = &self.local_root {
            let dest = root.join(blob_key(d));
            let root = root.clone();
            return tokio::task::spawn_blocking(move || rename_into_place(&root, staged, &dest)).await?;
        }
        // Remote: stream the staged file up (multipart above the buffer size), so a 50 MB
        // blob is never held in memory.
        let mut file = tokio::fs::File::open(staged.path()).await?;
        let mut w =
            object_store::buffered::BufWriter::new(self.store.clone(), self.path(&blob_key(d)));
        tokio::io::copy(&mut file, &mut w).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut w).await?;
        Ok(Vec::new())
    }

    /// fsyncs each directory once (duplicates skipped), several at a time: one flush per
    /// directory would otherwise queue behind the previous one.
    pub(crate) async fn sync_dirs(&self, mut dirs: Vec<PathBuf>) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| seen.insert(d.clone()));
        let synced: Vec<_> = futures::stream::iter(dirs.into_iter().map(|d| tokio::task::spawn_blocking(move || sync_dir(&d))))
            .buffer_unordered(8)
            .collect()
            .await;
        for r in synced {
            r??;
        }
        Ok(())
    }

    /// A blocking reader over the stored (encoded) bytes, or `None` if the object does not
    /// exist. Local blobs are plain files; remote ones stream in as they are read (bridged
    /// to `Read`, so use it inside `spawn_blocking`), so a 50 MB blob is never held whole.
    pub(crate) async fn reader(&self, d: &Digest) -> Result<Option<Box<dyn Read + Send>>> {
        if let Some(root) = &self.local_root {
            return match std::fs::File::open(root.join(blob_key(d))) {
                Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(64 * 1024, f)))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match self.store.get(&self.path(&blob_key(d))).await {
            Ok(r) => {
                let stream = r.into_stream().map_err(std::io::Error::other);
                let reader = tokio_util::io::StreamReader::new(stream);
                Ok(Some(Box::new(tokio_util::io::SyncIoBridge::new(reader))))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn delete(&self, d: &Digest) -> Result<()> {
        match self.store.delete(&self.path(&blob_key(d))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every digest with an object under `blobs/` (for orphan detection in verify).
    pub(crate) async fn list_digests(&self) -> Result<Vec<Digest>> {
        let base = self.path("blobs");
        if let Some(root) = &self.local_root {
            // LocalFileSystem::list errors on a missing directory; an empty archive has none.
            if !root.join("blobs").exists() {
                return Ok(Vec::new());
            }
        }
        let metas: Vec<_> = self.store.list(Some(&base)).try_collect().await?;
        Ok(metas
            .iter()
            .filter_map(|m| m.location.filename().and_then(|f| f.parse().ok()))
            .collect())
    }
}

/// Creates the fan-out directories and renames the staged file into place, without any
/// directory fsync: returns the directories to fsync before the object counts as durable
/// (the parent of each directory created, so its entry survives a crash, then the object's
/// own directory).
fn rename_into_place(root: &Path, staged: tempfile::NamedTempFile, dest: &Path) -> Result<Vec<PathBuf>> {
    let parent = dest
        .parent()
        .ok_or_else(|| ArchiveError::Config("bad blob path".into()))?;
    let mut to_sync = Vec::new();
    let mut dir = root.to_path_buf();
    for comp in parent
        .strip_prefix(root)
        .map_err(|_| ArchiveError::Config("blob outside root".into()))?
        .components()
    {
        let next = dir.join(comp);
        if !next.exists() {
            match std::fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            to_sync.push(dir.clone());
        }
        dir = next;
    }
    staged.persist(dest).map_err(|e| e.error)?;
    to_sync.push(parent.to_path_buf());
    Ok(to_sync)
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A staging file in `<dir>/tmp` (same filesystem as local blobs, so rename is atomic).
pub(crate) fn stage_file(spool: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(".stage-")
        .tempfile_in(spool)
}

/// Flushes and fsyncs a staged file.
pub(crate) fn sync_staged(f: &mut tempfile::NamedTempFile) -> std::io::Result<()> {
    f.as_file_mut().flush()?;
    f.as_file().sync_all()
}
