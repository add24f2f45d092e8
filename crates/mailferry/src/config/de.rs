//! Field (de)serializers for the config: addresses, durations written like `"1h"`, secrets
//! that serialize as `"<redacted>"`, and (from the model crate, which the API's `[api]`
//! section shares) numbers that must be positive and lists that may be written comma-separated.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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

/// A positive duration: one or more `<number><unit>` (units `ms`, `s`, `m`, `h`, `d`),
/// e.g. `"1h"`, `"90s"`, `"1h30m"`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration like \"1h\", \"30m\", \"90s\" or \"1d\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
        }
    }
    d.deserialize_any(V)
}

/// `"1h"`, `"90s"`, `"1h30m"`; `None` for anything else (no unit, unknown unit, overflow).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let n: u64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let ms_per = match rest.get(..unit_len)? {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(Duration::from_millis(n.checked_mul(ms_per)?))?;
        rest = rest.get(unit_len..)?;
    }
    Some(total)
}

/// The largest whole unit: `"1h"`, `"90s"`, `"1500ms"`.
pub fn serialize_duration<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let ms = v.as_millis();
    let text = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")]
        .iter()
        .find(|(per, _)| ms.checked_rem(*per) == Some(0))
        .map_or_else(|| format!("{ms}ms"), |(per, unit)| format!("{}{unit}", ms / per));
    s.serialize_str(&text)
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
