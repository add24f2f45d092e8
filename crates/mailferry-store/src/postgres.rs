//! PostgreSQL: the service backend, shared by many `mailferry worker` processes (DESIGN.md
//! §5). What is its own: how it connects, and its [`Dialect`]; the store itself is the one
//! implementation every backend shares ([`crate::ledger`], [`crate::queue`], [`crate::ops`]).
//!
//! Lease and claim times use the database clock, never the workers' clocks.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::dialect::Dialect;
use crate::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connect to `url` (`postgres://user:pass@host:port/db`) with a pool of up to 10
    /// connections and apply the migrations (sqlx serialises concurrent migrators with an
    /// advisory lock, so many workers may start at once).
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Close the pool's connections (tests drop their database afterwards).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Reads share the pool with writes.
    pub(crate) fn reader(&self) -> &PgPool {
        &self.pool
    }
}

const TEXT_TIME: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

impl Dialect for PgStore {
    type Db = sqlx::Postgres;
    const MANY_WRITERS: bool = true;
    const NOW: &'static str = "now()";
    const CLOCK: &'static str = "CAST(clock_timestamp() AS TEXT)";
    const RELEASED: &'static str = "'-infinity'";
    const STRPOS: &'static str = "strpos";
    // `@>` goes through the GIN index on labels.
    const LABEL: [&'static str; 3] = ["labels @> jsonb_build_object(", "::text, ", "::text)"];

    fn text(col: &str) -> String {
        format!("to_char({col} AT TIME ZONE 'UTC', {TEXT_TIME}) AS {col}")
    }

    fn cast(pg_type: &str) -> String {
        format!("::{pg_type}")
    }

    fn after(secs: &str) -> String {
        format!("clock_timestamp() + make_interval(secs => {secs})")
    }

    fn secs_since(expr: &str) -> String {
        format!("EXTRACT(EPOCH FROM now() - {expr})::float8")
    }
}
