//! Opening an archive's index: SQLite beside a local archive, or a PostgreSQL schema per
//! archive when many workers share it (DESIGN.md §5). Both go through sqlx's `Any` driver
//! so every query is written once: `$n` placeholders (SQLite accepts them too), BIGINT
//! integers, text timestamps, `ON CONFLICT` upserts.

use std::path::Path;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor};

use crate::config::DatabaseUrl;
use crate::error::Result;

pub(crate) mod events;
pub(crate) mod rows;

/// The registry of shared archives (in the database's default schema): which schema holds
/// which archive, so `GET /archives` lists archives created on any machine.
const REGISTRY: &str = "CREATE TABLE IF NOT EXISTS mailferry_archives (\
     name TEXT PRIMARY KEY, schema_name TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)";

pub(crate) async fn open_sqlite(path: &Path) -> Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let opts = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
    let db = AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL: readers never block the writer. FULL: a committed occurrence survives
                // power loss, as DESIGN.md §2.1 needs before the engine may DELE.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA busy_timeout = 30000").await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/sqlite").run(&db).await?;
    Ok(db)
}

/// The schema of archive `name`: derived from a hash, since archive names may hold
/// characters and lengths PostgreSQL identifiers cannot.
pub(crate) fn schema_of(name: &str) -> String {
    let h = Sha256::digest(name.as_bytes());
    format!("mfa_{}", hex::encode(&h[..10]))
}

/// Opens (creating if needed) archive `name`'s schema, migrates it and returns a pool whose
/// connections all use it, plus the advisory-lock key that serialises its chain writers.
pub(crate) async fn open_postgres(url: &str, name: &str) -> Result<(AnyPool, i64)> {
    sqlx::any::install_default_drivers();
    let schema = schema_of(name);
    let opts = AnyConnectOptions::from_str(url)?.disable_statement_logging();
    {
        let mut conn = sqlx::AnyConnection::connect_with(&opts).await?;
        let mut tx = conn.begin().await?;
        // Concurrent first opens from several workers: one creates, the others wait.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(lock_key("mailferry-archive-registry"))
            .execute(&mut *tx)
            .await?;
        tx.execute(REGISTRY).await?;
        tx.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await?;
        sqlx::query(
            "INSERT INTO mailferry_archives (name, schema_name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(&schema)
        .bind(rows::fmt_ts(chrono::Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        conn.close().await?;
    }
    let search_path = format!("SET search_path TO {schema}");
    let db = AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            let sql = search_path.clone();
            Box::pin(async move {
                conn.execute(sql.as_str()).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    sqlx::migrate!("./migrations/postgres").run(&db).await?;
    Ok((db, lock_key(&schema)))
}

/// The registry of a shared PostgreSQL index (which archives exist, on any machine), over a
/// small pool a process opens once: listing archives costs one query, not a connection.
#[derive(Debug, Clone)]
pub struct SharedRegistry {
    pool: AnyPool,
}

impl SharedRegistry {
    pub async fn connect(url: &DatabaseUrl) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let opts = AnyConnectOptions::from_str(url.expose())?.disable_statement_logging();
        let pool = AnyPoolOptions::new().max_connections(2).connect_with(opts).await?;
        pool.execute(REGISTRY).await?;
        Ok(Self { pool })
    }

    /// Names of the registered archives, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT name FROM mailferry_archives ORDER BY name")
            .fetch_all(&self.pool)
            .await?)
    }
}

/// Names of the archives registered in a shared PostgreSQL index (one-off; a long-running
/// process keeps a [`SharedRegistry`]).
pub async fn shared_archive_names(url: &DatabaseUrl) -> Result<Vec<String>> {
    let registry = SharedRegistry::connect(url).await?;
    let names = registry.names().await;
    registry.pool.close().await;
    names
}

fn lock_key(what: &str) -> i64 {
    let h = Sha256::digest(what.as_bytes());
    i64::from_be_bytes(h[..8].try_into().unwrap_or_default())
}
