//! Field deserializers for configuration sections (the server's `mailferry.toml` and the
//! sections other crates own, such as the API's `[api]`): numbers that must be positive,
//! lists that may be written comma-separated (the natural form in an environment
//! variable). Numbers are also read from strings, as environment variables are.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};

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

/// A list of strings, blank entries dropped.
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    list_of(d)
}

/// As [`list`], each entry wrapped (a `SecretString`, for key lists).
pub fn list_of<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Vec<T>, D::Error> {
    d.deserialize_any(List::<T>(PhantomData))
}
