//! Signed migration receipts (issue 14): the ledger rows a receipt is built from, and the
//! receipts themselves. The statements run in the store's one implementation
//! ([`crate::ledger`]).

use crate::dialect::Dialect;
use crate::{JobId, RunId};

/// The ledger columns a receipt entry is made of. Times are RFC 3339 UTC text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptRow {
    pub uidl: String,
    pub size: u64,
    pub state: String,
    pub digest: Option<String>,
    pub wire_digest: Option<String>,
    pub dest_uid: Option<u32>,
    pub dest_uidvalidity: Option<u32>,
    pub readback_digest: Option<String>,
    pub verify_level: Option<String>,
    pub verified_at: Option<String>,
    pub copied_at: Option<String>,
    pub deleted_at: Option<String>,
    /// Why the row was skipped or failed.
    pub reason: Option<String>,
    /// Why its last read-back did not match.
    pub verify_error: Option<String>,
}

/// A receipt as stored: the signed header (canonical JSON), its signature and key, and
/// which run's stored entries it covers (its own, or an earlier identical set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReceipt {
    pub run: RunId,
    pub job: JobId,
    pub entries_run: RunId,
    pub header: String,
    pub signature: String,
    pub public_key: String,
}

/// The ledger rows of `$1` (a job) with a UIDL after `$2`, at most `$3`, in UIDL order.
pub(crate) fn rows_sql<D: Dialect>() -> String {
    format!(
        "SELECT uidl, size, state, digest, wire_digest, dest_uid, dest_uidvalidity, readback_digest, verify_level,
                {}, {}, {}, reason, verify_error
         FROM ledger WHERE job_id = $1 AND uidl > $2 ORDER BY uidl LIMIT $3",
        D::text("verified_at"),
        D::text("copied_at"),
        D::text("deleted_at")
    )
}

/// The columns of a [`StoredReceipt`], in its field order.
pub(crate) const RECEIPT_COLS: &str = "run_id, job_id, entries_run_id, header, signature, public_key";

pub(crate) type ReceiptColumns = (RunId, JobId, RunId, String, String, String);

pub(crate) fn stored((run, job, entries_run, header, signature, public_key): ReceiptColumns) -> StoredReceipt {
    StoredReceipt { run, job, entries_run, header, signature, public_key }
}
