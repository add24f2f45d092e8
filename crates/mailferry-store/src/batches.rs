//! Listing batches (`GET /api/v1/batches`): a page of batches, newest first, each with its
//! jobs per state and the sum of its jobs' ledger counts, as [`JobQueue::get_batch`]
//! gives for one.
//!
//! A page costs three statements whatever its size (the batches, then the job states and the
//! ledger sums of all of them grouped by batch), never one per batch. Each is written once
//! and instantiated per store type by [`impl_batches`], as the rest of the store is.
//!
//! [`JobQueue::get_batch`]: crate::JobQueue::get_batch

use std::collections::HashMap;

use mailferry_model::JobCounts;
use sqlx::QueryBuilder;

use crate::common::{page_limit, summary};
use crate::dialect::Dialect;
use crate::service::{BatchRecord, BatchSummary};
use crate::{PgStore, Result, SqliteStore};

/// Which batches [`OpsStore::list_batches`](crate::OpsStore::list_batches) returns: newest
/// first (by id), `before` is the cursor (the last id seen).
#[derive(Debug, Clone, Default)]
pub struct BatchFilter {
    pub before: Option<i64>,
    /// Page size: 0 means 100, anything above 500 means 500.
    pub limit: u32,
}

/// Per batch: listed, copied, skipped, failed, deleted, bytes (as `job_counts` counts them).
type Sums = (i64, i64, i64, i64, i64, i64, i64);

fn counts((_, listed, copied, skipped, failed, deleted, bytes): Sums) -> JobCounts {
    let n = |v: i64| v.max(0) as u64;
    JobCounts { listed: n(listed), copied: n(copied), skipped: n(skipped), failed: n(failed), deleted: n(deleted), bytes: n(bytes) }
}

/// Appends `(id, id, …)` to `q`, each id bound.
fn push_ids<'a, DB: sqlx::Database>(q: &mut QueryBuilder<'a, DB>, ids: &'a [i64])
where
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    q.push(" (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    list.push_unseparated(")");
}

macro_rules! impl_batches {
    ($store:ty) => {
        impl $store {
            /// The one implementation of `OpsStore::list_batches` (see [`BatchFilter`]).
            pub(crate) async fn batch_page(&self, f: &BatchFilter) -> Result<Vec<BatchSummary>> {
                let mut q = QueryBuilder::<<Self as Dialect>::Db>::new(format!(
                    "SELECT id, name, {} FROM batches WHERE TRUE",
                    Self::text("created_at")
                ));
                if let Some(before) = f.before {
                    q.push(" AND id < ").push_bind(before);
                }
                q.push(" ORDER BY id DESC LIMIT ").push_bind(page_limit(f.limit));
                let batches: Vec<(i64, String, String)> = q.build_query_as().fetch_all(self.reader()).await?;
                if batches.is_empty() {
                    return Ok(Vec::new());
                }
                let ids: Vec<i64> = batches.iter().map(|b| b.0).collect();

                let mut q = QueryBuilder::<<Self as Dialect>::Db>::new("SELECT batch_id, state, COUNT(*) FROM jobs WHERE batch_id IN");
                push_ids(&mut q, &ids);
                q.push(" GROUP BY batch_id, state");
                let states: Vec<(i64, String, i64)> = q.build_query_as().fetch_all(self.reader()).await?;

                // The same sums as `job_counts`, over every job of each batch.
                let mut q = QueryBuilder::<<Self as Dialect>::Db>::new(
                    "SELECT j.batch_id,
                            COUNT(*),
                            COUNT(*) FILTER (WHERE l.state IN ('copied', 'verified', 'source-deleted')),
                            COUNT(*) FILTER (WHERE l.state = 'skipped'),
                            COUNT(*) FILTER (WHERE l.state = 'failed'),
                            COUNT(*) FILTER (WHERE l.state = 'source-deleted'),
                            CAST(COALESCE(SUM(COALESCE(l.wire_size, l.size))
                                FILTER (WHERE l.state IN ('copied', 'verified', 'source-deleted')), 0) AS BIGINT)
                     FROM ledger l JOIN jobs j ON j.id = l.job_id
                     WHERE j.batch_id IN",
                );
                push_ids(&mut q, &ids);
                q.push(" GROUP BY j.batch_id");
                let sums: Vec<Sums> = q.build_query_as().fetch_all(self.reader()).await?;

                let mut per_batch: HashMap<i64, Vec<(String, i64)>> = HashMap::new();
                for (batch, state, n) in states {
                    per_batch.entry(batch).or_default().push((state, n));
                }
                let mut sums: HashMap<i64, JobCounts> = sums.into_iter().map(|s| (s.0, counts(s))).collect();
                batches
                    .into_iter()
                    .map(|(id, name, created_at)| {
                        let states = per_batch.remove(&id).unwrap_or_default();
                        summary(BatchRecord { id, name, created_at }, states, sums.remove(&id).unwrap_or_default())
                    })
                    .collect()
            }
        }
    };
}

impl_batches!(PgStore);
impl_batches!(SqliteStore);
