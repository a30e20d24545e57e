//! The config both generators share, and its compilation.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use switchboard_core::ConfigError;
use switchboard_core::config::from_value;

use crate::data::Uses;
use crate::engine::BodyTemplate;

/// `modifier/request-body-generator` (alias `modifier/body-generator`) and
/// `modifier/response-body-generator`, at endpoint or backend level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BodyGeneratorConfig {
    /// A template file, relative to the config file's directory.
    #[serde(default)]
    pub path: Option<String>,
    /// The template itself, base64-encoded.
    #[serde(default)]
    pub template: Option<String>,
    /// The `Content-Type` of the generated body.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Log the template input and output at debug level (secret headers
    /// redacted).
    #[serde(default)]
    pub debug: bool,
    /// Values available to the template as `variables`.
    #[serde(default)]
    pub variables: Map<String, Value>,
}

fn default_content_type() -> String {
    "application/json".to_owned()
}

/// A compiled generator: the immutable state both layers hold in an `Arc`.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) template: BodyTemplate,
    pub(crate) content_type: String,
    pub(crate) debug: bool,
    pub(crate) variables: Value,
    pub(crate) uses: Uses,
}

impl Generator {
    pub(crate) fn from_value(value: &Value, base_dir: &Path) -> Result<Self, ConfigError> {
        let config: BodyGeneratorConfig = from_value(value)?;
        Self::from_config(config, base_dir)
    }

    pub(crate) fn from_config(
        config: BodyGeneratorConfig,
        base_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let (source, field) = match (&config.path, &config.template) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "",
                    "set either `path` or `template`, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "",
                    "one of `path` or `template` is required",
                ));
            }
            (Some(path), None) => {
                let full = base_dir.join(path);
                let source = switchboard_core::config::read_text_bounded(
                    &full,
                    switchboard_core::config::MAX_CONFIG_FILE,
                )
                .map_err(|err| ConfigError::new("path", format!("template: {err}")))?;
                (source, "path")
            }
            (None, Some(encoded)) => {
                let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&compact)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&compact))
                    .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&compact))
                    .map_err(|err| {
                        ConfigError::new("template", format!("not valid base64: {err}"))
                    })?;
                let source = String::from_utf8(bytes).map_err(|_| {
                    ConfigError::new("template", "the decoded template is not UTF-8")
                })?;
                (source, "template")
            }
        };
        if http::HeaderValue::from_str(&config.content_type).is_err() {
            return Err(ConfigError::new("content_type", "not a valid header value"));
        }
        let template =
            BodyTemplate::compile(&source).map_err(|err| ConfigError::new(field, err.message))?;
        let uses = Uses::of(&template);
        Ok(Self {
            template,
            content_type: config.content_type,
            debug: config.debug,
            variables: Value::Object(config.variables),
            uses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requires_exactly_one_source() {
        let dir = Path::new(".");
        assert!(Generator::from_value(&json!({}), dir).is_err());
        let err =
            Generator::from_value(&json!({"path": "a", "template": "e30="}), dir).unwrap_err();
        assert!(err.message.contains("not both"));
        let err = Generator::from_value(&json!({"template": "e30=", "extra": 1}), dir).unwrap_err();
        assert!(err.message.contains("unknown field"));
        let err = Generator::from_value(&json!({"template": "!!!"}), dir).unwrap_err();
        assert_eq!(err.path, "template");
    }

    #[test]
    fn path_is_relative_to_base_dir() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let generator = Generator::from_value(
            &json!({"path": "templates/openai.tmpl", "@comment": "x"}),
            &dir,
        )
        .unwrap();
        assert!(generator.uses.req_body);
        assert_eq!(generator.content_type, "application/json");
        let err = Generator::from_value(&json!({"path": "missing.tmpl"}), &dir).unwrap_err();
        assert_eq!(err.path, "path");
    }

    #[test]
    fn go_errors_name_the_field_and_line() {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode("{\n{{ template \"x\" }}\n}");
        let err = Generator::from_value(&json!({"template": encoded}), Path::new(".")).unwrap_err();
        assert_eq!(err.path, "template");
        assert!(err.message.starts_with("line 2:"), "{}", err.message);
    }
}
