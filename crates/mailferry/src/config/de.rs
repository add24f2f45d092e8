//! Field (de)serializers for the config: numbers that must be positive, lists that may be
//! written comma-separated (the natural form in an environment variable), secrets that
//! serialize as `"<redacted>"`.

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;

use secrecy::SecretString;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::Serializer;

use super::REDACTED;

struct Integer {
    positive: bool,
}

impl<'de> Visitor<'de> for Integer {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(if self.positive { "a positive integer" } else { "a non-negative integer" })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if self.positive && v == 0 {
            return Err(E::invalid_value(Unexpected::Unsigned(0), &self));
        }
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Other("a number too large"), &self))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Other("a number out of range"), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::invalid_type(Unexpected::Float(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        match v.trim().parse::<u64>() {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(Unexpected::Str(v), &self)),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<u64, E> {
        Err(E::invalid_type(Unexpected::Bool(v), &self))
    }
}

fn integer<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D, positive: bool) -> Result<T, D::Error> {
    let v = d.deserialize_any(Integer { positive })?;
    T::try_from(v).map_err(|_| de::Error::invalid_value(Unexpected::Unsigned(v), &"a smaller integer"))
}

/// An integer ≥ 1 (also from a numeric string).
pub fn positive<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    integer(d, true)
}

/// An integer ≥ 0 (also from a numeric string).
pub fn non_negative<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    integer(d, false)
}

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

/// A list of strings: a sequence, or one comma-separated string.
struct List<T>(PhantomData<T>);

impl<'de, T: From<String>> Visitor<'de> for List<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings, or one comma-separated string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<T>, E> {
        Ok(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| T::from(s.to_owned())).collect())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut out = Vec::new();
        while let Some(s) = seq.next_element::<String>()? {
            let s = s.trim();
            if !s.is_empty() {
                out.push(T::from(s.to_owned()));
            }
        }
        Ok(out)
    }
}

pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(List::<String>(PhantomData))
}

pub fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    d.deserialize_any(List::<SecretString>(PhantomData))
}

pub fn redact_option<S: Serializer>(_: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// As many `"<redacted>"` as there are keys: the count is not secret, the keys are.
pub fn redact_list<S: Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| REDACTED))
}
