//! SQLite: the zero-setup embedded default, one process. What is its own: how it opens
//! the file, and its [`Dialect`]; the store itself is the one implementation every backend
//! shares ([`crate::ledger`], [`crate::queue`], [`crate::ops`]).
//!
//! WAL journal and `synchronous = FULL`: a ledger row saying `copied` must survive a power
//! cut, because deletion at the source is decided from it (DESIGN.md §2.1). Writes go through
//! one connection (SQLite has one writer), reads through a pool of read-only ones beside it.

use std::path::Path;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::dialect::Dialect;
use crate::{Result, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The single writer (SQLite's model; one connection avoids SQLITE_BUSY).
    pub(crate) pool: SqlitePool,
    /// Readers: WAL lets them run beside the writer, so API polling never queues in front
    /// of a worker's ledger commit.
    pub(crate) reader: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if needed) the state database at `path` and apply migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::StateDir { path: dir.display().to_string(), source })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        // One writer at a time is SQLite's model; a single connection avoids SQLITE_BUSY.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        MIGRATOR.run(&pool).await?;
        let reader = SqlitePoolOptions::new().max_connections(4).connect_with(options.read_only(true)).await?;
        Ok(Self { pool, reader })
    }

    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

impl Dialect for SqliteStore {
    type Db = Sqlite;
    const MANY_WRITERS: bool = false;
    // RFC 3339 UTC with milliseconds, as every time is stored.
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";
    const CLOCK: &'static str = Self::NOW;
    // '' sorts before every time.
    const RELEASED: &'static str = "''";
    const STRPOS: &'static str = "instr";
    const LABEL: [&'static str; 3] = ["EXISTS (SELECT 1 FROM json_each(jobs.labels) AS l WHERE l.key = ", " AND l.value = ", ")"];

    fn text(col: &str) -> String {
        col.to_string()
    }

    fn cast(_pg_type: &str) -> String {
        String::new()
    }

    fn after(secs: &str) -> String {
        format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', {secs} || ' seconds')")
    }

    fn secs_since(expr: &str) -> String {
        format!("(julianday('now') - julianday({expr})) * 86400.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn creates_its_directory_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.db");
        let job = {
            let s = SqliteStore::open(&path).await.unwrap();
            let job = s.ensure_job("k", "s", "t").await.unwrap();
            let run = s.start_run(job, false).await.unwrap();
            s.record_listed(job, run, &[("u1".into(), 1)]).await.unwrap();
            job
        };
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(s.ledger(job).await.unwrap().len(), 1);
    }
}
