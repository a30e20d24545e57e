#![doc = include_str!("../README.md")]

mod config;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use config::{ProxyRateLimitConfig, RateLimitConfig, TierConfig, TieredConfig};
pub use layer::{LimitRateLayer, Variant};
pub use service::{LimitRate, RATELIMIT, RATELIMIT_POLICY};
