//! The unified LLM endpoints: `ai/providers` at the root and `ai/llm` on a
//! backend, mapped to the llm-router crate.

use serde_json::{Map, Value};
use std::sync::Arc;
use switchboard_core::ConfigError;

use switchboard_llm_router::routing::{Breakers, Classifiers, ClassifiersConfig, RouterConfig};
use switchboard_llm_router::{LlmBackend, Providers, RouteLlmLayer};

const PROVIDERS: &str = "ai/providers";
const CLASSIFIERS: &str = "ai/classifiers";

/// Checks the root gates and classifiers (errors are reported at the root).
pub(crate) fn check_classifiers(
    value: &Value,
    _: crate::namespaces::Slots<'_>,
    _: &crate::namespaces::BuildContext<'_>,
) -> Result<(), ConfigError> {
    let config: ClassifiersConfig = switchboard_core::config::from_value(value)?;
    Classifiers::from_config(&config)?;
    Ok(())
}

/// The layer for a backend's `ai/router`: the whole inventory, routed.
pub(crate) fn router_layer(
    value: &Value,
    root_extra: &Map<String, Value>,
    streaming: bool,
    breakers: &Breakers,
) -> Result<RouteLlmLayer, ConfigError> {
    let Some(root) = root_extra.get(PROVIDERS) else {
        return Err(ConfigError::new(
            "",
            "ai/router routes to the providers of the root extra_config[\"ai/providers\"], which is missing",
        ));
    };
    let providers = Providers::from_config(root)
        .map_err(|_| ConfigError::new("", "the root ai/providers config is invalid"))?;
    let classifiers = match root_extra.get(CLASSIFIERS) {
        None => Classifiers::default(),
        Some(root) => {
            let config: ClassifiersConfig = switchboard_core::config::from_value(root)
                .map_err(|_| ConfigError::new("", "the root ai/classifiers config is invalid"))?;
            Classifiers::from_config(&config)
                .map_err(|_| ConfigError::new("", "the root ai/classifiers config is invalid"))?
        }
    };
    let config: RouterConfig = switchboard_core::config::from_value(value)?;
    RouteLlmLayer::new(providers)
        .route_by_model(false)
        .always_stream(streaming)
        .with_router_in(&config, Arc::new(classifiers), breakers)
}

/// Checks the root inventory (errors are reported at the root).
pub(crate) fn check_providers(
    value: &Value,
    _: crate::namespaces::Slots<'_>,
    _: &crate::namespaces::BuildContext<'_>,
) -> Result<(), ConfigError> {
    Providers::from_config(value)?;
    Ok(())
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
