//! Per-run Merkle roots (RFC 9162 shape, `merkle.rs`) over the digests one job run
//! ingested: computed from the index, recorded in the event log when a run ends, and
//! inclusion proofs for a receipt.

use std::str::FromStr;

use crate::archive::Archive;
use crate::chain::EventKind;
use crate::digest::Digest;
use crate::error::Result;
use crate::merkle::{self, MerkleProof};
use crate::types::RunRoot;

impl Archive {
    async fn run_digests(&self, job_id: i64, run_id: i64) -> Result<Vec<Digest>> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT digest FROM occurrences WHERE job_id = $1 AND run_id = $2",
        )
        .bind(job_id)
        .bind(run_id)
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(|d| Digest::from_str(d)).collect()
    }

    /// Merkle root over the distinct digests one job run ingested.
    pub async fn merkle_root(&self, job_id: i64, run_id: i64) -> Result<RunRoot> {
        let ds = self.run_digests(job_id, run_id).await?;
        let mut uniq = ds.clone();
        uniq.sort();
        uniq.dedup();
        Ok(RunRoot {
            job_id,
            run_id,
            leaves: uniq.len() as u64,
            root: hex::encode(merkle::merkle_root(&ds)),
        })
    }

    /// Computes the run's root and records it in the event log (call when a run ends).
    pub async fn record_run_root(&self, job_id: i64, run_id: i64, who: &str) -> Result<RunRoot> {
        let root = self.merkle_root(job_id, run_id).await?;
        self.log_event(
            EventKind::RunRoot,
            who,
            serde_json::to_value(&root).unwrap_or_default(),
        )
        .await?;
        Ok(root)
    }

    /// Proof that `digest` is among the run's leaves; `None` if it is not.
    pub async fn merkle_proof(
        &self,
        digest: &Digest,
        job_id: i64,
        run_id: i64,
    ) -> Result<Option<MerkleProof>> {
        Ok(merkle::merkle_proof(
            &self.run_digests(job_id, run_id).await?,
            digest,
        ))
    }
}
