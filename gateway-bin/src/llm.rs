//! The unified LLM endpoints: `ai/providers` at the root and `ai/llm` on a
//! backend, mapped to the llm-router crate.

use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_llm_router::{LlmBackend, Providers, RouteLlmLayer};

const PROVIDERS: &str = "ai/providers";

/// Checks the root inventory (errors are reported at the root).
pub(crate) fn check_providers(
    value: &Value,
    _: crate::namespaces::Level,
    _: &crate::namespaces::BuildContext<'_>,
) -> Result<Vec<crate::namespaces::Stage>, ConfigError> {
    Providers::from_config(value)?;
    Ok(Vec::new())
}

/// The layer for a backend's `ai/llm`. `backend_url` is the inline form's
/// endpoint; `streaming` is the endpoint's `output_encoding: "streaming"`.
pub(crate) fn layer(
    value: &Value,
    root_extra: &Map<String, Value>,
    backend_url: Option<&str>,
    streaming: bool,
) -> Result<RouteLlmLayer, ConfigError> {
    let providers = match root_extra.get(PROVIDERS) {
        // Root errors are reported at the root; here they only stop the build.
        Some(root) => Some(
            Providers::from_config(root)
                .map_err(|_| ConfigError::new("", "the root ai/providers config is invalid"))?,
        ),
        None => None,
    };
    let backend = LlmBackend::from_config(value, providers.as_ref(), backend_url)?;
    let mut layer = RouteLlmLayer::for_provider(backend.into_provider());
    if let Some(providers) = providers {
        // The inventory answers `GET` model listings; the backend's own
        // provider stays the one that serves chats.
        let chosen = layer.providers().iter().next().cloned();
        if let Some(chosen) = chosen {
            let mut list = vec![chosen.clone()];
            list.extend(
                providers
                    .iter()
                    .filter(|p| p.name() != chosen.name())
                    .cloned(),
            );
            layer = RouteLlmLayer::new(Providers::new(list)).route_by_model(false);
        }
    }
    Ok(layer.route_by_model(false).always_stream(streaming))
}
