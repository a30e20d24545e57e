#![doc = include_str!("../README.md")]

mod config;
mod extract;
mod hash;
mod keyring;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use config::{ApiKeysConfig, EndpointKeysConfig, KeyConfig, Strategy};
pub use hash::HashKind;
pub use layer::{ApiKeys, ValidateApiKeyLayer};
pub use service::ValidateApiKey;
