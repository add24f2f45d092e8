//! Archive verify and export runs as queued jobs: the API records the run with the archive
//! (its public id) and queues one of these; a worker claims it with a lease like any
//! migration job, so the run survives a restart of the process that started it, can be
//! cancelled, streams its state changes, and scales out with the workers.

use serde::{Deserialize, Serialize};

/// What a queued archive job does. Stored as JSON in the job's `task` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ArchiveTask {
    /// Re-hash every blob, check every occurrence, walk the event chain.
    Verify {
        archive: String,
        /// The archive's record of this run (`…/verify/{run}`).
        run: i64,
        /// Who asked (for the archive's event log): a token's id and name, never a token.
        who: String,
    },
    /// Write the distinct messages matching `query` to `file`.
    Export {
        archive: String,
        run: i64,
        who: String,
        /// The archive's search query (its own JSON shape; the archive crate parses it).
        query: serde_json::Value,
        /// `mbox` or `eml-zip`.
        format: String,
        /// Where the export is written (under the archive's `exports/` directory).
        file: String,
    },
}

impl ArchiveTask {
    pub fn archive(&self) -> &str {
        match self {
            Self::Verify { archive, .. } | Self::Export { archive, .. } => archive,
        }
    }

    pub fn run(&self) -> i64 {
        match self {
            Self::Verify { run, .. } | Self::Export { run, .. } => *run,
        }
    }

    /// `verify` or `export`, as the archive's run records name them.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Verify { .. } => "verify",
            Self::Export { .. } => "export",
        }
    }

    /// The job's key: one job per archive run.
    pub fn key(&self) -> String {
        task_key(self.archive(), self.run())
    }

    /// The job's "source" column: the archive, so per-host caps count its runs together.
    pub fn host(&self) -> String {
        format!("archive:{}", self.archive())
    }
}

/// The key of the job running run `run` of `archive`.
pub fn task_key(archive: &str, run: i64) -> String {
    format!("archive-run:{archive}:{run}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_round_trip_as_tagged_json() {
        let t = ArchiveTask::Export {
            archive: "legal".into(),
            run: 7,
            who: "api-token:1:admin".into(),
            query: serde_json::json!({"account": "bob"}),
            format: "mbox".into(),
            file: "/data/archive/legal/exports/export-1-7.mbox".into(),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.starts_with(r#"{"kind":"export","#), "{json}");
        assert_eq!(serde_json::from_str::<ArchiveTask>(&json).unwrap(), t);
        assert_eq!((t.archive(), t.run(), t.kind(), t.key().as_str()), ("legal", 7, "export", "archive-run:legal:7"));
        assert!(serde_json::from_str::<ArchiveTask>(r#"{"kind":"purge"}"#).is_err());
    }
}
