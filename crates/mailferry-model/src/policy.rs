//! Job policies: when a source message may be deleted.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// When mailferry may DELE a source message. Whatever the policy, a message is only ever
/// deleted after its copy is confirmed by the destination and recorded in the ledger
/// (DESIGN.md §2, the first law).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeletePolicy {
    /// Never delete (default).
    #[default]
    Keep,
    /// Delete in the same session, right after the copy is confirmed and recorded.
    AfterVerified,
    /// Leave on the server for N days after the first confirmed copy, then delete.
    AfterDays(u32),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid delete policy {0:?}: expected keep, after-verified or after-days:N")]
pub struct PolicyError(pub String);

impl FromStr for DeletePolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "keep" => Ok(Self::Keep),
            "after-verified" => Ok(Self::AfterVerified),
            _ => s
                .strip_prefix("after-days:")
                .and_then(|n| n.parse::<u32>().ok())
                .map(Self::AfterDays)
                .ok_or_else(|| PolicyError(s.to_owned())),
        }
    }
}

impl fmt::Display for DeletePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keep => f.write_str("keep"),
            Self::AfterVerified => f.write_str("after-verified"),
            Self::AfterDays(n) => write!(f, "after-days:{n}"),
        }
    }
}

impl TryFrom<String> for DeletePolicy {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, PolicyError> {
        s.parse()
    }
}

impl From<DeletePolicy> for String {
    fn from(p: DeletePolicy) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_policy() {
        for s in ["keep", "after-verified", "after-days:0", "after-days:30"] {
            assert_eq!(s.parse::<DeletePolicy>().unwrap().to_string(), s);
        }
        for bad in ["", "always", "after-days:", "after-days:-1", "after-days:x"] {
            assert!(bad.parse::<DeletePolicy>().is_err(), "{bad}");
        }
    }
}
