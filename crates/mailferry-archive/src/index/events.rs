//! The event log in the index: appending to it and reading it back (the hash chain's pure
//! part is `chain.rs`).

use chrono::Utc;
use sqlx::{AnyConnection, AnyPool};

use crate::chain::{self, Event, EventKind};
use crate::error::Result;
use crate::index::rows::fmt_ts;

/// Appends one record to the chain inside the caller's transaction (the caller holds the
/// archive's write lock, so "read head, insert next" cannot interleave).
pub(crate) async fn append_event(
    conn: &mut AnyConnection,
    kind: EventKind,
    actor: &str,
    detail: serde_json::Value,
) -> Result<Event> {
    let tip = head(&mut *conn).await?;
    append_event_after(conn, tip, kind, actor, detail).await
}

/// [`append_event`] after a head the caller already read inside this transaction (a group
/// ingest chains its events one after another without reading the head back each time).
pub(crate) async fn append_event_after(
    conn: &mut AnyConnection,
    tip: Option<(i64, String)>,
    kind: EventKind,
    actor: &str,
    detail: serde_json::Value,
) -> Result<Event> {
    let (seq, prev_hash) = match tip {
        Some((s, h)) => (s + 1, h),
        None => (1, chain::GENESIS.to_string()),
    };
    let at = fmt_ts(Utc::now());
    let detail = detail.to_string();
    let hash = chain::event_hash(seq, &at, kind.as_str(), actor, &detail, &prev_hash);
    sqlx::query("INSERT INTO events (seq, at, kind, actor, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(seq)
        .bind(&at)
        .bind(kind.as_str())
        .bind(actor)
        .bind(&detail)
        .bind(&prev_hash)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(Event {
        seq,
        at,
        kind: kind.as_str().to_string(),
        actor: actor.to_string(),
        detail,
        prev_hash,
        hash,
    })
}

/// The newest event's sequence number and hash.
pub(crate) async fn head<'c>(
    conn: impl sqlx::Executor<'c, Database = sqlx::Any>,
) -> Result<Option<(i64, String)>> {
    Ok(sqlx::query_as("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(conn)
        .await?)
}

/// The event log, `seq > after`, at most `limit` records.
pub(crate) async fn after(db: &AnyPool, after: i64, limit: u32) -> Result<Vec<Event>> {
    Ok(sqlx::query_as("SELECT seq, at, kind, actor, detail, prev_hash, hash FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit as i64)
        .fetch_all(db)
        .await?)
}
