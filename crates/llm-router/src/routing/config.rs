//! `ai/classifiers` (service) and `ai/router` (backend) as written in the
//! config, with our additions behind their own fields.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::breaker::CircuitBreakerConfig;
use super::retry::RetryConfig;

/// `ai/classifiers`: the gates and classifiers routes refer to by name.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassifiersConfig {
    /// Named yes/no tests on a request.
    #[serde(default)]
    pub gates: Vec<GateConfig>,
    /// Named services that pick a provider among candidates.
    #[serde(default)]
    pub classifiers: Vec<ClassifierConfig>,
}

/// One gate.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GateConfig {
    /// The name routes use.
    pub name: String,
    /// Which test.
    pub rule: GateRule,
    /// For `rule: header`.
    #[serde(default)]
    pub header: Option<HeaderGateConfig>,
    /// For `rule: policy`.
    #[serde(default)]
    pub policy: Option<PolicyGateConfig>,
}

/// A gate's test.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GateRule {
    /// A header has an exact value.
    Header,
    /// A CEL expression is true.
    Policy,
}

/// `header: {"name", "value"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HeaderGateConfig {
    /// The header (declare it in the endpoint's `input_headers`).
    pub name: String,
    /// The exact, case-sensitive value.
    pub value: String,
}

/// `policy: {"value": "<CEL>"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyGateConfig {
    /// The expression (`hasHeader`, `getHeader`, `JWT`, `req_body`, ...).
    pub value: String,
}

/// One classifier.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClassifierConfig {
    /// The name routes use.
    pub name: String,
    /// The engine; only `notdiamond`.
    pub engine: ClassifierEngine,
    /// The Not Diamond settings.
    #[serde(default)]
    pub notdiamond: Option<NotDiamondConfig>,
}

/// The classifier engines.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ClassifierEngine {
    /// Not Diamond's model router API.
    Notdiamond,
}

/// `notdiamond: {...}`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NotDiamondConfig {
    /// The API key.
    pub credentials: String,
    /// The API's base URL (default `https://api.notdiamond.ai`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// What of the request is classified (default the whole body):
    /// `req_body.a.b`, `req_params.Id`, `req_headers.X`,
    /// `req_query_string.x`.
    #[serde(default)]
    pub req_content: Option<String>,
    /// `cost` or `latency`.
    #[serde(default)]
    pub tradeoff: Option<Tradeoff>,
    /// A number instead of `tradeoff`.
    #[serde(default)]
    pub cost_quality_tradeoff: Option<i64>,
    /// `accuracy`.
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Send the content as is instead of hashed.
    #[serde(default)]
    pub disable_hash_content: bool,
}

/// Not Diamond's trade-off.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Tradeoff {
    /// Prefer cheaper models.
    Cost,
    /// Prefer faster models.
    Latency,
}

/// Not Diamond's metric.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Metric {
    /// The only one.
    Accuracy,
}

/// `ai/router`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouterConfig {
    /// The routes, tried top to bottom.
    pub routes: Vec<RouteConfig>,
    /// The provider taken when the chosen one fails and its route names no
    /// failover of its own.
    #[serde(default)]
    pub failover: Option<String>,
    /// Ours: retries before failing over.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Ours: one circuit breaker per provider routed to.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
}

/// One route.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// Gate names; all must pass. No gates: always matches.
    #[serde(default)]
    pub gates: Option<Vec<String>>,
    /// The provider this route sends to.
    #[serde(default)]
    pub provider: Option<String>,
    /// A classifier that picks among `providers`.
    #[serde(default)]
    pub classifier: Option<String>,
    /// The candidates of `classifier`.
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Nested routes, tried when this route's gates pass.
    #[serde(default)]
    pub routes: Option<Vec<RouteConfig>>,
    /// The provider taken when this route's choice fails.
    #[serde(default)]
    pub failover: Option<String>,
    /// Ours: pick one provider at random by weight; the others follow as
    /// failover, heaviest first.
    #[serde(default)]
    pub weighted: Option<Vec<WeightedConfig>>,
    /// Ours: route on the `model` the client's body names.
    #[serde(default)]
    pub models: Option<ModelsConfig>,
    /// Ours: send to every listed provider at once.
    #[serde(default)]
    pub fan_out: Option<FanOutConfig>,
}

/// `weighted: [{"provider", "weight"}]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct WeightedConfig {
    /// The provider.
    pub provider: String,
    /// Its share (0 = only as failover).
    pub weight: u32,
}

/// `models: {"aliases": {...}, "names": true}`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelsConfig {
    /// A model name the client may send → the providers that serve it, in
    /// failover order (`"fast": ["fast-chat", "cheap-stream"]`).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Whether a provider's inventory name is a model name too.
    #[serde(default)]
    pub names: bool,
}

/// `fan_out: {"providers": [...], "mode": "all"|"first"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FanOutConfig {
    /// The providers asked at once.
    pub providers: Vec<String>,
    /// `all`: every answer, grouped per provider; `first`: the first good
    /// answer, the others cancelled.
    #[serde(default)]
    pub mode: FanOutMode,
}

/// How a fan-out answers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FanOutMode {
    /// Every answer, grouped per provider, failures marked.
    #[default]
    All,
    /// The first good answer wins; the others are cancelled (hedging).
    First,
}
