#![doc = include_str!("../README.md")]

mod condition;
mod config;
mod engine;
mod headers;
mod layer;
mod policy;
mod service;
mod vars;

pub use condition::RequestCondition;
pub use config::{CelCheck, PoliciesConfig, PolicyErrorConfig, PolicySetConfig};
pub use layer::EvaluatePoliciesLayer;
pub use service::{EvaluatePolicies, ResponseCheck};
