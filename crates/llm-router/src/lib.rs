#![doc = include_str!("../README.md")]

pub mod adapter;
mod body;
pub mod config;
mod dialect;
mod failover;
mod format;
pub mod ir;
mod layer;
pub mod routing;
mod service;
pub mod vendors;

pub use adapter::{
    Feature, ProviderSettings, Secret, StreamDecoder, UpstreamRequest, VendorAdapter,
    check_features,
};
pub use config::{LlmBackend, Provider, Providers};
pub use format::{ClientFormat, StreamEncoder};
pub use ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    Message, ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolChoice, WireDialect,
};
pub use layer::{DEFAULT_RESPONSE_LIMIT, LlmRouterLayer, RouteLlmLayer, SelectedProvider};
pub use service::RouteLlm;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
