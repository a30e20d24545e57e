#![doc = include_str!("../README.md")]

mod config;
mod engine;
mod headers;
mod layer;
mod policy;
mod service;
mod vars;

pub use config::{CelCheck, PoliciesConfig, PolicyErrorConfig, PolicySetConfig};
pub use layer::EvaluatePoliciesLayer;
pub use service::{EvaluatePolicies, ResponseCheck};
