//! The vendor adapters, one module per vendor, and the registry that maps a
//! config's `provider` value to one.
//!
//! Adding a vendor: write `src/vendors/<vendor>.rs` implementing
//! [`VendorAdapter`] and add one line to
//! [`REGISTRY`].

use std::sync::Arc;

use crate::adapter::VendorAdapter;

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod gemini;
pub mod ollama;
pub mod openai;
pub mod openai_compatible;
pub mod openai_responses;
pub(crate) mod wire;

/// Picks a vendor's adapter for a configured endpoint (`None`: the
/// default one). Some vendors speak several APIs and choose by the
/// endpoint's path (OpenAI: `/chat/completions` or `/responses`).
pub type Select = fn(endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String>;

/// Every vendor the gateway knows, by its `provider` name.
pub const REGISTRY: &[(&str, Select)] = &[
    ("openai", openai::select),
    ("anthropic", anthropic::select),
    ("mistral", openai_compatible::mistral),
    ("deepseek", openai_compatible::deepseek),
    ("alibaba", openai_compatible::alibaba),
    ("ollama", ollama::select),
    ("openai-compatible", openai_compatible::generic),
    ("gemini", gemini::select),
    ("bedrock", bedrock::select),
    ("cohere", cohere::select),
];

/// The `provider` names in the registry.
pub fn names() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(name, _)| *name)
}

/// The adapter for `vendor` at `endpoint` (its default API when `None`).
pub fn adapter_for(vendor: &str, endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    match REGISTRY.iter().find(|(name, _)| *name == vendor) {
        Some((_, select)) => select(endpoint),
        None => Err(format!(
            "unknown provider {vendor:?}; known: {}",
            names().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// The default adapter for `vendor`, when the registry knows it.
pub fn adapter(vendor: &str) -> Option<Arc<dyn VendorAdapter>> {
    adapter_for(vendor, None).ok()
}

/// The path of an endpoint URL, without query.
pub(crate) fn endpoint_path(endpoint: &str) -> &str {
    let after_scheme = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |at| &after_scheme[at..]);
    path.split(['?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('/')
}
