//! Trace context across processes: see [`mailferry_model::trace`] (the API uses it too).

pub use mailferry_model::trace::*;
