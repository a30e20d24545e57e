#![doc = include_str!("../README.md")]

pub mod adapter;
pub mod config;
mod dialect;
mod format;
pub mod ir;
pub mod routing;
pub mod vendors;

pub use adapter::{
    Feature, ProviderSettings, Secret, StreamDecoder, UpstreamRequest, VendorAdapter,
    check_features,
};
pub use format::{ClientFormat, StreamEncoder};
pub use ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    Message, ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolChoice,
};
