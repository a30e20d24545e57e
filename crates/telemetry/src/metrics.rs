//! The gateway's metrics, in one `prometheus-client` registry that outlives
//! config reloads. Every label value is bounded: endpoint patterns from the
//! config (never raw paths), a closed set of methods, statuses, and provider,
//! model and tier names capped at [`MAX_LABEL_VALUES`] distinct values.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How many distinct values a free-form label (model, tier, provider,
/// quota, breaker) takes before further ones are reported as `other`.
pub const MAX_LABEL_VALUES: usize = 200;

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Latency buckets in seconds: 5 µs to 2 min.
const LATENCY_BUCKETS: [f64; 24] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// `endpoint`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) endpoint: Arc<str>,
    pub(crate) method: &'static str,
    pub(crate) status: u16,
}

/// `endpoint`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EndpointLabels {
    pub(crate) endpoint: Arc<str>,
}

/// `provider`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    provider: Arc<str>,
    kind: &'static str,
}

/// KrakenD's `provider`, `model`, plus `tier`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TokenLabels {
    pub(crate) provider: Arc<str>,
    pub(crate) model: Arc<str>,
    pub(crate) tier: Arc<str>,
}

/// Token labels plus how the call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: Arc<str>,
    model: Arc<str>,
    tier: Arc<str>,
    outcome: &'static str,
}

/// `endpoint`, `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    endpoint: Arc<str>,
    kind: &'static str,
}

/// `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: Arc<str>,
}

/// `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// A circuit breaker's state, as the `switchboard_breaker_state` gauge
/// reports it (0 closed, 1 half-open, 2 open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// A trial call passes.
    HalfOpen,
    /// Calls are refused.
    Open,
}

/// Caps the distinct values of a free-form label.
#[derive(Default)]
struct Bounded {
    seen: Mutex<HashSet<Arc<str>>>,
}

impl Bounded {
    fn admit(&self, value: &str) -> Arc<str> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(value) {
            return known.clone();
        }
        if seen.len() >= MAX_LABEL_VALUES {
            return Arc::from("other");
        }
        let value: Arc<str> = Arc::from(value);
        seen.insert(value.clone());
        value
    }
}

/// One endpoint's series, looked up once and kept: a request then updates
/// its metrics without hashing its labels again.
pub(crate) struct EndpointSeries {
    pub(crate) labels: EndpointLabels,
    duration: OnceLock<Histogram>,
    gateway: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    first_token: OnceLock<Histogram>,
    active_streams: OnceLock<Gauge>,
    /// `switchboard_requests` by method and status, as they are seen.
    requests: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl std::fmt::Debug for EndpointSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSeries")
            .field("endpoint", &self.labels.endpoint)
            .finish_non_exhaustive()
    }
}

impl EndpointSeries {
    fn histogram<'a>(
        &self,
        slot: &'a OnceLock<Histogram>,
        family: &HistogramFamily<EndpointLabels>,
    ) -> &'a Histogram {
        // A series is created on its first use, as `get_or_create` would.
        slot.get_or_init(|| family.get_or_create(&self.labels).clone())
    }

    pub(crate) fn duration(&self, metrics: &Metrics) -> &Histogram {
        self.histogram(&self.duration, &metrics.duration)
    }

    pub(crate) fn gateway(&self, metrics: &Metrics) -> &Histogram {
        self.histogram(&self.gateway, &metrics.gateway)
    }

    pub(crate) fn upstream(&self, metrics: &Metrics) -> &Histogram {
        self.histogram(&self.upstream, &metrics.upstream)
    }

    pub(crate) fn first_token(&self, metrics: &Metrics) -> &Histogram {
        self.histogram(&self.first_token, &metrics.first_token)
    }

    pub(crate) fn active_streams(&self, metrics: &Metrics) -> &Gauge {
        self.active_streams
            .get_or_init(|| metrics.active_streams.get_or_create(&self.labels).clone())
    }

    /// Counts one answer with `method` and `status`.
    pub(crate) fn answered(&self, metrics: &Metrics, method: &'static str, status: u16) {
        let known = {
            let seen = self.requests.read().unwrap_or_else(PoisonError::into_inner);
            seen.iter()
                .find(|(m, s, _)| *s == status && *m == method)
                .map(|(_, _, counter)| counter.clone())
        };
        let counter = known.unwrap_or_else(|| {
            let counter = metrics
                .requests
                .get_or_create(&RequestLabels {
                    endpoint: self.labels.endpoint.clone(),
                    method,
                    status,
                })
                .clone();
            let mut seen = self
                .requests
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if !seen.iter().any(|(m, s, _)| *s == status && *m == method) {
                seen.push((method, status, counter.clone()));
            }
            counter
        });
        counter.inc();
    }
}

/// Every metric the gateway reports. Create one per process (keep it in the
/// reload-surviving state) and share it through an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: HistogramFamily<EndpointLabels>,
    pub(crate) gateway: HistogramFamily<EndpointLabels>,
    pub(crate) upstream: HistogramFamily<EndpointLabels>,
    pub(crate) first_token: HistogramFamily<EndpointLabels>,
    pub(crate) active_streams: Family<EndpointLabels, Gauge>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    tokens_in: Family<TokenLabels, Counter>,
    tokens_out: Family<TokenLabels, Counter>,
    tokens_cached: Family<TokenLabels, Counter>,
    llm_calls: Family<CallLabels, Counter>,
    cost: Family<TokenLabels, Counter<f64, AtomicU64>>,
    rejections: Family<RejectionLabels, Counter>,
    breaker_state: Family<NameLabels, Gauge>,
    quota_remaining: Family<NameLabels, Gauge<f64, AtomicU64>>,
    config_generation: Gauge,
    config_reloads: Family<ResultLabels, Counter>,
    names: Bounded,
    /// The series of every endpoint seen, by pattern.
    endpoints: Mutex<std::collections::HashMap<Arc<str>, Arc<EndpointSeries>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let histogram = || {
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            )
        };
        let metrics = Self {
            requests: Family::default(),
            duration: histogram(),
            gateway: histogram(),
            upstream: histogram(),
            first_token: histogram(),
            active_streams: Family::default(),
            upstream_errors: Family::default(),
            tokens: Family::default(),
            tokens_in: Family::default(),
            tokens_out: Family::default(),
            tokens_cached: Family::default(),
            llm_calls: Family::default(),
            cost: Family::default(),
            rejections: Family::default(),
            breaker_state: Family::default(),
            quota_remaining: Family::default(),
            config_generation: Gauge::default(),
            config_reloads: Family::default(),
            names: Bounded::default(),
            endpoints: Mutex::default(),
            registry: Registry::default(),
        };
        registry.register(
            "switchboard_requests",
            "Requests answered, by endpoint pattern, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "switchboard_request_duration_seconds",
            "Time from the request to the last byte of the answer",
            metrics.duration.clone(),
        );
        registry.register(
            "switchboard_gateway_duration_seconds",
            "Time the gateway adds: time to the response head minus the longest backend wait",
            metrics.gateway.clone(),
        );
        registry.register(
            "switchboard_upstream_duration_seconds",
            "Longest backend wait (to the response head) of a request that called a backend",
            metrics.upstream.clone(),
        );
        registry.register(
            "switchboard_time_to_first_token_seconds",
            "Time from the request to the first streamed chunk of the answer",
            metrics.first_token.clone(),
        );
        registry.register(
            "switchboard_active_streams",
            "Streamed answers in flight",
            metrics.active_streams.clone(),
        );
        registry.register(
            "switchboard_upstream_errors",
            "Backend calls that failed, by provider (host or inventory name) and kind",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "krakend_llm_tokens",
            "LLM tokens, input plus output",
            metrics.tokens.clone(),
        );
        registry.register(
            "krakend_llm_tokens_in",
            "LLM input (prompt) tokens",
            metrics.tokens_in.clone(),
        );
        registry.register(
            "krakend_llm_tokens_out",
            "LLM output (completion) tokens",
            metrics.tokens_out.clone(),
        );
        registry.register(
            "switchboard_llm_tokens_cached",
            "LLM input tokens served from the vendor's cache",
            metrics.tokens_cached.clone(),
        );
        registry.register(
            "switchboard_llm_calls",
            "LLM calls, by how they ended (complete, cancelled, failed)",
            metrics.llm_calls.clone(),
        );
        registry.register(
            "switchboard_llm_cost",
            "Cost of LLM calls from the configured price table",
            metrics.cost.clone(),
        );
        registry.register(
            "switchboard_rejections",
            "Requests the gateway refused itself (quota, rate_limit, guard)",
            metrics.rejections.clone(),
        );
        registry.register(
            "switchboard_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            metrics.breaker_state.clone(),
        );
        registry.register(
            "switchboard_quota_remaining",
            "What is left of a quota in its current window",
            metrics.quota_remaining.clone(),
        );
        registry.register(
            "switchboard_config_generation",
            "Generation of the config being served (1 at start, +1 per applied reload)",
            metrics.config_generation.clone(),
        );
        registry.register(
            "switchboard_config_reloads",
            "Config reloads, by result (applied, refused)",
            metrics.config_reloads.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// The registry in Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// The series of the endpoint `pattern` (the same one for every layer
    /// and every config generation that names it).
    pub(crate) fn endpoint(&self, pattern: &str) -> Arc<EndpointSeries> {
        let mut known = self
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known.get(pattern) {
            return series.clone();
        }
        let endpoint: Arc<str> = Arc::from(pattern);
        let series = Arc::new(EndpointSeries {
            labels: EndpointLabels {
                endpoint: endpoint.clone(),
            },
            duration: OnceLock::new(),
            gateway: OnceLock::new(),
            upstream: OnceLock::new(),
            first_token: OnceLock::new(),
            active_streams: OnceLock::new(),
            requests: RwLock::default(),
        });
        known.insert(endpoint, series.clone());
        series
    }

    pub(crate) fn bounded(&self, value: &str) -> Arc<str> {
        self.names.admit(value)
    }

    /// Counts a failed backend call. `provider` is the inventory name or the
    /// backend host; `kind` a short fixed word (`connect`, `timeout`, …).
    pub fn upstream_error(&self, provider: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                provider: self.bounded(provider),
                kind,
            })
            .inc();
    }

    pub(crate) fn tokens(&self, labels: &TokenLabels, input: u64, output: u64, cached: u64) {
        self.tokens
            .get_or_create(labels)
            .inc_by(input.saturating_add(output));
        self.tokens_in.get_or_create(labels).inc_by(input);
        self.tokens_out.get_or_create(labels).inc_by(output);
        self.tokens_cached.get_or_create(labels).inc_by(cached);
    }

    pub(crate) fn llm_call(&self, labels: &TokenLabels, outcome: &'static str, cost: Option<f64>) {
        self.llm_calls
            .get_or_create(&CallLabels {
                provider: labels.provider.clone(),
                model: labels.model.clone(),
                tier: labels.tier.clone(),
                outcome,
            })
            .inc();
        if let Some(cost) = cost {
            self.cost.get_or_create(labels).inc_by(cost);
        }
    }

    pub(crate) fn rejection(&self, endpoint: &Arc<str>, kind: &'static str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                endpoint: endpoint.clone(),
                kind,
            })
            .inc();
    }

    /// Reports a circuit breaker's state.
    pub fn set_breaker_state(&self, breaker: &str, state: BreakerState) {
        let value = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.breaker_state
            .get_or_create(&NameLabels {
                name: self.bounded(breaker),
            })
            .set(value);
    }

    /// Reports what is left of a quota.
    pub fn set_quota_remaining(&self, quota: &str, remaining: f64) {
        self.quota_remaining
            .get_or_create(&NameLabels {
                name: self.bounded(quota),
            })
            .set(remaining);
    }

    /// Reports the generation of the config now served.
    pub fn set_config_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Counts a reload: applied or refused.
    pub fn config_reload(&self, applied: bool) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: if applied { "applied" } else { "refused" },
            })
            .inc();
    }
}

/// The method label: the standard methods, anything else `OTHER`.
pub(crate) fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_form_labels_are_capped() {
        let metrics = Metrics::new();
        for i in 0..MAX_LABEL_VALUES + 10 {
            metrics.upstream_error(&format!("host-{i}"), "connect");
        }
        let text = metrics.encode();
        assert_eq!(text.matches("provider=\"other\"").count(), 1);
        assert!(
            text.contains(
                "switchboard_upstream_errors_total{provider=\"other\",kind=\"connect\"} 10"
            )
        );
    }

    #[test]
    fn krakend_token_names_are_kept() {
        let metrics = Metrics::new();
        let labels = TokenLabels {
            provider: Arc::from("openai"),
            model: Arc::from("gpt-4o"),
            tier: Arc::from("gold"),
        };
        metrics.tokens(&labels, 10, 5, 2);
        let text = metrics.encode();
        assert!(
            text.contains(
                "krakend_llm_tokens_total{provider=\"openai\",model=\"gpt-4o\",tier=\"gold\"} 15"
            ),
            "{text}"
        );
        assert!(text.contains(
            "krakend_llm_tokens_in_total{provider=\"openai\",model=\"gpt-4o\",tier=\"gold\"} 10"
        ));
        assert!(text.contains(
            "krakend_llm_tokens_out_total{provider=\"openai\",model=\"gpt-4o\",tier=\"gold\"} 5"
        ));
        assert!(text.contains("# TYPE switchboard_config_generation gauge"));
    }
}
