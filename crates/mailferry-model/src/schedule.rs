//! A job's schedule (issue 17): delta passes at a cadence from `not_before` until `until`,
//! the phased migration admins run by hand (pre-stage, deltas, cutover).
//!
//! Stored in the job's spec; the queue keeps only the next run's time (`jobs.not_before`
//! of a `scheduled` job). Times are RFC 3339; the cadence is `<n><unit>` with unit `s`, `m`,
//! `h` or `d` (`30m`, `6h`, `1d`). Seconds exist for tests and demonstrations: a pass
//! never overlaps the previous one, so a short cadence only means "again as soon as the
//! last pass ended".

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The shortest cadence accepted.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// The longest cadence accepted (a year): beyond it a number is more likely a typo.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cadence {0:?}: expected a number and a unit, s, m, h or d (\"30m\", \"6h\", \"1d\"), from 1s to 366d")]
    Every(String),
    #[error("invalid time {0:?}: expected RFC 3339, e.g. 2024-05-01T22:00:00Z")]
    Time(String),
    #[error("until is not after not_before")]
    Order,
}

/// The time between the starts of two passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Every(Duration);

impl Every {
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Every {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        let bad = || ScheduleError::Every(s.to_owned());
        let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(unit_at);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let scale = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let d = Duration::from_secs(n.checked_mul(scale).ok_or_else(bad)?);
        if !(MIN_EVERY..=MAX_EVERY).contains(&d) {
            return Err(bad());
        }
        Ok(Self(d))
    }
}

impl fmt::Display for Every {
    /// The largest unit that divides the cadence exactly: `90m`, `6h`, `2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match [(86_400, 'd'), (3_600, 'h'), (60, 'm')].into_iter().find(|(scale, _)| s / scale * scale == s) {
            Some((scale, unit)) => write!(f, "{}{unit}", s / scale),
            None => write!(f, "{s}s"),
        }
    }
}

impl TryFrom<String> for Every {
    type Error = ScheduleError;
    fn try_from(s: String) -> Result<Self, ScheduleError> {
        s.parse()
    }
}

impl From<Every> for String {
    fn from(e: Every) -> String {
        e.to_string()
    }
}

/// An RFC 3339 time, parsed (any offset) and kept in UTC.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, ScheduleError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| ScheduleError::Time(s.to_owned()))
}

/// The text form times are stored and shown in: RFC 3339 UTC with milliseconds.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Delta passes every `every`, the first not before `not_before` (else at once), none
/// starting after `until` (else until a cutover or a cancel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ScheduleText", into = "ScheduleText")]
pub struct Schedule {
    pub not_before: Option<DateTime<Utc>>,
    pub every: Every,
    pub until: Option<DateTime<Utc>>,
}

/// The stored (and API) form of a [`Schedule`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleText {
    /// The first pass starts at this time (RFC 3339), not before; default: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(example = "2024-05-01T22:00:00Z"))]
    pub not_before: Option<String>,
    /// Time between the starts of two passes: a number and `s`, `m`, `h` or `d`, from `1s` to
    /// `366d`. A pass never overlaps the previous one.
    #[cfg_attr(feature = "openapi", schema(example = "6h"))]
    pub every: String,
    /// No pass starts after this time (RFC 3339); the job then ends in the state of its last
    /// pass. Default: until a cutover or a cancel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl TryFrom<ScheduleText> for Schedule {
    type Error = ScheduleError;
    fn try_from(t: ScheduleText) -> Result<Self, ScheduleError> {
        let not_before = t.not_before.as_deref().map(parse_time).transpose()?;
        let until = t.until.as_deref().map(parse_time).transpose()?;
        if let (Some(a), Some(b)) = (not_before, until) {
            if b <= a {
                return Err(ScheduleError::Order);
            }
        }
        Ok(Self { not_before, every: t.every.parse()?, until })
    }
}

impl From<Schedule> for ScheduleText {
    fn from(s: Schedule) -> Self {
        Self { not_before: s.not_before.map(fmt_time), every: s.every.to_string(), until: s.until.map(fmt_time) }
    }
}

impl Schedule {
    /// When the pass after one that started at `started` is due, or `None` when that is past
    /// `until` (the schedule has ended).
    pub fn next_run(&self, started: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = started + chrono::Duration::from_std(self.every.duration()).ok()?;
        match self.until {
            Some(until) if next > until => None,
            _ => Some(next),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cadences() {
        assert_eq!("6h".parse::<Every>().unwrap().duration(), Duration::from_secs(6 * 3600));
        assert_eq!("30m".parse::<Every>().unwrap().duration(), Duration::from_secs(1800));
        assert_eq!("1d".parse::<Every>().unwrap().duration(), Duration::from_secs(86_400));
        assert_eq!("2s".parse::<Every>().unwrap().duration(), Duration::from_secs(2));
        assert_eq!("90m".parse::<Every>().unwrap().to_string(), "90m");
        assert_eq!("120m".parse::<Every>().unwrap().to_string(), "2h");
        for bad in ["", "6", "h", "0s", "6H", "6 h", "-1h", "1.5h", "6hours", "367d", "99999999999999999999d", "1h30m", "６h"] {
            assert!(bad.parse::<Every>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn schedules_round_trip_and_end() {
        let json = r#"{"not_before":"2024-05-01T22:00:00+02:00","every":"6h","until":"2024-05-03T00:00:00Z"}"#;
        let s: Schedule = serde_json::from_str(json).unwrap();
        assert_eq!(fmt_time(s.not_before.unwrap()), "2024-05-01T20:00:00.000Z");
        let again: Schedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
        let t = parse_time("2024-05-02T12:00:00Z").unwrap();
        assert_eq!(s.next_run(t), Some(parse_time("2024-05-02T18:00:00Z").unwrap()));
        assert_eq!(s.next_run(parse_time("2024-05-02T19:00:00Z").unwrap()), None);
        assert!(serde_json::from_str::<Schedule>(r#"{"every":"6h","until":"2024-05-01T00:00:00Z","not_before":"2024-05-02T00:00:00Z"}"#).is_err());
        assert!(serde_json::from_str::<Schedule>(r#"{"every":"6h","until":"tomorrow"}"#).is_err());
        assert!(serde_json::from_str::<Schedule>(r#"{"every":"6h","unknown":1}"#).is_err());
    }

    proptest! {
        #[test]
        fn every_round_trips(n in 1u64..=366 * 86_400) {
            let e: Every = format!("{n}s").parse().unwrap();
            prop_assert_eq!(e.duration().as_secs(), n);
            let shown = e.to_string();
            prop_assert_eq!(shown.parse::<Every>().unwrap(), e);
        }

        #[test]
        fn units_scale(n in 1u64..=366, unit in prop::sample::select(vec![('s', 1u64), ('m', 60), ('h', 3600), ('d', 86_400)])) {
            let e: Every = format!("{n}{}", unit.0).parse().unwrap();
            prop_assert_eq!(e.duration().as_secs(), n * unit.1);
        }

        #[test]
        fn never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Every>();
            let _ = parse_time(&s);
        }
    }
}
