//! API mirrors of the model's enums. The model crate has no OpenAPI dependency, so the
//! API declares the same wire forms here (serde names identical to the model's) with
//! `ToSchema`, and converts at the edge.

use mailferry_model as model;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a connection is protected. `none` needs the host on the server's plaintext allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    Tls,
    Starttls,
    None,
}

/// POP3 authentication; `auto` (default) picks from CAPA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pop3Auth {
    #[default]
    Auto,
    User,
    Apop,
    Plain,
    Xoauth2,
}

/// IMAP authentication; `auto` (default) prefers AUTHENTICATE PLAIN, then LOGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImapAuth {
    #[default]
    Auto,
    Login,
    Plain,
    Xoauth2,
}

/// `queued → running → succeeded | partial | failed | cancelled`, plus `paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Partial,
    Failed,
    Cancelled,
    Paused,
}

/// State of one source message in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerState {
    Listed,
    Copying,
    Copied,
    /// Read back from the destination and matched (see `options.verify`).
    Verified,
    SourceDeleted,
    Skipped,
    Failed,
}

/// Token scopes; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

macro_rules! mirror {
    ($api:ident <=> $model:path { $($v:ident),* $(,)? }) => {
        impl From<$api> for $model {
            fn from(v: $api) -> Self {
                match v { $($api::$v => <$model>::$v,)* }
            }
        }
        impl From<$model> for $api {
            fn from(v: $model) -> Self {
                match v { $(<$model>::$v => $api::$v,)* }
            }
        }
    };
}

mirror!(Security <=> model::Security { Tls, Starttls, None });
mirror!(Pop3Auth <=> model::Pop3Auth { Auto, User, Apop, Plain, Xoauth2 });
mirror!(ImapAuth <=> model::ImapAuth { Auto, Login, Plain, Xoauth2 });
mirror!(JobState <=> model::JobState { Queued, Running, Succeeded, Partial, Failed, Cancelled, Paused });
mirror!(LedgerState <=> model::LedgerState { Listed, Copying, Copied, Verified, SourceDeleted, Skipped, Failed });
mirror!(Scope <=> model::Scope { Read, Write, Admin });

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's wire names must be the model's, or stored data and the API would disagree.
    #[test]
    fn wire_names_match_the_model() {
        for s in model::JobState::ALL {
            assert_eq!(serde_json::to_value(JobState::from(s)).unwrap(), serde_json::to_value(s).unwrap());
        }
        for s in [model::Security::Tls, model::Security::Starttls, model::Security::None] {
            assert_eq!(serde_json::to_value(Security::from(s)).unwrap(), serde_json::to_value(s).unwrap());
        }
        for s in ["listed", "copying", "copied", "verified", "source-deleted", "skipped", "failed"] {
            let m = model::LedgerState::parse(s).unwrap();
            assert_eq!(serde_json::to_value(LedgerState::from(m)).unwrap(), s);
        }
        for s in [model::Pop3Auth::Auto, model::Pop3Auth::Apop, model::Pop3Auth::Xoauth2] {
            assert_eq!(serde_json::to_value(Pop3Auth::from(s)).unwrap(), serde_json::to_value(s).unwrap());
        }
        for s in [model::ImapAuth::Login, model::ImapAuth::Plain] {
            assert_eq!(serde_json::to_value(ImapAuth::from(s)).unwrap(), serde_json::to_value(s).unwrap());
        }
        for s in [model::Scope::Read, model::Scope::Admin] {
            assert_eq!(serde_json::to_value(Scope::from(s)).unwrap(), serde_json::to_value(s).unwrap());
        }
    }
}
