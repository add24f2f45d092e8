//! Telemetry for `serve` and `worker`: the `tracing` subscriber (logs as pretty text on a
//! terminal, JSON otherwise, or as `[log] format` says) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, OTLP trace
//! export through `tracing-opentelemetry` (DESIGN.md §8).
//!
//! The standard variables are honoured: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`
//! (default service name `mailferry`), `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the
//! OTLP default, or `grpc`; `https` endpoints need `grpc` in this build), `_HEADERS`,
//! `_TIMEOUT`, `_COMPRESSION`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`, and
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` to switch export off.
//!
//! What is exported is what the spans carry: ids, counts, sizes, kinds, outcomes, route
//! templates. The engine and the API keep credentials, mail addresses and message content
//! out of their spans and events.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogConfig, LogFormat};

/// Installed telemetry; [`Telemetry::shutdown`] flushes the spans still queued for export.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Build and install the global subscriber: the log filter (`[log] filter`, else
/// `default_filter`), the log format, and the OTLP layer when the environment asks for it.
/// An exporter that cannot be built (a malformed endpoint) is an error: the operator asked
/// for traces and would otherwise silently get none.
pub fn init(log: &LogConfig, default_filter: &str) -> anyhow::Result<Telemetry> {
    use std::io::IsTerminal;
    // Validated at load; a bad filter cannot get here.
    let filter = EnvFilter::try_new(log.filter.as_deref().unwrap_or(default_filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    // async-imap traces raw protocol lines (LOGIN with its password, message bodies).
    let filter = filter.add_directive("async_imap=info".parse().expect("valid directive"));
    let pretty = match log.format {
        LogFormat::Pretty => true,
        LogFormat::Json => false,
        LogFormat::Auto => std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if pretty { fmt.boxed() } else { fmt.json().boxed() };

    let provider = if export_requested() { Some(provider()?) } else { None };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mailferry"))
            // Spans of the exporter's own transport would export themselves, forever.
            .with_filter(filter_fn(|meta| !is_exporter_internal(meta.target())))
    });
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    if provider.is_some() {
        tracing::info!("exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Export what is still queued (bounded by the SDK's shutdown timeout). Blocking work:
    /// the batch processor's own thread does the export, through the tokio runtime, which
    /// must still be running.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        let done = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5))).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: flushing traces at shutdown failed: {e}"),
            Err(e) => eprintln!("warning: flushing traces at shutdown failed: {e}"),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// An OTLP endpoint is configured and export is not switched off.
fn export_requested() -> bool {
    let endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")).is_some();
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let no_exporter = env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    endpoint && !disabled && !no_exporter
}

/// Targets whose spans and events belong to the export path itself.
fn is_exporter_internal(target: &str) -> bool {
    ["opentelemetry", "tonic", "h2", "hyper", "tower", "reqwest"]
        .iter()
        .any(|p| target == *p || target.strip_prefix(p).is_some_and(|rest| rest.starts_with("::") || rest.starts_with('_')))
}

fn provider() -> anyhow::Result<SdkTracerProvider> {
    // The protocol, endpoint, headers, timeout and compression come from the OTEL_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .context("cannot set up OTLP trace export (check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL)")?;
    Ok(SdkTracerProvider::builder()
        // Batched on the SDK's own thread; OTEL_BSP_SCHEDULE_DELAY and friends apply.
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// `service.name` is `mailferry` unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
/// otherwise.
fn resource() -> Resource {
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.split(',').any(|kv| kv.trim_start().starts_with("service.name=")));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if named {
        builder.build()
    } else {
        builder.with_service_name("mailferry").build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_path_is_not_traced() {
        for t in ["opentelemetry_sdk", "opentelemetry_otlp::exporter", "tonic::transport", "h2::proto", "hyper_util::client", "reqwest"] {
            assert!(is_exporter_internal(t), "{t}");
        }
        for t in ["mailferry_engine::drain", "mailferry_api::trace", "tokio", "hyperion"] {
            assert!(!is_exporter_internal(t), "{t}");
        }
    }
}
