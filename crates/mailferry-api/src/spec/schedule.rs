//! A job's `schedule` as bodies and CSV rows give it, checked field by field (issue 17).
//! Below the handlers: job validation (`spec.rs`), CSV batches and cutover use it.

use mailferry_model::schedule::parse_time;
use mailferry_model::{Every, Schedule, ScheduleText};

use crate::error::FieldError;

/// A body's `schedule`, checked field by field (`schedule.every`, …).
pub(crate) fn schedule(text: Option<ScheduleText>, errs: &mut Vec<FieldError>) -> Option<Schedule> {
    let text = text?;
    let before = errs.len();
    let every = text.every.parse::<Every>().map_err(|e| errs.push(FieldError::invalid("schedule.every", e.to_string()))).ok();
    let mut time = |field: &str, value: Option<String>| match value.as_deref().map(parse_time) {
        Some(Err(e)) => {
            errs.push(FieldError::invalid(field, e.to_string()));
            None
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let not_before = time("schedule.not_before", text.not_before);
    let until = time("schedule.until", text.until);
    if let (Some(a), Some(b)) = (not_before, until) {
        if b <= a {
            errs.push(FieldError::invalid("schedule.until", "schedule.until must be after schedule.not_before"));
        }
    }
    match every {
        Some(every) if errs.len() == before => Some(Schedule { not_before, every, until }),
        _ => None,
    }
}

/// A schedule from the CSV columns (or query parameters) `every`, `not_before`, `until`;
/// none when all three are empty.
pub(crate) fn schedule_of(every: Option<String>, not_before: Option<String>, until: Option<String>) -> Option<ScheduleText> {
    let given = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let (every, not_before, until) = (given(every), given(not_before), given(until));
    if every.is_none() && not_before.is_none() && until.is_none() {
        return None;
    }
    // A start or an end without a cadence is reported as a missing `every`.
    Some(ScheduleText { every: every.unwrap_or_default(), not_before, until })
}

/// A CSV row's schedule columns.
pub(crate) fn csv_schedule(text: &dyn Fn(&str) -> Option<String>) -> Option<ScheduleText> {
    schedule_of(text("schedule_every"), text("schedule_not_before"), text("schedule_until"))
}
