//! Schedules and cutover (issue 17): the `schedule` of a job body, a JSON batch or a CSV
//! batch, and `POST /jobs/{id}/cutover` / `POST /batches/{id}/cutover`, which ask for one
//! final pass with its own delete policy, after which the schedule ends.
//!
//! The queue does the work (`ControlAction::Cutover`): a scheduled, queued or paused job is
//! queued for its final pass at once; a running pass finishes first and the final pass
//! follows it; a finished job (or one without a schedule) gets the final pass as a rerun.

use axum::extract::State;
use axum::Json;
use mailferry_model::{DeletePolicy, JobState};
use mailferry_store::{ControlAction, ControlOutcome, JobFilter, JobRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, FieldError, Problem};
use crate::extract::{ApiPath, JsonBody};
use crate::state::AppState;
use crate::views::JobView;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(cutover_job)).routes(routes!(cutover_batch))
}

/// The final pass.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CutoverBody {
    /// The final pass's delete policy, as a job body's `options.delete`: `keep` (default),
    /// `after-verified` or `after-days:N`. Only copies read back and verified are deleted.
    #[schema(example = "after-verified")]
    pub delete: Option<String>,
}

fn policy(body: CutoverBody) -> ApiResult<DeletePolicy> {
    body.delete.as_deref().unwrap_or("keep").parse::<DeletePolicy>().map_err(|e| ApiError::Validation {
        detail: "invalid cutover".into(),
        errors: vec![FieldError::invalid("delete", e.to_string())],
    })
}

/// Why `delete` cannot apply to this job: a job that reads no copy back deletes nothing
/// (the job body refuses the same pair).
fn refusal(job: &JobRecord, delete: DeletePolicy) -> Option<String> {
    let reads_back = job.spec.as_ref().is_none_or(|s| s.options.verify.reads_back());
    (!reads_back && delete != DeletePolicy::Keep).then(|| {
        format!("job {} has verify none: it reads no copy back, and only copies read back are deleted", job.id)
    })
}

fn conflict(job: i64, state: JobState) -> String {
    match state {
        JobState::Running => format!("cannot cut over job {job}: its final pass is running"),
        s => format!("cannot cut over job {job}: it is {s}"),
    }
}

/// Cut a job over: one final pass now with the given delete policy, then the job's
/// schedule ends. A running pass finishes first and the final pass follows it; a job
/// without a schedule, or a finished one, gets the final pass as a rerun. The job's
/// `cutover` shows the policy, and when the final pass started.
#[utoipa::path(post, operation_id = "cutover_job", path = "/jobs/{id}/cutover", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")), request_body = CutoverBody,
    responses(
        (status = 200, description = "The job after the request: queued for its final pass, or running the pass the final one follows", body = JobView),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job's final pass is running already, or the job is an archive run or a CLI job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `delete`, or a deleting policy for a job with verify none", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cutover_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<CutoverBody>,
) -> ApiResult<Json<JobView>> {
    let delete = policy(body)?;
    let job = state.store.get_job(id).await?.ok_or_else(|| super::jobs::not_found(id))?;
    if let Some(why) = refusal(&job, delete) {
        return Err(ApiError::Validation { detail: "invalid cutover".into(), errors: vec![FieldError::invalid("delete", why)] });
    }
    match state.store.control(id, ControlAction::Cutover(delete)).await? {
        ControlOutcome::Done(job) => {
            tracing::info!(job.id = id, %delete, state = %job.state, "cutover requested");
            let counts = state.store.job_counts(id).await?;
            Ok(Json(JobView::new(job, counts)))
        }
        ControlOutcome::Conflict(st) => Err(ApiError::Conflict(conflict(id, st))),
        ControlOutcome::NotFound => Err(super::jobs::not_found(id)),
    }
}

/// A batch's cutover: which jobs will make their final pass, and which were refused.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCutover {
    /// The batch.
    pub id: i64,
    /// The final passes' delete policy.
    #[schema(example = "after-verified")]
    pub delete: String,
    /// Jobs cut over (each queued for its final pass, or to make it after its running pass).
    pub jobs: Vec<i64>,
    /// Jobs left as they were, with why.
    pub refused: Vec<CutoverRefused>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CutoverRefused {
    pub job_id: i64,
    pub state: JobState,
    pub detail: String,
}

/// Cut a batch over: every job of the batch as `POST /jobs/{id}/cutover` does, in id
/// order; jobs it cannot apply to (a final pass already running, verify none with a
/// deleting policy) are listed under `refused` and left as they were. The batch report
/// (`GET /batches/{id}/report`) then shows per mailbox what each final pass copied and
/// deleted.
#[utoipa::path(post, operation_id = "cutover_batch", path = "/batches/{id}/cutover", tag = "batches",
    params(("id" = i64, Path, description = "Batch id")), request_body = CutoverBody,
    responses(
        (status = 200, description = "The jobs cut over and those refused", body = BatchCutover),
        (status = 404, description = "No such batch", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `delete`", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cutover_batch(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<CutoverBody>,
) -> ApiResult<Json<BatchCutover>> {
    let delete = policy(body)?;
    state.store.get_batch(id).await?.ok_or_else(|| ApiError::NotFound(format!("there is no batch {id}")))?;
    let mut out = BatchCutover { id, delete: delete.to_string(), jobs: Vec::new(), refused: Vec::new() };
    let mut filter = JobFilter { batch: Some(id), limit: 500, ..JobFilter::default() };
    loop {
        let jobs = state.store.list_jobs(&filter).await?;
        for job in &jobs {
            if let Some(detail) = refusal(job, delete) {
                out.refused.push(CutoverRefused { job_id: job.id, state: job.state, detail });
                continue;
            }
            match state.store.control(job.id, ControlAction::Cutover(delete)).await? {
                ControlOutcome::Done(_) => out.jobs.push(job.id),
                ControlOutcome::Conflict(st) => {
                    out.refused.push(CutoverRefused { job_id: job.id, state: st, detail: conflict(job.id, st) })
                }
                // Deleted meanwhile (jobs are not deleted today): nothing to cut over.
                ControlOutcome::NotFound => {}
            }
        }
        match jobs.last() {
            Some(last) if jobs.len() == filter.limit as usize => filter.after = Some(last.id),
            _ => break,
        }
    }
    tracing::info!(batch.id = id, %delete, jobs = out.jobs.len(), refused = out.refused.len(), "batch cutover requested");
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::schedule::{schedule, schedule_of};
    use mailferry_model::ScheduleText;

    fn text(every: &str, not_before: Option<&str>, until: Option<&str>) -> Option<ScheduleText> {
        Some(ScheduleText { every: every.into(), not_before: not_before.map(Into::into), until: until.map(Into::into) })
    }

    #[test]
    fn schedules_are_checked_field_by_field() {
        let mut errs = Vec::new();
        let s = schedule(text("6h", Some("2024-05-01T22:00:00+02:00"), None), &mut errs).unwrap();
        assert!(errs.is_empty());
        assert_eq!(s.every.to_string(), "6h");
        assert_eq!(schedule(None, &mut errs), None);
        assert_eq!(schedule(text("6 hours", Some("soon"), Some("2024-05-01T00:00:00Z")), &mut errs), None);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["schedule.every", "schedule.not_before"]);
        errs.clear();
        assert_eq!(schedule(text("1d", Some("2024-05-02T00:00:00Z"), Some("2024-05-01T00:00:00Z")), &mut errs), None);
        assert_eq!(errs[0].field, "schedule.until");
        // CSV: nothing given, no schedule; a start without a cadence is a missing cadence.
        assert_eq!(schedule_of(Some(" ".into()), None, None), None);
        let t = schedule_of(None, Some("2024-05-02T00:00:00Z".into()), None);
        errs.clear();
        assert_eq!(schedule(t, &mut errs), None);
        assert_eq!(errs[0].field, "schedule.every");
    }

    #[test]
    fn csv_rows_carry_their_schedule_columns() {
        let csv = "source_host,source_user,source_password,target_kind,target_archive,every,Schedule-Until\n\
                   pop.example.com,ann,pw,archive,legal,6h,2024-06-01T00:00:00Z\n\
                   pop.example.com,bob,pw,archive,legal,,\n";
        let rows = crate::handlers::v1::batches::parse_csv(csv.as_bytes()).unwrap();
        let bodies: Vec<_> = rows.into_iter().map(|r| r.unwrap()).collect();
        let first = bodies[0].schedule.clone().unwrap();
        assert_eq!((first.every.as_str(), first.until.as_deref()), ("6h", Some("2024-06-01T00:00:00Z")));
        assert_eq!(bodies[1].schedule, None, "empty cells: no schedule");
    }

    #[test]
    fn cutover_policies() {
        assert_eq!(policy(CutoverBody::default()).unwrap(), DeletePolicy::Keep);
        assert_eq!(policy(CutoverBody { delete: Some("after-verified".into()) }).unwrap(), DeletePolicy::AfterVerified);
        assert!(policy(CutoverBody { delete: Some("now".into()) }).is_err());
    }
}
