//! Compiling the config: the quotas of a gateway (shared by every
//! attachment) and one attachment's layer.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use switchboard_core::config::from_value;
use switchboard_core::{ConfigError, Prices};
use switchboard_store::caller::{Caller, TierKey, TierMatch};
use switchboard_store::{SharedStore, Stores};
use tower::Layer;

use crate::config::{Backoff, ProcessorsConfig, QuotaConfig, WeightStrategy};
use crate::service::EnforceQuota;
use crate::window::Unit;

/// Micro-units per currency unit: money is counted in millionths.
pub(crate) const MICROS: f64 = 1_000_000.0;

/// The compiled `governance/processors`: every quota by name, each bound
/// to its store. Cheap to clone; clones share the store.
#[derive(Clone, Debug, Default)]
pub struct Quotas {
    by_name: BTreeMap<String, Arc<Processor>>,
}

#[derive(Debug)]
pub(crate) struct Processor {
    pub(crate) name: String,
    pub(crate) store: SharedStore,
    pub(crate) rules: BTreeMap<String, Vec<(Unit, f64)>>,
    pub(crate) hash_keys: bool,
    pub(crate) on_failure_allow: bool,
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) prices: Option<Arc<Prices>>,
}

impl Quotas {
    /// Compiles a `governance/processors` object; quotas naming a
    /// `connection_name` take that store from `stores`, the others share
    /// its in-memory store.
    pub fn try_from_config(value: &Value, stores: &mut Stores) -> Result<Self, ConfigError> {
        let config: ProcessorsConfig = from_value(value)?;
        Self::from_config(&config, stores)
    }

    /// Compiles a typed config.
    pub fn from_config(
        config: &ProcessorsConfig,
        stores: &mut Stores,
    ) -> Result<Self, ConfigError> {
        let mut by_name = BTreeMap::new();
        for (i, quota) in config.quotas.iter().enumerate() {
            let at = |field: &str| format!("quotas[{i}].{field}");
            if quota.name.is_empty() || by_name.contains_key(&quota.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!("quota name {:?} is empty or declared twice", quota.name),
                ));
            }
            let store = match &quota.connection_name {
                None => stores.memory(),
                Some(name) => stores.get(name).cloned().ok_or_else(|| {
                    ConfigError::new(
                        at("connection_name"),
                        format!(
                            "no Redis connection pool named {name:?} in the root `redis` namespace"
                        ),
                    )
                })?,
            };
            let mut rules = BTreeMap::new();
            for (j, rule) in quota.rules.iter().enumerate() {
                if rules.contains_key(&rule.name) {
                    return Err(ConfigError::new(
                        at(&format!("rules[{j}].name")),
                        format!("rule {:?} is declared twice", rule.name),
                    ));
                }
                if rule.limits.is_empty() {
                    return Err(ConfigError::new(
                        at(&format!("rules[{j}].limits")),
                        "needs at least one limit",
                    ));
                }
                let mut limits = Vec::new();
                for (k, limit) in rule.limits.iter().enumerate() {
                    if !(limit.amount.is_finite() && limit.amount >= 0.0) {
                        return Err(ConfigError::new(
                            at(&format!("rules[{j}].limits[{k}].amount")),
                            "must be a number of zero or more",
                        ));
                    }
                    limits.push((limit.unit, limit.amount));
                }
                rules.insert(rule.name.clone(), limits);
            }
            by_name.insert(
                quota.name.clone(),
                Arc::new(Processor {
                    name: quota.name.clone(),
                    store,
                    rules,
                    hash_keys: quota.hash_keys,
                    on_failure_allow: quota.on_failure_allow,
                    retries: quota.on_failure_max_retries.min(5),
                    backoff: quota
                        .on_failure_backoff_strategy
                        .unwrap_or(Backoff::Exponential),
                    prices: quota.prices.clone().filter(|p| !p.is_empty()).map(Arc::new),
                }),
            );
        }
        Ok(Self { by_name })
    }

    /// The layer of one `governance/quota` attachment.
    pub fn layer(&self, value: &Value) -> Result<EnforceQuotaLayer, ConfigError> {
        let config: QuotaConfig = from_value(value)?;
        self.layer_from_config(&config)
    }

    /// The layer of a typed attachment.
    pub fn layer_from_config(
        &self,
        config: &QuotaConfig,
    ) -> Result<EnforceQuotaLayer, ConfigError> {
        let processor = self
            .by_name
            .get(&config.quota_name)
            .cloned()
            .ok_or_else(|| {
                ConfigError::new(
                    "quota_name",
                    format!(
                        "no quota named {:?} in governance/processors",
                        config.quota_name
                    ),
                )
            })?;
        let tier_key =
            TierKey::parse(&config.tier_key).map_err(|m| ConfigError::new("tier_key", m))?;
        if config.tiers.is_empty() {
            return Err(ConfigError::new("tiers", "needs at least one tier"));
        }
        let weight = weight_of(config, &processor)?;
        let mut tiers = Vec::new();
        for (i, tier) in config.tiers.iter().enumerate() {
            let at = |field: &str| format!("tiers[{i}].{field}");
            let limits = processor.rules.get(&tier.rule_name).ok_or_else(|| {
                ConfigError::new(
                    at("rule_name"),
                    format!(
                        "quota {:?} has no rule {:?}",
                        processor.name, tier.rule_name
                    ),
                )
            })?;
            let scale = if matches!(weight, Weight::Cost { .. }) {
                MICROS
            } else {
                1.0
            };
            let limits = limits
                .iter()
                .map(|(unit, amount)| (*unit, (amount * scale).floor() as u64))
                .collect();
            tiers.push(Tier {
                rule: tier.rule_name.clone(),
                matcher: TierMatch::new(tier.tier_value.as_deref(), tier.tier_value_as.as_deref())
                    .map_err(|m| ConfigError::new(at("tier_value"), m))?,
                caller: Caller::new(tier.strategy, tier.key.as_deref())
                    .map_err(|m| ConfigError::new(at("key"), m))?,
                limits,
            });
        }
        Ok(EnforceQuotaLayer {
            attachment: Arc::new(Attachment {
                processor,
                tier_key,
                tier_key_text: config.tier_key.clone(),
                tiers,
                weight,
                on_unmatched_tier_allow: config.on_unmatched_tier_allow,
                headers: !config.disable_quota_headers,
            }),
        })
    }

    /// Whether a quota of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// What one request counts as.
#[derive(Clone, Debug)]
pub(crate) enum Weight {
    /// One per request, counted before the call.
    One,
    /// A number in the response (body field or header): 1 reserved before,
    /// the rest added after.
    Response { key: String, header: bool },
    /// Tokens, with multipliers.
    Tokens {
        reserve: Reserve,
        input: f64,
        output: f64,
    },
    /// Money, in millionths.
    Cost {
        reserve: Reserve,
        prices: Arc<Prices>,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Reserve {
    pub(crate) enabled: bool,
    pub(crate) max_output_tokens: u64,
    pub(crate) bytes_per_token: f64,
    /// In the counter's unit (tokens, or millionths).
    pub(crate) ceiling: Option<u64>,
}

fn weight_of(config: &QuotaConfig, processor: &Processor) -> Result<Weight, ConfigError> {
    let reserve_config = config.reserve.unwrap_or_default();
    let bytes_per_token = reserve_config.bytes_per_token.unwrap_or(4.0);
    if !(bytes_per_token.is_finite() && bytes_per_token > 0.0) {
        return Err(ConfigError::new(
            "reserve.bytes_per_token",
            "must be more than zero",
        ));
    }
    let reserve = |scale: f64| Reserve {
        enabled: reserve_config.enabled,
        max_output_tokens: reserve_config.max_output_tokens.unwrap_or(1024),
        bytes_per_token,
        ceiling: reserve_config
            .ceiling
            .map(|c| (c.max(0.0) * scale).ceil() as u64),
    };
    let multiplier = |field: &str, value: Option<f64>| -> Result<f64, ConfigError> {
        match value {
            None => Ok(1.0),
            Some(m) if m.is_finite() && m >= 0.0 => Ok(m),
            Some(_) => Err(ConfigError::new(field, "must be a number of zero or more")),
        }
    };
    let tokens = || -> Result<Weight, ConfigError> {
        Ok(Weight::Tokens {
            reserve: reserve(1.0),
            input: multiplier("input_multiplier", config.input_multiplier)?,
            output: multiplier("output_multiplier", config.output_multiplier)?,
        })
    };
    match (config.weight_strategy, config.weight_key.as_deref()) {
        (Some(WeightStrategy::Usage), _) => tokens(),
        (Some(WeightStrategy::Cost), _) => {
            let prices = processor.prices.clone().ok_or_else(|| {
                ConfigError::new(
                    "weight_strategy",
                    format!("`cost` needs `prices` on the quota {:?}", processor.name),
                )
            })?;
            Ok(Weight::Cost {
                reserve: reserve(MICROS),
                prices,
            })
        }
        // The unified response's `usage` is the call's token count: read it
        // from the usage report, which streams fill too.
        (None | Some(WeightStrategy::Body), Some("usage")) => tokens(),
        (None | Some(WeightStrategy::Body), Some(key)) => Ok(Weight::Response {
            key: key.to_owned(),
            header: false,
        }),
        (Some(WeightStrategy::Header), Some(key)) => Ok(Weight::Response {
            key: key.to_owned(),
            header: true,
        }),
        (Some(WeightStrategy::Header), None) => Err(ConfigError::new(
            "weight_key",
            "weight_strategy header needs a weight_key",
        )),
        (_, None) => Ok(Weight::One),
    }
}

/// One tier, compiled.
#[derive(Debug)]
pub(crate) struct Tier {
    pub(crate) rule: String,
    pub(crate) matcher: TierMatch,
    pub(crate) caller: Caller,
    /// In the counter's unit.
    pub(crate) limits: Vec<(Unit, u64)>,
}

/// One attachment, compiled.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) processor: Arc<Processor>,
    pub(crate) tier_key: TierKey,
    pub(crate) tier_key_text: String,
    pub(crate) tiers: Vec<Tier>,
    pub(crate) weight: Weight,
    pub(crate) on_unmatched_tier_allow: bool,
    pub(crate) headers: bool,
}

/// Enforces one quota attachment. Built by [`Quotas::layer`].
#[derive(Clone, Debug)]
pub struct EnforceQuotaLayer {
    pub(crate) attachment: Arc<Attachment>,
}

impl EnforceQuotaLayer {
    /// Whether this attachment counts tokens or money (and so reserves).
    pub fn counts_tokens(&self) -> bool {
        matches!(
            self.attachment.weight,
            Weight::Tokens { .. } | Weight::Cost { .. }
        )
    }
}

impl<S> Layer<S> for EnforceQuotaLayer {
    type Service = EnforceQuota<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EnforceQuota::new(inner, self.attachment.clone())
    }
}
