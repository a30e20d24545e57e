#![doc = include_str!("../README.md")]

pub mod config;
mod exporter;
mod layer;
mod logging;
mod metrics;
mod service;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod trace;

pub use exporter::{Admin, serve_admin, serve_metrics};
pub use layer::{RecordMetricsLayer, Telemetry, TelemetrySettings};
pub use logging::{LogHandle, init_logging};
pub use metrics::{BreakerState, CONTENT_TYPE, MAX_LABEL_VALUES, Metrics};
pub use service::{EndpointPattern, RecordMetrics, ResponseFuture};
pub use trace::{Attempt, Tracing, backend_context, set_genai_request};

#[cfg(test)]
mod tests;
