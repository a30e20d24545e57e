//! Typed config for `telemetry/opentelemetry`, `telemetry/logging` and
//! Switchboard's own `switchboard/telemetry` (admin listener, prices, usage
//! log).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;

/// Namespace of the Prometheus and OTLP exporters.
pub const OPENTELEMETRY_NAMESPACE: &str = "telemetry/opentelemetry";
/// Namespace of the application logger.
pub const LOGGING_NAMESPACE: &str = "telemetry/logging";
/// Switchboard's own namespace: admin listener, price table, usage log.
pub const SWITCHBOARD_NAMESPACE: &str = "switchboard/telemetry";

/// `telemetry/opentelemetry`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OpenTelemetryConfig {
    /// Where metrics and traces go.
    pub exporters: Exporters,
    /// `service.name` of the traces.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Seconds between pushes of pushed metrics (accepted; Prometheus is
    /// scraped, so it has no effect here).
    #[serde(default)]
    pub metric_reporting_period: Option<u64>,
    /// Fraction of requests traced, 0 to 1.
    #[serde(default = "one")]
    pub trace_sample_rate: f64,
    /// Paths never traced nor counted (e.g. `/__health`).
    #[serde(default)]
    pub skip_paths: Vec<String>,
    /// KrakenD's per-layer switches (accepted; every layer reports).
    #[serde(default)]
    pub layers: Option<Value>,
}

fn one() -> f64 {
    1.0
}

/// `exporters`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Exporters {
    /// Prometheus scrape listeners.
    #[serde(default)]
    pub prometheus: Vec<PrometheusExporter>,
    /// OTLP collectors.
    #[serde(default)]
    pub otlp: Vec<OtlpExporter>,
}

/// `exporters.prometheus[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrometheusExporter {
    /// Name of the exporter.
    pub name: String,
    /// Port of the scrape listener.
    #[serde(default = "prometheus_port")]
    pub port: u16,
    /// Address of the scrape listener.
    #[serde(default = "any_ip")]
    pub listen_ip: String,
    /// Accepted for compatibility (Go runtime metrics have no equivalent).
    #[serde(default)]
    pub process_metrics: bool,
    /// Accepted for compatibility (Go runtime metrics have no equivalent).
    #[serde(default)]
    pub go_metrics: bool,
    /// Do not serve metrics from this exporter.
    #[serde(default)]
    pub disable_metrics: bool,
    /// Accepted for compatibility.
    #[serde(default)]
    pub custom_metric_reporting_period: Option<u64>,
}

fn prometheus_port() -> u16 {
    9090
}

fn any_ip() -> String {
    "0.0.0.0".to_owned()
}

/// `exporters.otlp[]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OtlpExporter {
    /// Name of the exporter.
    #[serde(default)]
    pub name: Option<String>,
    /// Collector host, with or without a scheme.
    pub host: String,
    /// Collector port (4317 for gRPC, 4318 for HTTP by default).
    #[serde(default)]
    pub port: Option<u16>,
    /// OTLP/HTTP (protobuf) instead of gRPC.
    #[serde(default)]
    pub use_http: bool,
    /// Metrics are not pushed over OTLP (Prometheus serves them).
    #[serde(default)]
    pub disable_metrics: bool,
    /// Do not send traces to this collector.
    #[serde(default)]
    pub disable_traces: bool,
}

impl OtlpExporter {
    /// The collector's base URL, e.g. `http://collector:4318`.
    pub fn endpoint(&self) -> String {
        let port = self.port.unwrap_or(if self.use_http { 4318 } else { 4317 });
        let host = self.host.trim_end_matches('/');
        if host.contains("://") {
            format!("{host}:{port}")
        } else {
            format!("http://{host}:{port}")
        }
    }
}

impl OpenTelemetryConfig {
    /// Reads and checks the namespace; errors carry JSON paths under `at`.
    pub fn from_config(value: &Value, at: &str) -> Result<Self, Vec<ConfigError>> {
        let config: Self = from_value(value).map_err(|e| vec![e.at(at)])?;
        let mut errors = Vec::new();
        if !(0.0..=1.0).contains(&config.trace_sample_rate) {
            errors.push(ConfigError::new(
                format!("{at}.trace_sample_rate"),
                "must be between 0 and 1",
            ));
        }
        for (i, exporter) in config.exporters.prometheus.iter().enumerate() {
            if exporter.listen_ip.parse::<IpAddr>().is_err() {
                errors.push(ConfigError::new(
                    format!("{at}.exporters.prometheus[{i}].listen_ip"),
                    format!("{:?} is not an IP address", exporter.listen_ip),
                ));
            }
        }
        for (i, exporter) in config.exporters.otlp.iter().enumerate() {
            if exporter.host.trim().is_empty() {
                errors.push(ConfigError::new(
                    format!("{at}.exporters.otlp[{i}].host"),
                    "must name the collector",
                ));
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The scrape listeners that serve metrics.
    pub fn prometheus_addrs(&self) -> Vec<SocketAddr> {
        self.exporters
            .prometheus
            .iter()
            .filter(|e| !e.disable_metrics)
            .filter_map(|e| {
                e.listen_ip
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, e.port))
            })
            .collect()
    }
}

/// `telemetry/logging`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoggingConfig {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`.
    pub level: LogLevel,
    /// Written before every line.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Write to the local syslog (`/dev/log`).
    #[serde(default)]
    pub syslog: bool,
    /// Write to standard output.
    #[serde(default)]
    pub stdout: bool,
    /// `default`, `logstash` or `json` (one JSON object a line) or `custom`.
    #[serde(default)]
    pub format: LogFormat,
    /// Accepted with `format: custom`; lines use the default layout.
    #[serde(default)]
    pub custom_format: Option<String>,
    /// `local0` … `local7` (default `local3`, as KrakenD).
    #[serde(default)]
    pub syslog_facility: Option<String>,
}

/// A log level as KrakenD names it.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Informational and worse.
    Info,
    /// Warnings and errors.
    #[serde(alias = "WARN")]
    Warning,
    /// Errors.
    Error,
    /// Errors (there is no level above error in `tracing`).
    Critical,
}

impl LogLevel {
    /// The `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warn",
            Self::Error | Self::Critical => "error",
        }
    }
}

/// Line layout.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable text.
    #[default]
    Default,
    /// One JSON object a line (KrakenD's logstash format).
    #[serde(alias = "json")]
    Logstash,
    /// KrakenD's custom pattern (text layout here).
    Custom,
}

impl LoggingConfig {
    /// Reads and checks the namespace.
    pub fn from_config(value: &Value, at: &str) -> Result<Self, Vec<ConfigError>> {
        let config: Self = from_value(value).map_err(|e| vec![e.at(at)])?;
        if let Some(facility) = &config.syslog_facility
            && syslog_facility_code(facility).is_none()
        {
            return Err(vec![ConfigError::new(
                format!("{at}.syslog_facility"),
                format!("{facility:?} is not local0 … local7"),
            )]);
        }
        Ok(config)
    }
}

pub(crate) fn syslog_facility_code(name: &str) -> Option<u8> {
    let n: u8 = name.strip_prefix("local")?.parse().ok()?;
    (n <= 7).then_some(16 + n)
}

/// `switchboard/telemetry`: what KrakenD has no place for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SwitchboardTelemetryConfig {
    /// The admin listener with the dashboard; absent, there is none.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Prices per million tokens, keyed `provider/model` (or `provider/*`).
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// One log line per LLM call (on by default).
    #[serde(default = "yes")]
    pub usage_log: bool,
}

fn yes() -> bool {
    true
}

/// `admin`: where the dashboard is served.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdminConfig {
    /// Address to listen on; loopback unless set.
    #[serde(default = "loopback")]
    pub listen_ip: String,
    /// Port to listen on.
    pub port: u16,
    /// The bearer token the dashboard asks for (or `env:NAME`).
    pub token: String,
}

fn loopback() -> String {
    "127.0.0.1".to_owned()
}

/// Price of a million tokens, in the currency of the price table.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Per million prompt tokens (not cached).
    #[serde(default)]
    pub input: f64,
    /// Per million completion tokens.
    #[serde(default)]
    pub output: f64,
    /// Per million cached prompt tokens (the input price if absent).
    #[serde(default)]
    pub cached: Option<f64>,
}

impl SwitchboardTelemetryConfig {
    /// Reads and checks the namespace.
    pub fn from_config(value: &Value, at: &str) -> Result<Self, Vec<ConfigError>> {
        let config: Self = from_value(value).map_err(|e| vec![e.at(at)])?;
        let mut errors = Vec::new();
        if let Some(admin) = &config.admin {
            if admin.listen_ip.parse::<IpAddr>().is_err() {
                errors.push(ConfigError::new(
                    format!("{at}.admin.listen_ip"),
                    format!("{:?} is not an IP address", admin.listen_ip),
                ));
            }
            match resolve_token(&admin.token) {
                Some(token) if token.len() >= 16 => {}
                Some(_) => errors.push(ConfigError::new(
                    format!("{at}.admin.token"),
                    "must be at least 16 characters",
                )),
                None => errors.push(ConfigError::new(
                    format!("{at}.admin.token"),
                    "names an environment variable that is not set",
                )),
            }
        }
        for (key, price) in &config.prices {
            if !key.contains('/') {
                errors.push(ConfigError::new(
                    format!("{at}.prices.{key}"),
                    "keys are provider/model (or provider/*)",
                ));
            }
            let cached = price.cached.unwrap_or(0.0);
            if [price.input, price.output, cached]
                .iter()
                .any(|p| !p.is_finite() || *p < 0.0)
            {
                errors.push(ConfigError::new(
                    format!("{at}.prices.{key}"),
                    "prices must be non-negative numbers",
                ));
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The price of `provider`/`model`, exact key first, then `provider/*`.
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.prices
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.prices.get(&format!("{provider}/*")))
            .copied()
    }
}

/// A token as written, or the value of `env:NAME`.
pub(crate) fn resolve_token(token: &str) -> Option<String> {
    match token.strip_prefix("env:") {
        Some(name) => std::env::var(name).ok(),
        None => Some(token.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn krakend_example_is_accepted() {
        let config = OpenTelemetryConfig::from_config(
            &json!({
                "service_name": "gw",
                "trace_sample_rate": 0.25,
                "skip_paths": ["/__health"],
                "exporters": {
                    "prometheus": [{"name": "local", "port": 9099, "listen_ip": "127.0.0.1", "process_metrics": true}],
                    "otlp": [{"name": "jaeger", "host": "jaeger", "use_http": true}]
                }
            }),
            "$.extra_config[\"telemetry/opentelemetry\"]",
        )
        .unwrap();
        assert_eq!(config.prometheus_addrs()[0].to_string(), "127.0.0.1:9099");
        assert_eq!(config.exporters.otlp[0].endpoint(), "http://jaeger:4318");
    }

    #[test]
    fn bad_values_name_their_path() {
        let errors = OpenTelemetryConfig::from_config(
            &json!({"trace_sample_rate": 2, "exporters": {"prometheus": [{"name": "p", "listen_ip": "nope"}]}}),
            "$.x",
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|e| e.contains("$.x.trace_sample_rate")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("$.x.exporters.prometheus[0].listen_ip")),
            "{text:?}"
        );
        let errors = LoggingConfig::from_config(&json!({"level": "LOUD"}), "$.l").unwrap_err();
        assert!(errors[0].to_string().contains("$.l"));
        let errors = SwitchboardTelemetryConfig::from_config(
            &json!({"admin": {"port": 1, "token": "short"}}),
            "$.s",
        )
        .unwrap_err();
        assert!(errors[0].to_string().contains("$.s.admin.token"));
    }

    #[test]
    fn prices_fall_back_to_the_provider() {
        let config = SwitchboardTelemetryConfig::from_config(
            &json!({"prices": {"openai/gpt-4o": {"input": 2.5, "output": 10}, "openai/*": {"input": 1, "output": 1}}}),
            "$.s",
        )
        .unwrap();
        assert_eq!(config.price("openai", "gpt-4o").unwrap().output, 10.0);
        assert_eq!(config.price("openai", "other").unwrap().output, 1.0);
        assert!(config.price("anthropic", "x").is_none());
    }
}
