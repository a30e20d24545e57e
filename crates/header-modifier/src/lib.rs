#![doc = include_str!("../README.md")]

mod config;
mod layer;
mod modifier;
mod query;
mod service;

pub use layer::ModifyHeadersLayer;
pub use modifier::Modifiers;
pub use service::{ModifyHeaders, ResponseFuture, ResponseStep};
