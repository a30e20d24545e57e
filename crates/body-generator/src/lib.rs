#![doc = include_str!("../README.md")]

mod config;
mod data;
mod engine;
mod generate;
mod gotmpl;
mod layer;
mod service;

pub use config::BodyGeneratorConfig;
pub use engine::{BodyTemplate, RenderError};
pub use layer::{GenerateBodyLayer, GenerateResponseBodyLayer};
pub use service::{GenerateBody, GenerateResponseBody, RenderResponse};
