//! `PUT /jobs/{id}/schedule` and `DELETE /jobs/{id}/schedule` (issue 17): a job's schedule
//! changed or ended after the job was created. The queue does the work
//! (`JobQueue::set_schedule`): the stored spec's schedule is replaced and a job waiting for
//! its next pass has that run moved to match.

use axum::extract::State;
use axum::Json;
use mailferry_model::{JobState, Schedule, ScheduleText};
use mailferry_store::{ControlOutcome, JobRecord};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, JsonBody};
use crate::spec::schedule::schedule;
use crate::state::AppState;
use crate::views::JobView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(put_schedule, delete_schedule))
}

/// The body checked as a job body's `schedule` is, field by field; an `until` already past
/// would end the schedule at once, so it is refused too.
fn checked(text: ScheduleText, now: chrono::DateTime<chrono::Utc>) -> ApiResult<Schedule> {
    let mut errs = Vec::new();
    let s = schedule(Some(text), &mut errs);
    if let Some(until) = s.and_then(|s| s.until).filter(|u| *u <= now) {
        errs.push(FieldError::invalid("schedule.until", format!("schedule.until ({until}) has passed")));
    }
    match s {
        Some(s) if errs.is_empty() => Ok(s),
        _ => Err(ApiError::Validation { detail: "invalid schedule".into(), errors: errs }),
    }
}

fn conflict(job: &JobRecord, state: JobState) -> ApiError {
    let why = if job.spec.is_none() {
        "it is a CLI job or an archive run".to_owned()
    } else if job.cutover.is_some() {
        "it has a cutover, whose final pass ends the schedule".to_owned()
    } else {
        format!("it is {state}")
    };
    ApiError::Conflict(format!("cannot change the schedule of job {}: {why}", job.id))
}

async fn set(state: &AppState, id: i64, s: Option<Schedule>) -> ApiResult<Json<JobView>> {
    let job = state.store.get_job(id).await?.ok_or_else(|| super::jobs::not_found(id))?;
    match state.store.set_schedule(id, s).await? {
        ControlOutcome::Done(job) => {
            tracing::info!(job.id = id, every = ?s.map(|s| s.every.to_string()), state = %job.state, "schedule changed");
            let counts = state.store.job_counts(id).await?;
            Ok(Json(JobView::new(job, counts)))
        }
        ControlOutcome::Conflict(st) => Err(conflict(&job, st)),
        ControlOutcome::NotFound => Err(super::jobs::not_found(id)),
    }
}

/// Set or change a job's schedule (the job body's `schedule`, checked the same way). A job
/// waiting for its next pass (`scheduled`) has that run moved to `max(not_before, last
/// pass start + every, now)`, or ends in its last pass's state when that is past `until`;
/// a succeeded or partial job becomes `scheduled`, its next pass at `not_before` (or at
/// once); a queued, paused or running job keeps its state and follows the new schedule
/// after its pass.
#[utoipa::path(put, operation_id = "put_job_schedule", path = "/jobs/{id}/schedule", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")), request_body = ScheduleText,
    responses(
        (status = 200, description = "The job with its new schedule and next run", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A CLI job, an archive run, or a job with a cutover", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid schedule (`schedule.every`, `schedule.not_before`, `schedule.until`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put_schedule(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<ScheduleText>,
) -> ApiResult<Json<JobView>> {
    let s = checked(body, chrono::Utc::now())?;
    set(&state, id, Some(s)).await
}

/// End a job's schedule: a job waiting for its next pass ends in the state of its last
/// pass (as when `until` passes), or, if it never ran, is queued for one ordinary pass; a
/// running, queued or paused job keeps its state and ends after its pass. A job without a
/// schedule is answered as it is.
#[utoipa::path(delete, operation_id = "delete_job_schedule", path = "/jobs/{id}/schedule", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job without a schedule", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A CLI job, an archive run, or a job with a cutover", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete_schedule(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> ApiResult<Json<JobView>> {
    set(&state, id, None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked() {
        let now = mailferry_model::schedule::parse_time("2024-05-01T00:00:00Z").unwrap();
        let text = |every: &str, until: Option<&str>| ScheduleText { every: every.into(), not_before: None, until: until.map(Into::into) };
        assert_eq!(checked(text("6h", Some("2024-06-01T00:00:00Z")), now).unwrap().every.to_string(), "6h");
        assert!(checked(text("6 hours", None), now).is_err());
        assert!(checked(text("6h", Some("2024-04-01T00:00:00Z")), now).is_err(), "until passed");
    }
}
