//! The typed config: KrakenD's `governance/processors` (quotas and their
//! rules) and `governance/quota` (attaching a quota), with Switchboard's
//! additions marked.

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::Prices;
use switchboard_store::caller::Strategy;

use crate::window::Unit;

/// `governance/processors`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProcessorsConfig {
    /// The quotas.
    pub quotas: Vec<ProcessorConfig>,
}

/// One quota processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct ProcessorConfig {
    pub name: String,
    /// The Redis pool (root `redis` namespace). Switchboard: without it the
    /// quota counts in this instance's memory.
    #[serde(default)]
    pub connection_name: Option<String>,
    pub rules: Vec<RuleConfig>,
    /// Hash the caller identity in counter keys (PII such as emails).
    #[serde(default)]
    pub hash_keys: bool,
    /// Redis failing: `true` lets requests through uncounted, otherwise 500.
    #[serde(default)]
    pub on_failure_allow: bool,
    /// Retries of a failed Redis call before giving up on the request.
    #[serde(default)]
    pub on_failure_max_retries: u32,
    /// `linear` or `exponential` (default) backoff between those retries.
    #[serde(default)]
    pub on_failure_backoff_strategy: Option<Backoff>,
    /// KrakenD's bloom filter of rejections; accepted, not needed (a
    /// rejection costs one round trip already).
    #[serde(default)]
    pub rejecter_cache: Option<Value>,
    #[serde(default)]
    pub deny_queue_flush_interval: Option<String>,
    #[serde(default)]
    pub deny_queue_flush_threshold: Option<u64>,
    #[serde(default)]
    pub deny_queue_size: Option<u64>,
    /// Switchboard: prices per million tokens by `provider/model`, `model`
    /// or `*`, for attachments that count money (`weight_strategy: cost`).
    #[serde(default)]
    pub prices: Option<Prices>,
}

/// Backoff between retries of a failed store call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Backoff {
    Linear,
    Exponential,
}

/// A rule: the limits of one plan.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct RuleConfig {
    pub name: String,
    pub limits: Vec<LimitConfig>,
}

/// One limit: so much per unit of time.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct LimitConfig {
    pub amount: f64,
    pub unit: Unit,
}

/// `governance/quota`: attaching a quota to the service, an endpoint or a
/// backend.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct QuotaConfig {
    pub quota_name: String,
    /// The header with the plan; Switchboard also reads `JWT.<claim>` and
    /// `api_key.role`.
    pub tier_key: String,
    pub tiers: Vec<TierConfig>,
    /// What to count instead of 1: a response field or header (KrakenD); the
    /// unified response's `usage` counts the call's tokens.
    #[serde(default)]
    pub weight_key: Option<String>,
    #[serde(default)]
    pub weight_strategy: Option<WeightStrategy>,
    #[serde(default)]
    pub on_unmatched_tier_allow: bool,
    #[serde(default)]
    pub disable_quota_headers: bool,
    /// Switchboard: multiplier of input tokens (token weights).
    #[serde(default)]
    pub input_multiplier: Option<f64>,
    /// Switchboard: multiplier of output tokens (token weights).
    #[serde(default)]
    pub output_multiplier: Option<f64>,
    /// Switchboard: how token and money weights reserve before the call.
    #[serde(default)]
    pub reserve: Option<ReserveConfig>,
}

/// Where a weight comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WeightStrategy {
    /// A field of the JSON response body (KrakenD).
    Body,
    /// A response header (KrakenD, for `no-op`).
    Header,
    /// Switchboard: the tokens the LLM layer reports, streams included.
    Usage,
    /// Switchboard: the money those tokens cost (the processor's `prices`);
    /// rule amounts are then in currency units.
    Cost,
}

/// One tier.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct TierConfig {
    pub rule_name: String,
    #[serde(default)]
    pub tier_value: Option<String>,
    #[serde(default)]
    pub tier_value_as: Option<String>,
    /// Where the caller's identity is: header, ip, param; Switchboard adds
    /// jwt (a claim) and api_key.
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub key: Option<String>,
}

/// Reserve-then-reconcile for token and money weights.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReserveConfig {
    /// On by default; off counts after the call as KrakenD does (a call that
    /// crosses the limit, and every call in flight with it, goes through).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The output estimate when the request sets no `max_tokens` (1024).
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// Prompt bytes per token for the input estimate (4; 1 never
    /// underestimates).
    #[serde(default)]
    pub bytes_per_token: Option<f64>,
    /// A fixed reservation per call, in the weight's unit, instead of the
    /// estimate: set it to what one call can cost at most and no budget is
    /// ever overrun.
    #[serde(default)]
    pub ceiling: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for ReserveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_output_tokens: None,
            bytes_per_token: None,
            ceiling: None,
        }
    }
}
