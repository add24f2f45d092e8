//! Ledger states and the run summary built from them.

use serde::Serialize;

/// The state of one source message (one UIDL) in the ledger. Transitions:
/// `listed → copying → copied → verified → source-deleted`, or `skipped` / `failed`.
/// `verified` means the copy was read back from the destination and matched at the
/// job's [`VerifyLevel`]; `--delete after-verified` deletes only those.
/// `copying` means an APPEND may have reached the destination but its outcome was
/// never recorded (a crash): the next run checks the destination before copying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(description = "State of one source message in the ledger."))]
#[serde(rename_all = "kebab-case")]
pub enum LedgerState {
    Listed,
    Copying,
    Copied,
    Verified,
    SourceDeleted,
    Skipped,
    Failed,
}

impl LedgerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listed => "listed",
            Self::Copying => "copying",
            Self::Copied => "copied",
            Self::Verified => "verified",
            Self::SourceDeleted => "source-deleted",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "listed" => Self::Listed,
            "copying" => Self::Copying,
            "copied" => Self::Copied,
            "verified" => Self::Verified,
            "source-deleted" => Self::SourceDeleted,
            "skipped" => Self::Skipped,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// The destination holds this message (possibly deleted at the source since).
    pub fn is_copied(self) -> bool {
        matches!(self, Self::Copied | Self::Verified | Self::SourceDeleted)
    }

    /// Still at the source, with a confirmed copy (read back or not).
    pub fn is_at_source_with_copy(self) -> bool {
        matches!(self, Self::Copied | Self::Verified)
    }
}

/// How a copy read back from the destination is compared with what was sent (DESIGN.md
/// §3). `exact` is the default and the only level at which nothing is assumed; the weaker
/// levels exist for destinations that rewrite messages on the way in (Gmail and Exchange /
/// Microsoft 365 add or rewrite headers), chosen explicitly by an admin and recorded per
/// message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyLevel {
    /// Every byte: the SHA-256 of the copy equals that of the bytes sent.
    #[default]
    Exact,
    /// The body (everything after the header block) is byte-identical; headers may differ.
    Body,
    /// Only the size matches. Weakest: use only where nothing else can pass.
    Size,
    /// No read-back at all (`--verify none`, API `"verify": false`): keep-only runs at
    /// full speed. Copies stay `copied`, never `verified`, so nothing can be deleted: a
    /// deleting policy with `none` is refused when the job is made.
    None,
}

impl VerifyLevel {
    /// Whether copies are read back at all.
    pub fn reads_back(self) -> bool {
        self != Self::None
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Body => "body",
            Self::Size => "size",
            Self::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exact" => Self::Exact,
            "body" => Self::Body,
            "size" => Self::Size,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// One message that could not be copied, as reported to the user.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageFailure {
    pub uidl: String,
    pub error: String,
}

/// Counts for one run, all read back from the ledger (DESIGN.md §2.6: honest progress).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunSummary {
    /// Messages on the source when the run listed it.
    pub listed: u64,
    /// Messages copied by this run.
    pub copied: u64,
    /// Messages already at the destination before this run (earlier runs, or found there).
    pub already_present: u64,
    /// Messages deliberately skipped by policy (too large, APPENDLIMIT, ...).
    pub skipped: u64,
    pub failed: u64,
    /// Messages deleted from the source by this run.
    pub deleted: u64,
    /// Bytes copied by this run.
    pub bytes: u64,
    pub dry_run: bool,
    pub failures: Vec<MessageFailure>,
    pub skips: Vec<MessageFailure>,
    /// UIDLs the source gave to other bytes since they were copied (a reused UIDL, told by
    /// its LIST size), each with what changed: copied as new messages by this run, deletable
    /// only after their own copies; the old copies stay. Absent when there were none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reused: Vec<MessageFailure>,
    /// Archive targets: the Merkle root over the digests this run ingested (also written to
    /// the archive's event log), so any one message can later be proven with a short path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// Archive targets: how many distinct digests the root covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_leaves: Option<u64>,
}
