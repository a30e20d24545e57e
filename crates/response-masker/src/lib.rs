#![doc = include_str!("../README.md")]

mod body;
mod config;
mod layer;
mod masker;
mod modifier;
mod path;
mod service;
mod stream;

pub use config::{
    FieldConfig, MaskConfig, ModifierConfig, NonJsonPolicy, ReplaceConfig, TrimConfig,
};
pub use layer::MaskResponseLayer;
pub use masker::ResponseMasker;
pub use service::{MaskResponse, MaskStep};
pub use stream::SseMasker;
