#![doc = include_str!("../README.md")]

mod config;
mod layer;
mod modifier;
mod query;
mod service;
mod spec;

pub use layer::ModifyHeadersLayer;
pub use modifier::Modifiers;
pub use service::{ModifyHeaders, ResponseFuture, ResponseStep};
pub use spec::{
    BodyModifierConfig, FifoGroupConfig, FilterConfig, HeaderBlacklistConfig, HeaderCopyConfig,
    HeaderValueConfig, MartianConfig, PrioritizedConfig, PriorityGroupConfig, QueryModifierConfig,
    RegexFilterConfig, Scope, UrlModifierConfig,
};
