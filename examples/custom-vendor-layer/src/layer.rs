//! The layer and its config: compiled once, shared by every service.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use switchboard_core::ConfigError;
use switchboard_core::config::{from_value, join_path, key_segment};
use tower::Layer;

use crate::service::TranslateToAcme;
use crate::translate::Engines;

/// The config of [`TranslateToAcmeLayer`], as it would sit under a
/// namespace of a gateway config.
///
/// ```json
/// { "engines": { "gpt-4o": "acme-large" }, "default_engine": "acme-small" }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AcmeConfig {
    /// OpenAI model name → Acme engine.
    #[serde(default)]
    pub engines: BTreeMap<String, String>,
    /// The engine for any other model.
    #[serde(default = "default_engine")]
    pub default_engine: String,
    /// The largest Acme answer (or stream event) held in memory, in bytes.
    #[serde(default = "default_max_response_size")]
    pub max_response_size: usize,
}

fn default_engine() -> String {
    "acme-small".to_owned()
}

fn default_max_response_size() -> usize {
    4 * 1024 * 1024
}

/// State shared by every [`TranslateToAcme`] service of one layer.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) engines: Engines,
    pub(crate) max_response_size: usize,
}

/// Builds [`TranslateToAcme`] services: clients speak OpenAI chat
/// completions, the inner service speaks Acme.
#[derive(Clone, Debug)]
pub struct TranslateToAcmeLayer {
    state: Arc<State>,
}

impl TranslateToAcmeLayer {
    /// Reads and checks a config. Errors name the JSON path of the mistake,
    /// relative to `config` (`engines["gpt-4o"]`, `default_engine`).
    pub fn try_from_config(config: &Value) -> Result<Self, ConfigError> {
        let config: AcmeConfig = from_value(config)?;
        if config.default_engine.trim().is_empty() {
            return Err(ConfigError::new("default_engine", "must not be empty"));
        }
        for (model, engine) in &config.engines {
            if engine.trim().is_empty() {
                return Err(ConfigError::new(
                    join_path("engines", &key_segment(model)),
                    "must name an Acme engine",
                ));
            }
        }
        if config.max_response_size == 0 {
            return Err(ConfigError::new("max_response_size", "must be more than 0"));
        }
        Ok(Self {
            state: Arc::new(State {
                engines: Engines {
                    by_model: config.engines,
                    default: config.default_engine,
                },
                max_response_size: config.max_response_size,
            }),
        })
    }
}

impl<S> Layer<S> for TranslateToAcmeLayer {
    type Service = TranslateToAcme<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TranslateToAcme::new(inner, Arc::clone(&self.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mistakes_name_their_path() {
        let err = TranslateToAcmeLayer::try_from_config(&json!({"engines": {"gpt-4o": " "}}))
            .unwrap_err();
        assert_eq!(err.path, "engines.gpt-4o");
        let err =
            TranslateToAcmeLayer::try_from_config(&json!({"engines": {"a/b": ""}})).unwrap_err();
        assert_eq!(err.path, r#"engines["a/b"]"#);
        let err = TranslateToAcmeLayer::try_from_config(&json!({"engine": "x"})).unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
        let err = TranslateToAcmeLayer::try_from_config(&json!({"default_engine": 3})).unwrap_err();
        assert_eq!(err.path, "default_engine");
        assert!(TranslateToAcmeLayer::try_from_config(&json!({"@comment": "ok"})).is_ok());
    }
}
