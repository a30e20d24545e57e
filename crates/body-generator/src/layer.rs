//! The two layers.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use switchboard_core::ConfigError;
use tower::Layer;

use crate::config::{BodyGeneratorConfig, Generator};
use crate::service::{GenerateBody, GenerateResponseBody};

/// Builds [`GenerateBody`]: `modifier/request-body-generator` (alias
/// `modifier/body-generator`), at endpoint or backend level.
#[derive(Clone, Debug)]
pub struct GenerateBodyLayer {
    generator: Arc<Generator>,
}

impl GenerateBodyLayer {
    /// Compiles the namespace's config. A `path` is read relative to
    /// `base_dir` (the config file's directory).
    pub fn try_from_config(value: &Value, base_dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            generator: Arc::new(Generator::from_value(value, base_dir)?),
        })
    }

    /// Compiles an already deserialized config.
    pub fn from_config(config: BodyGeneratorConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            generator: Arc::new(Generator::from_config(config, base_dir)?),
        })
    }
}

impl<S> Layer<S> for GenerateBodyLayer {
    type Service = GenerateBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GenerateBody::new(inner, self.generator.clone())
    }
}

/// Builds [`GenerateResponseBody`]: `modifier/response-body-generator`, at
/// endpoint or backend level.
#[derive(Clone, Debug)]
pub struct GenerateResponseBodyLayer {
    generator: Arc<Generator>,
}

impl GenerateResponseBodyLayer {
    /// Compiles the namespace's config. A `path` is read relative to
    /// `base_dir` (the config file's directory).
    pub fn try_from_config(value: &Value, base_dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            generator: Arc::new(Generator::from_value(value, base_dir)?),
        })
    }

    /// Compiles an already deserialized config.
    pub fn from_config(config: BodyGeneratorConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        Ok(Self {
            generator: Arc::new(Generator::from_config(config, base_dir)?),
        })
    }
}

impl<S> Layer<S> for GenerateResponseBodyLayer {
    type Service = GenerateResponseBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GenerateResponseBody::new(inner, self.generator.clone())
    }
}
