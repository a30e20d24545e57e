//! The typed config of KrakenD's `qos/ratelimit/router`, `/service`, their
//! `/redis` variants, `qos/ratelimit/proxy` and `qos/ratelimit/tiered`.

use serde::Deserialize;
use serde_json::Value;
use switchboard_store::caller::Strategy;

/// `qos/ratelimit/router` and `qos/ratelimit/service`, with or without
/// `/redis`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct RateLimitConfig {
    /// Requests every `every` for all callers together (503 past it).
    #[serde(default)]
    pub max_rate: Option<f64>,
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Requests every `every` for each caller (429 past it).
    #[serde(default)]
    pub client_max_rate: Option<f64>,
    #[serde(default)]
    pub client_capacity: Option<u64>,
    /// The period of the rates (`1s`).
    #[serde(default)]
    pub every: Option<String>,
    /// How callers are told apart: ip, header, param; Switchboard adds jwt
    /// and api_key.
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub key: Option<String>,
    /// Memory tuning of KrakenD's implementation; accepted, not needed.
    #[serde(default)]
    pub num_shards: Option<u64>,
    #[serde(default)]
    pub cleanup_period: Option<String>,
    #[serde(default)]
    pub cleanup_threads: Option<u64>,
    /// `/redis` only: the pool in the root `redis` namespace.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// `/redis` only: the older name of `connection_name`.
    #[serde(default)]
    pub connection_pool: Option<String>,
    /// `/redis` only: Redis failing lets requests through (otherwise 503).
    #[serde(default)]
    pub on_failure_allow: Option<bool>,
}

/// `qos/ratelimit/proxy` (backend).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct ProxyRateLimitConfig {
    pub max_rate: f64,
    pub capacity: u64,
    #[serde(default)]
    pub every: Option<String>,
}

/// `qos/ratelimit/tiered`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct TieredConfig {
    pub tier_key: String,
    pub tiers: Vec<TierConfig>,
}

/// One tier of a tiered limit.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct TierConfig {
    #[serde(default)]
    pub tier_value: Option<String>,
    #[serde(default)]
    pub tier_value_as: Option<String>,
    #[serde(default)]
    pub ratelimit: Option<Value>,
    #[serde(default)]
    pub ratelimit_redis: Option<Value>,
}
