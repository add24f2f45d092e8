//! Trace context across processes: the API stores the W3C `traceparent` (W3C Trace Context
//! §3.2) of the request that created a job, and the worker that runs it — often another
//! process — makes the job's span a child of it, so one trace shows the request, the job,
//! its runs and their messages.
//!
//! Only ids and flags cross: `tracestate` and baggage are not kept. Without the
//! OpenTelemetry layer in the subscriber every function here is a harmless no-op.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";

/// The `traceparent` naming the span `cx` holds, or `None` when it holds no valid one.
pub fn traceparent(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The shape W3C Trace Context §3.2.2 requires: `VV-<32 hex>-<16 hex>-FF`, lowercase hex,
/// version not `ff` (later versions may append `-…` fields). The propagator alone is more
/// lenient (it accepts a short trace id, which would silently name another trace).
pub fn well_formed(traceparent: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut parts = traceparent.split('-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    hex(version, 2) && version != "ff" && (version != "00" || parts.next().is_none()) && hex(trace_id, 32) && hex(parent_id, 16) && hex(flags, 2)
}

/// The remote parent a `traceparent` names, or `None` for anything that is not a valid
/// header value (see [`well_formed`]; all-zero ids are refused too).
pub fn remote_context(traceparent: &str) -> Option<Context> {
    if !well_formed(traceparent) {
        return None;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Make `span` (not entered yet) continue the trace `traceparent` names. Returns whether it
/// did: not when the value is invalid or no OpenTelemetry layer is installed.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) -> bool {
    match remote_context(traceparent) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_valid_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = remote_context(tp).expect("valid");
        assert_eq!(traceparent(&cx).as_deref(), Some(tp));
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "garbage",
            // All-zero trace id and parent id are invalid (W3C Trace Context §3.2.2.3/4).
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(remote_context(bad).is_none(), "{bad:?}");
        }
        assert_eq!(traceparent(&Context::new()), None);
    }
}
