//! What a run tells the world: live counters while it runs ([`Progress`], watched by
//! progress displays and the metrics), and how it ended ([`Outcome`], [`RunReport`]).

use mailferry_model::RunSummary;
use mailferry_store::{JobId, RunId};

/// Live counters for progress displays (copied includes copies found at the destination).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub listed: u64,
    pub to_copy: u64,
    pub copied: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every message is at the destination or deliberately skipped.
    Succeeded,
    /// Some messages failed; each is in the ledger with its error.
    Partial,
    /// Stopped on request between messages; nothing was deleted at the source.
    Cancelled,
}

impl Outcome {
    /// How a run ended, in its ledger row and its receipt (as serialized).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: JobId,
    pub run: RunId,
    pub outcome: Outcome,
    pub summary: RunSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_names_are_their_serialized_form() {
        for o in [Outcome::Succeeded, Outcome::Partial, Outcome::Cancelled] {
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.name()));
        }
    }
}
