//! [`RecordMetricsLayer`] and the compiled telemetry settings of one config.

use std::sync::Arc;

use serde_json::{Map, Value};
use switchboard_core::config::{join_path, key_segment};
use switchboard_core::{ConfigError, Usage};
use tower::Layer;

use crate::config::{
    LOGGING_NAMESPACE, LoggingConfig, OPENTELEMETRY_NAMESPACE, OpenTelemetryConfig,
    SWITCHBOARD_NAMESPACE, SwitchboardTelemetryConfig,
};
use crate::metrics::{EndpointSeries, Metrics};
use crate::service::RecordMetrics;
use crate::trace::Tracing;

/// The telemetry namespaces of a config's root `extra_config`, checked.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TelemetrySettings {
    /// `telemetry/opentelemetry`.
    pub opentelemetry: Option<OpenTelemetryConfig>,
    /// `telemetry/logging`.
    pub logging: Option<LoggingConfig>,
    /// `switchboard/telemetry`.
    pub switchboard: SwitchboardTelemetryConfig,
}

impl TelemetrySettings {
    /// Reads the three namespaces from the root `extra_config` (at `path`).
    pub fn from_extra(extra: &Map<String, Value>, path: &str) -> Result<Self, Vec<ConfigError>> {
        let at = |name: &str| join_path(path, &key_segment(name));
        let mut errors = Vec::new();
        let mut settings = Self::default();
        if let Some(value) = extra.get(OPENTELEMETRY_NAMESPACE) {
            match OpenTelemetryConfig::from_config(value, &at(OPENTELEMETRY_NAMESPACE)) {
                Ok(config) => settings.opentelemetry = Some(config),
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if let Some(value) = extra.get(LOGGING_NAMESPACE) {
            match LoggingConfig::from_config(value, &at(LOGGING_NAMESPACE)) {
                Ok(config) => settings.logging = Some(config),
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if let Some(value) = extra.get(SWITCHBOARD_NAMESPACE) {
            match SwitchboardTelemetryConfig::from_config(value, &at(SWITCHBOARD_NAMESPACE)) {
                Ok(config) => settings.switchboard = config,
                Err(mut errs) => errors.append(&mut errs),
            }
        }
        if errors.is_empty() {
            Ok(settings)
        } else {
            Err(errors)
        }
    }
}

/// What the layer shares between requests: the metrics (kept across
/// reloads), the tracer and the settings of the current config.
#[derive(Debug)]
pub struct Telemetry {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tracing: Tracing,
    pub(crate) skip_paths: Vec<String>,
    pub(crate) switchboard: SwitchboardTelemetryConfig,
    pub(crate) usage_log: bool,
}

impl Telemetry {
    /// Telemetry reporting into `metrics`, exporting spans with `tracing`.
    pub fn new(metrics: Arc<Metrics>, tracing: Tracing, settings: &TelemetrySettings) -> Self {
        Self {
            metrics,
            tracing,
            skip_paths: settings
                .opentelemetry
                .as_ref()
                .map(|c| c.skip_paths.clone())
                .unwrap_or_default(),
            usage_log: settings.switchboard.usage_log,
            switchboard: settings.switchboard.clone(),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tracer provider.
    pub fn tracing(&self) -> &Tracing {
        &self.tracing
    }

    /// The cost of `usage` from the price table, if the model has a price.
    pub(crate) fn cost(&self, provider: &str, model: &str, usage: &Usage) -> Option<f64> {
        let price = self.switchboard.price(provider, model)?;
        let cached = usage.cached_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let per_token = |per_million: f64| per_million / 1_000_000.0;
        Some(
            fresh as f64 * per_token(price.input)
                + cached as f64 * per_token(price.cached.unwrap_or(price.input))
                + usage.output_tokens as f64 * per_token(price.output),
        )
    }
}

/// Wraps a service in [`RecordMetrics`].
#[derive(Clone, Debug)]
pub struct RecordMetricsLayer {
    telemetry: Arc<Telemetry>,
    endpoint: Option<Arc<EndpointSeries>>,
    usage: bool,
}

impl RecordMetricsLayer {
    /// A layer reporting into `telemetry`, labelling each request with the
    /// endpoint pattern it matched ([`EndpointPattern`](crate::EndpointPattern)
    /// or axum's `MatchedPath`).
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        Self {
            telemetry,
            endpoint: None,
            usage: true,
        }
    }

    /// A layer for the one endpoint `pattern`: its series are looked up
    /// here, once, instead of per request. `usage` says whether the
    /// endpoint's answers can carry token usage (an LLM endpoint); when it
    /// cannot, no usage watcher is set up per request.
    pub fn for_endpoint(telemetry: Arc<Telemetry>, pattern: &str, usage: bool) -> Self {
        let endpoint = Some(telemetry.metrics.endpoint(pattern));
        Self {
            telemetry,
            endpoint,
            usage,
        }
    }
}

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics {
            inner,
            telemetry: self.telemetry.clone(),
            endpoint: self.endpoint.clone(),
            usage: self.usage,
        }
    }
}
