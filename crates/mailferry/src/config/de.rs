//! Field (de)serializers for the config: addresses, secrets that serialize as
//! `"<redacted>"`, and (from the model crate, which the API's `[api]` section shares)
//! numbers that must be positive and lists that may be written comma-separated.

use std::fmt;
use std::net::SocketAddr;

pub use mailferry_model::de::{list, non_negative, positive};
use secrecy::SecretString;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Serializer;

use super::REDACTED;

/// `host:port`.
pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an address and port like 127.0.0.1:8080 or [::]:8080")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
            v.trim().parse().map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// An optional `host:port`.
pub fn option_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    socket_addr(d).map(Some)
}

pub fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    mailferry_model::de::list_of(d)
}

pub fn redact_option<S: Serializer>(_: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// As many `"<redacted>"` as there are keys: the count is not secret, the keys are.
pub fn redact_list<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| REDACTED))
}
