//! Database URLs may carry passwords (`user:secret@`, `?password=`): shown only redacted
//! in logs, `config check` output and Debug prints.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let userinfo_redacted = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    // libpq-style `?password=…` (and `sslpassword=…`) in the query string too.
    match userinfo_redacted.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => userinfo_redacted,
    }
}

/// A database URL, which may carry a password: Debug, Display and Serialize show it
/// redacted ([`redact_url`]); only [`DatabaseUrl::expose`] gives the whole URL, to connect.
#[derive(Clone)]
pub struct DatabaseUrl(SecretString);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(SecretString::from(url.into()))
    }

    /// The URL with its password: for opening the connection, never for printing.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// `postgres://user:***@host/db`.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }

    /// `postgres://` or `postgresql://`.
    pub fn is_postgres(&self) -> bool {
        self.expose().starts_with("postgres")
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// The schemes the stores open; anything else is refused without echoing the value
/// (it may hold a password).
impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let url = String::deserialize(d)?;
        let url = url.trim();
        if ["postgres://", "postgresql://", "sqlite://"].iter().any(|p| url.starts_with(p)) {
            Ok(Self::new(url))
        } else {
            Err(serde::de::Error::custom("expected a postgres://, postgresql:// or sqlite:// URL"))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_database_passwords() {
        assert_eq!(super::redact_url("postgres://u:pw@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact_url("sqlite://./x.db"), "sqlite://./x.db");
        assert_eq!(
            super::redact_url("postgres://u@h/db?sslmode=require&password=pw&sslpassword=k"),
            "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
        );
    }

    #[test]
    fn database_urls_print_redacted() {
        let url = super::DatabaseUrl::new("postgres://u:pw@h/db");
        assert_eq!(format!("{url} {url:?}"), "postgres://u:***@h/db postgres://u:***@h/db");
        assert_eq!(url.expose(), "postgres://u:pw@h/db");
        assert!(url.is_postgres());
    }
}
