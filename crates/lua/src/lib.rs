#![doc = include_str!("../README.md")]

mod config;
mod engine;
mod http;
mod service;
mod value;

pub use config::{LuaConfig, Scope};
pub use service::{LuaLayer, RunLua};
