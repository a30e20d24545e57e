#![doc = include_str!("../README.md")]

mod config;
mod layer;
mod service;
#[cfg(test)]
mod tests;
mod window;

pub use config::{
    Backoff, LimitConfig, ProcessorConfig, ProcessorsConfig, QuotaConfig, ReserveConfig,
    RuleConfig, TierConfig, WeightStrategy,
};
pub use layer::{EnforceQuotaLayer, Quotas};
pub use service::{EnforceQuota, QUOTA_LIMIT, QUOTA_REMAINING};
pub use window::Unit;
