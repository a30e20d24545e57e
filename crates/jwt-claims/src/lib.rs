#![doc = include_str!("../README.md")]

mod config;
mod keys;
mod layer;
mod service;
mod store;
mod validator;

pub use config::ValidatorConfig;
pub use layer::ValidateJwtLayer;
pub use service::ValidateJwt;

/// Tokens longer than this many bytes are refused (401) before decoding.
pub const MAX_TOKEN_BYTES: usize = validator::MAX_TOKEN_BYTES;
