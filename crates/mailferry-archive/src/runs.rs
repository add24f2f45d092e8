//! Records of verify and export runs started over the API, kept in the archive's index so a
//! run's status and result survive restarts and are visible to every process sharing the
//! index. The run itself is a queued job that a worker claims (mailferry-engine's
//! `archive_task`); the worker refreshes the record's progress while it works and stores
//! the outcome when it finishes.

use chrono::{DateTime, Utc};

use crate::archive::Archive;
use crate::error::Result;
use crate::index::rows::{fmt_ts, parse_ts};

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    pub id: i64,
    /// `verify` or `export`.
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub done: u64,
    pub total: u64,
    /// The export file, on the disk of the process that wrote it.
    pub file: Option<String>,
    /// The finished run's outcome (JSON: `{"verify": …}`, `{"export": …}` or
    /// `{"error": …}`; older versions stored the API's view of the run).
    pub view: Option<String>,
}

type RunRow = (i64, String, String, String, String, Option<String>, i64, i64, Option<String>, Option<String>);

impl Archive {
    /// Records a new running run of `kind`; `file_for` names its output from its id.
    pub async fn run_started(&self, kind: &str, file_for: impl FnOnce(i64) -> Option<String>) -> Result<i64> {
        let now = fmt_ts(Utc::now());
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO runs (kind, state, started_at, heartbeat_at) VALUES ($1, 'running', $2, $3) RETURNING id",
        )
        .bind(kind)
        .bind(&now)
        .bind(&now)
        .fetch_one(&self.db)
        .await?;
        if let Some(file) = file_for(id) {
            sqlx::query("UPDATE runs SET file = $1 WHERE id = $2").bind(file).bind(id).execute(&self.db).await?;
        }
        Ok(id)
    }

    /// Progress of a running run; also its heartbeat.
    pub async fn run_progress(&self, id: i64, done: u64, total: u64) -> Result<()> {
        sqlx::query("UPDATE runs SET done = $1, total = $2, heartbeat_at = $3 WHERE id = $4 AND state = 'running'")
            .bind(done as i64)
            .bind(total as i64)
            .bind(fmt_ts(Utc::now()))
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Marks the run `done` or `failed` with the view the API shows for it from now on.
    pub async fn run_finished(&self, id: i64, failed: bool, view: &str) -> Result<()> {
        let now = fmt_ts(Utc::now());
        sqlx::query(
            "UPDATE runs SET state = $1, finished_at = $2, heartbeat_at = $3, view = $4 WHERE id = $5",
        )
        .bind(if failed { "failed" } else { "done" })
        .bind(&now)
        .bind(&now)
        .bind(view)
        .bind(id)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Forgets a run that never started (its job was refused: too many runs at once).
    pub async fn run_discard(&self, id: i64) -> Result<()> {
        sqlx::query("DELETE FROM runs WHERE id = $1 AND state = 'running'").bind(id).execute(&self.db).await?;
        Ok(())
    }

    /// The runs recorded as running whose heartbeat is at least as recent as `alive_since`
    /// (runs of every API process sharing the index; older ones were interrupted), as
    /// `(id, kind)`, oldest first.
    pub async fn running_runs(&self, alive_since: DateTime<Utc>) -> Result<Vec<(i64, String)>> {
        // RFC 3339 UTC timestamps with fixed precision compare as text.
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, kind FROM runs WHERE state = 'running' AND heartbeat_at >= $1 ORDER BY id",
        )
        .bind(fmt_ts(alive_since))
        .fetch_all(&self.db)
        .await?;
        Ok(rows)
    }

    /// The run `id` of `kind`, if recorded.
    pub async fn run_record(&self, kind: &str, id: i64) -> Result<Option<RunRecord>> {
        let row: Option<RunRow> = sqlx::query_as(
            "SELECT id, kind, state, started_at, heartbeat_at, finished_at, done, total, file, view \
             FROM runs WHERE id = $1 AND kind = $2",
        )
        .bind(id)
        .bind(kind)
        .fetch_optional(&self.db)
        .await?;
        row.map(|r| {
            Ok(RunRecord {
                id: r.0,
                kind: r.1,
                state: r.2,
                started_at: parse_ts(&r.3)?,
                heartbeat_at: parse_ts(&r.4)?,
                finished_at: r.5.as_deref().map(parse_ts).transpose()?,
                done: r.6.max(0) as u64,
                total: r.7.max(0) as u64,
                file: r.8,
                view: r.9,
            })
        })
        .transpose()
    }
}
