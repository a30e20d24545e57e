#![doc = include_str!("../README.md")]

mod guard;
mod schema;

pub use guard::{
    ClassifierConfig, GuardCheck, GuardConfig, GuardPrompt, GuardPromptLayer, GuardSelection,
    PromptGuardConfig, PromptGuards, Severity,
};
pub use schema::{ValidateJsonSchema, ValidateJsonSchemaLayer};
