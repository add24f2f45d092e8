//! Issues the signed receipt of a finished run (issue 14): the job's ledger rows as the run
//! left them, one entry per source message, a Merkle root over the entries and an Ed25519
//! signature over the header, stored for the API and the CLI to hand out. Built in pages
//! of ledger rows so memory stays flat (32 bytes a message for the leaves).

use mailferry_proof::receipt::{ChainHead, RootBuilder};
use mailferry_proof::{ArchiveRef, DestinationRef, ReceiptEntry, ReceiptHeader, ReceiptSigner, SourceRef, RECEIPT_FORMAT};
use mailferry_store::{JobId, ReceiptRow, RunId, Store, StoredReceipt};

use crate::job::DrainJob;
use crate::sink::Target;

const PAGE: u32 = 500;

/// What the run says about itself, beside its ledger rows.
#[derive(Debug, Clone)]
pub(crate) struct RunFacts<'a> {
    pub job: &'a DrainJob,
    pub job_id: JobId,
    pub run: RunId,
    pub outcome: &'a str,
    pub started_at: String,
    pub chain_head: Option<(i64, String)>,
}

/// Builds, signs and stores the receipt; returns its Merkle root.
pub(crate) async fn issue(store: &dyn Store, signer: &ReceiptSigner, facts: RunFacts<'_>) -> mailferry_store::Result<String> {
    // First the root alone (nothing written): a run that changed nothing since the job's
    // last receipt points at that receipt's entries and stores none, so a no-op rerun of a
    // large mailbox reads its ledger once and writes one header (issue 18).
    let builder = entries(store, &facts, false).await?;
    let root = builder.root_hex();
    let previous = store.receipt(facts.job_id, None).await?;
    let entries_run = match previous {
        Some(p) if root_of(&p.header).as_deref() == Some(root.as_str()) => p.entries_run,
        _ => {
            entries(store, &facts, true).await?;
            facts.run
        }
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let header = ReceiptHeader {
        format: RECEIPT_FORMAT.into(),
        job: facts.job_id,
        run: facts.run,
        source: facts.job.source.display(),
        target: facts.job.target.display(),
        outcome: facts.outcome.into(),
        started_at: facts.started_at,
        finished_at: Some(now.clone()),
        signed_at: now,
        counts: builder.counts.clone(),
        merkle_root: root.clone(),
        archive_chain_head: facts.chain_head.map(|(seq, hash)| ChainHead { seq, hash }),
    };
    let stored = StoredReceipt {
        run: facts.run,
        job: facts.job_id,
        entries_run,
        header: String::from_utf8_lossy(&header.canonical()).into_owned(),
        signature: signer.sign(&header),
        public_key: signer.public_key().to_base64(),
    };
    store.save_receipt(&stored).await?;
    Ok(root)
}

/// The job's ledger rows as receipt entries, page by page, into a root builder; with
/// `save`, each page's entry lines are stored under this run.
async fn entries(store: &dyn Store, facts: &RunFacts<'_>, save: bool) -> mailferry_store::Result<RootBuilder> {
    let mut builder = RootBuilder::default();
    let mut after = String::new();
    let mut seq = 0u64;
    loop {
        let rows = store.receipt_rows(facts.job_id, &after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.uidl.clone();
        let first = seq;
        let mut lines = Vec::new();
        for row in &rows {
            let line = builder.push(&entry(facts.job, seq, row));
            if save {
                lines.push(line.to_json());
            }
            seq += 1;
        }
        if save {
            store.save_receipt_lines(facts.run, first, &lines).await?;
        }
        if rows.len() < PAGE as usize {
            break;
        }
    }
    Ok(builder)
}

fn root_of(header_json: &str) -> Option<String> {
    serde_json::from_str::<ReceiptHeader>(header_json).ok().map(|h| h.merkle_root)
}

fn entry(job: &DrainJob, seq: u64, row: &ReceiptRow) -> ReceiptEntry {
    let copied = matches!(row.state.as_str(), "copying" | "copied" | "verified" | "source-deleted");
    let (destination, archive) = match &job.target {
        Target::Imap(ep) if copied => (
            Some(DestinationRef {
                host: ep.host.clone(),
                port: ep.port,
                account: ep.username.clone(),
                folder: ep.folder.clone(),
                uidvalidity: row.dest_uidvalidity,
                uid: row.dest_uid,
            }),
            None,
        ),
        Target::Archive(a) if copied => (
            None,
            Some(ArchiveRef {
                archive: a.name.clone(),
                source_host: job.source.host.clone(),
                account: job.source.username.clone(),
                uidl: row.uidl.clone(),
            }),
        ),
        _ => (None, None),
    };
    ReceiptEntry {
        seq,
        source: SourceRef {
            host: job.source.host.clone(),
            port: job.source.port,
            account: job.source.username.clone(),
            uidl: row.uidl.clone(),
        },
        size: row.size,
        sha256: row.digest.clone(),
        sent_sha256: row.wire_digest.clone(),
        status: row.state.clone(),
        destination,
        archive,
        readback_sha256: row.readback_digest.clone(),
        verification: row.verify_level.clone().filter(|_| row.verified_at.is_some()),
        verified_at: row.verified_at.clone(),
        copied_at: row.copied_at.clone(),
        source_action: if row.state == "source-deleted" { "deleted" } else { "kept" }.into(),
        deleted_at: row.deleted_at.clone(),
        reason: row.verify_error.clone().or_else(|| row.reason.clone()),
    }
}

/// The installation's signer, for the engine config (`None`: no receipts, as in tests
/// that build an engine by hand).
pub type Signer = std::sync::Arc<ReceiptSigner>;

pub use mailferry_store::ReceiptReader;
