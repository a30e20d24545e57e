//! Compiling the config into limiters, and the layer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::{from_value, parse_duration};
use switchboard_store::caller::{Caller, Strategy, TierKey, TierMatch};
use switchboard_store::{SharedStore, Stores};
use tower::Layer;

use crate::config::{ProxyRateLimitConfig, RateLimitConfig, TieredConfig};
use crate::service::LimitRate;

/// One token bucket rule.
#[derive(Debug)]
pub(crate) struct Limit {
    pub(crate) name: &'static str,
    pub(crate) prefix: String,
    pub(crate) caller: Option<Caller>,
    pub(crate) rate_per_second: f64,
    pub(crate) capacity: u64,
    /// The rate as configured, for `RateLimit-Policy`.
    pub(crate) quota: f64,
    pub(crate) window: Duration,
    pub(crate) refusal: http::StatusCode,
}

/// Compiled limits on one store.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) limits: Vec<Limit>,
    pub(crate) store: SharedStore,
    pub(crate) on_failure_allow: bool,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Single(Limiter),
    Tiered {
        key: TierKey,
        tiers: Vec<(TierMatch, Limiter)>,
    },
}

/// Rate limits in front of a service. Built from any of KrakenD's
/// rate-limit namespaces; clones share the buckets.
#[derive(Clone, Debug)]
pub struct LimitRateLayer {
    pub(crate) kind: Arc<Kind>,
}

/// Which namespace a config comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variant {
    /// `qos/ratelimit/router` or `qos/ratelimit/service`: in memory.
    Memory,
    /// `qos/ratelimit/router/redis` or `qos/ratelimit/service/redis`.
    Redis,
}

fn period(every: Option<&str>) -> Result<Duration, ConfigError> {
    let every = match every {
        None => Duration::from_secs(1),
        Some(text) => parse_duration(text).map_err(|m| ConfigError::new("every", m))?,
    };
    if every.is_zero() {
        return Err(ConfigError::new("every", "must be more than zero"));
    }
    Ok(every)
}

/// KrakenD's default capacity: the rate per second, at least 1.
fn default_capacity(rate: f64, every: Duration) -> u64 {
    ((rate / every.as_secs_f64()).floor() as u64).max(1)
}

fn rate(field: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ConfigError::new(field, "must be a number above zero"))
    }
}

impl LimitRateLayer {
    /// `qos/ratelimit/router` / `service` (`Variant::Memory`) or their
    /// `/redis` form. `scope` names what the buckets guard (an endpoint,
    /// `service`); instances sharing Redis must use the same scope.
    pub fn try_from_config(
        value: &Value,
        variant: Variant,
        scope: &str,
        stores: &mut Stores,
    ) -> Result<Self, ConfigError> {
        let config: RateLimitConfig = from_value(value)?;
        Self::from_config(&config, variant, scope, stores)
    }

    /// The typed form of [`try_from_config`](Self::try_from_config).
    pub fn from_config(
        config: &RateLimitConfig,
        variant: Variant,
        scope: &str,
        stores: &mut Stores,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            kind: Arc::new(Kind::Single(limiter(config, variant, scope, stores)?)),
        })
    }

    /// `qos/ratelimit/proxy` on a backend: 503 past `max_rate`.
    pub fn try_from_proxy_config(
        value: &Value,
        scope: &str,
        stores: &mut Stores,
    ) -> Result<Self, ConfigError> {
        let config: ProxyRateLimitConfig = from_value(value)?;
        let every = period(config.every.as_deref())?;
        let max_rate = rate("max_rate", config.max_rate)?;
        if config.capacity == 0 {
            return Err(ConfigError::new("capacity", "must be at least 1"));
        }
        Ok(Self {
            kind: Arc::new(Kind::Single(Limiter {
                limits: vec![Limit {
                    name: "backend",
                    prefix: format!("sb:rl:{scope}:backend"),
                    caller: None,
                    rate_per_second: max_rate / every.as_secs_f64(),
                    capacity: config.capacity,
                    quota: max_rate,
                    window: every,
                    refusal: http::StatusCode::SERVICE_UNAVAILABLE,
                }],
                store: stores.memory(),
                on_failure_allow: true,
            })),
        })
    }

    /// `qos/ratelimit/tiered`: the first tier that matches applies its
    /// `ratelimit` (memory) or `ratelimit_redis`; no match, no limit.
    pub fn try_from_tiered_config(
        value: &Value,
        scope: &str,
        stores: &mut Stores,
    ) -> Result<Self, ConfigError> {
        let config: TieredConfig = from_value(value)?;
        let key = TierKey::parse(&config.tier_key).map_err(|m| ConfigError::new("tier_key", m))?;
        if config.tiers.is_empty() {
            return Err(ConfigError::new("tiers", "needs at least one tier"));
        }
        let mut tiers = Vec::new();
        for (i, tier) in config.tiers.iter().enumerate() {
            let at = format!("tiers[{i}]");
            let matcher = TierMatch::new(tier.tier_value.as_deref(), tier.tier_value_as.as_deref())
                .map_err(|m| ConfigError::new(format!("{at}.tier_value"), m))?;
            let tier_scope = format!("{scope}:tier{i}");
            let limiter = match (&tier.ratelimit, &tier.ratelimit_redis) {
                (Some(memory), None) => {
                    let config: RateLimitConfig =
                        from_value(memory).map_err(|e| e.at(&format!("{at}.ratelimit")))?;
                    limiter(&config, Variant::Memory, &tier_scope, stores)
                        .map_err(|e| e.at(&format!("{at}.ratelimit")))?
                }
                (None, Some(redis)) => {
                    let config: RateLimitConfig =
                        from_value(redis).map_err(|e| e.at(&format!("{at}.ratelimit_redis")))?;
                    limiter(&config, Variant::Redis, &tier_scope, stores)
                        .map_err(|e| e.at(&format!("{at}.ratelimit_redis")))?
                }
                _ => {
                    return Err(ConfigError::new(
                        at,
                        "needs exactly one of `ratelimit` and `ratelimit_redis`",
                    ));
                }
            };
            tiers.push((matcher, limiter));
        }
        Ok(Self {
            kind: Arc::new(Kind::Tiered { key, tiers }),
        })
    }
}

fn limiter(
    config: &RateLimitConfig,
    variant: Variant,
    scope: &str,
    stores: &mut Stores,
) -> Result<Limiter, ConfigError> {
    let every = period(config.every.as_deref())?;
    let store = match variant {
        Variant::Memory => {
            for (field, set) in [
                ("connection_name", config.connection_name.is_some()),
                ("connection_pool", config.connection_pool.is_some()),
                ("on_failure_allow", config.on_failure_allow.is_some()),
            ] {
                if set {
                    return Err(ConfigError::new(
                        field,
                        "only the `/redis` variant takes this field",
                    ));
                }
            }
            stores.memory()
        }
        Variant::Redis => {
            let (field, name) = match (&config.connection_name, &config.connection_pool) {
                (Some(name), _) => ("connection_name", name),
                (None, Some(name)) => ("connection_pool", name),
                (None, None) => {
                    return Err(ConfigError::new(
                        "connection_name",
                        "the Redis variant needs a connection_name",
                    ));
                }
            };
            stores.get(name).cloned().ok_or_else(|| {
                ConfigError::new(
                    field,
                    format!(
                        "no Redis connection pool named {name:?} in the root `redis` namespace"
                    ),
                )
            })?
        }
    };
    let mut limits = Vec::new();
    if let Some(max_rate) = config.max_rate {
        let max_rate = rate("max_rate", max_rate)?;
        limits.push(Limit {
            name: "endpoint",
            prefix: format!("sb:rl:{scope}:all"),
            caller: None,
            rate_per_second: max_rate / every.as_secs_f64(),
            capacity: config
                .capacity
                .unwrap_or_else(|| default_capacity(max_rate, every))
                .max(1),
            quota: max_rate,
            window: every,
            refusal: http::StatusCode::SERVICE_UNAVAILABLE,
        });
    }
    if let Some(client_max_rate) = config.client_max_rate {
        let client_max_rate = rate("client_max_rate", client_max_rate)?;
        let caller = Caller::new(
            config.strategy.unwrap_or(Strategy::Ip),
            config.key.as_deref(),
        )
        .map_err(|m| ConfigError::new("key", m))?;
        limits.push(Limit {
            name: "client",
            prefix: format!("sb:rl:{scope}:client"),
            caller: Some(caller),
            rate_per_second: client_max_rate / every.as_secs_f64(),
            capacity: config
                .client_capacity
                .unwrap_or_else(|| default_capacity(client_max_rate, every))
                .max(1),
            quota: client_max_rate,
            window: every,
            refusal: http::StatusCode::TOO_MANY_REQUESTS,
        });
    }
    if limits.is_empty() {
        return Err(ConfigError::new(
            "",
            "needs `max_rate` or `client_max_rate`",
        ));
    }
    Ok(Limiter {
        limits,
        store,
        on_failure_allow: config.on_failure_allow.unwrap_or(false),
    })
}

impl<S> Layer<S> for LimitRateLayer {
    type Service = LimitRate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitRate::new(inner, self.kind.clone())
    }
}
