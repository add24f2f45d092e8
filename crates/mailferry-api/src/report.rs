//! Reports as response bodies: a job's report (JSON or CSV) streamed page by page from the
//! ledger, so memory stays flat whatever the ledger's size, and CSV cells made safe to
//! open in a spreadsheet.
//!
//! The streamed JSON has the bytes `Json(JobReport { .. })` had: the job and its counts are
//! serialized first, then each ledger row with the same serializer, with the separators
//! serde_json's compact writer puts between them.

use std::borrow::Cow;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, TryStreamExt};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::views::{JobView, MessageView};

/// Ledger rows asked for per query (and written per body chunk). The store may return
/// fewer (it caps pages at 500), so the report reads on until a page comes back empty.
pub(crate) const REPORT_PAGE: u32 = 500;

pub(crate) const REPORT_COLUMNS: [&str; 11] = [
    "uidl", "size", "state", "reason", "digest", "dest_uid", "internal_date", "internal_date_source",
    "first_seen_at", "copied_at", "deleted_at",
];

/// OWASP "CSV injection": a cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage
/// return may be run as a formula by a spreadsheet; it gets a leading `'`, which makes it
/// text. UIDLs, reasons and errors come from mail servers, so every cell is passed through
/// this (the JSON report keeps the exact values).
pub fn csv_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// Write one record, every cell through [`csv_cell`].
pub(crate) fn write_record<W: std::io::Write, S: AsRef<str>>(
    w: &mut csv::Writer<W>,
    cells: impl IntoIterator<Item = S>,
) -> ApiResult<()> {
    let cells: Vec<S> = cells.into_iter().collect();
    w.write_record(cells.iter().map(|c| csv_cell(c.as_ref()).into_owned()))
        .map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))
}

/// A `text/csv` attachment.
pub(crate) fn csv_response(body: impl Into<Body>, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        body.into(),
    )
        .into_response()
}

/// Where a report stream is.
enum Step {
    Head(Box<JobView>),
    Page { after: Option<String>, first: bool },
    Tail,
    Done,
}

/// The job's report as a streamed body: JSON (`JobReport`) or CSV (one row per message).
/// A store error part-way ends the body early (the client sees a truncated response; the
/// status was sent with the first bytes) and is logged.
pub(crate) fn job_report(state: AppState, job: JobView, csv: bool) -> Response {
    let id = job.id;
    let body = Body::from_stream(report_stream(state, job, csv));
    if csv {
        csv_response(body, &format!("job-{id}-report.csv"))
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

fn report_stream(state: AppState, job: JobView, csv: bool) -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    let id = job.id;
    let chunks = stream::unfold(Step::Head(Box::new(job)), move |step| {
        let state = state.clone();
        async move {
            let (chunk, next) = match step {
                Step::Head(job) => (head(&job, csv), Step::Page { after: None, first: true }),
                Step::Page { after, first } => match state.store.ledger_page(id, after.as_deref(), REPORT_PAGE).await {
                    Ok(rows) => {
                        let next = match rows.last() {
                            Some(last) => Step::Page { after: Some(last.uidl.clone()), first: false },
                            None => Step::Tail,
                        };
                        (page(rows.into_iter().map(MessageView::from), csv, first), next)
                    }
                    Err(e) => (Err(ApiError::from(e)), Step::Done),
                },
                Step::Tail => (Ok(if csv { Vec::new() } else { b"]}".to_vec() }), Step::Done),
                Step::Done => return None,
            };
            let item = chunk.map(Bytes::from).map_err(|e| {
                tracing::error!(job.id = id, error = %e, "the job report stopped part-way");
                std::io::Error::other("the job report could not be completed")
            });
            Some((item, next))
        }
    });
    // An empty page (a job without a ledger, the CSV tail) is no chunk at all.
    chunks.try_filter(|bytes| std::future::ready(!bytes.is_empty()))
}

/// JSON: `{"job":…,"counts":…,"messages":[`; CSV: the header row.
fn head(job: &JobView, csv: bool) -> ApiResult<Vec<u8>> {
    if csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_record(&mut w, REPORT_COLUMNS)?;
        return finish(w);
    }
    let mut out = b"{\"job\":".to_vec();
    serde_json::to_writer(&mut out, job).map_err(json_err)?;
    out.extend_from_slice(b",\"counts\":");
    serde_json::to_writer(&mut out, &job.counts).map_err(json_err)?;
    out.extend_from_slice(b",\"messages\":[");
    Ok(out)
}

/// One page of rows; `first`: no row was written before (no leading comma in JSON).
fn page(rows: impl Iterator<Item = MessageView>, csv: bool, first: bool) -> ApiResult<Vec<u8>> {
    if csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        for m in rows {
            write_record(&mut w, csv_row(&m))?;
        }
        return finish(w);
    }
    let mut out = Vec::new();
    for (i, m) in rows.enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &m).map_err(json_err)?;
    }
    Ok(out)
}

fn csv_row(m: &MessageView) -> [String; 11] {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let state = serde_json::to_value(m.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    [
        m.uidl.clone(),
        m.size.to_string(),
        state,
        opt(&m.reason),
        opt(&m.digest),
        m.dest_uid.map(|u| u.to_string()).unwrap_or_default(),
        opt(&m.internal_date),
        opt(&m.internal_date_source),
        m.first_seen_at.clone(),
        opt(&m.copied_at),
        opt(&m.deleted_at),
    ]
}

fn finish(w: csv::Writer<Vec<u8>>) -> ApiResult<Vec<u8>> {
    w.into_inner().map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))
}

fn json_err(e: serde_json::Error) -> ApiError {
    ApiError::Internal(format!("writing JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_leaders_are_defused() {
        for (raw, cell) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("a=b", "a=b"),
            ("", ""),
            ("123", "123"),
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
            ("'=x", "'=x"),
        ] {
            assert_eq!(csv_cell(raw), cell, "{raw:?}");
        }
    }

    #[test]
    fn rows_are_written_with_their_cells_defused_and_quoted() {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_record(&mut w, ["=A1,B1", "ok", "-\"q\""]).unwrap();
        assert_eq!(String::from_utf8(finish(w).unwrap()).unwrap(), "\"'=A1,B1\",ok,\"'-\"\"q\"\"\"\n");
    }
}
