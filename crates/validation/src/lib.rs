#![doc = include_str!("../README.md")]

mod guard;
mod schema;

pub use guard::{GuardPrompt, GuardPromptLayer, PromptGuards, Severity};
pub use schema::{ValidateJsonSchema, ValidateJsonSchemaLayer};
