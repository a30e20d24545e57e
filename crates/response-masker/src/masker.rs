//! The compiled masker: the pure, sync API.

use std::sync::Arc;

use serde_json::Value;
use switchboard_core::config::from_value;
use switchboard_core::{ConfigError, DEFAULT_BODY_LIMIT};

use crate::config::{MaskConfig, ModifierConfig, NonJsonPolicy};
use crate::modifier::Modifier;
use crate::stream::SseMasker;

/// The default limit on one server-sent event: 1 MiB.
const DEFAULT_EVENT_LIMIT: usize = 1024 * 1024;

/// A compiled `modifier/response-body` config: masks JSON values, and makes
/// [`SseMasker`]s for event streams. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ResponseMasker {
    pub(crate) state: Arc<State>,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) modifiers: Vec<Modifier>,
    /// Why streams are refused, when they are.
    pub(crate) stream_refusal: Option<String>,
    pub(crate) non_json: NonJsonPolicy,
    pub(crate) max_body_size: usize,
    pub(crate) max_event_size: usize,
}

impl ResponseMasker {
    /// Compiles the object under `modifier/response-body`.
    ///
    /// Errors name the field relative to that object, e.g.
    /// `modifiers[1].regexp.find`.
    pub fn try_from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: MaskConfig = from_value(value)?;
        Self::from_config(&config)
    }

    /// Compiles a typed config.
    pub fn from_config(config: &MaskConfig) -> Result<Self, ConfigError> {
        let mut modifiers = Vec::with_capacity(config.modifiers.len());
        let mut stream_refusal = None;
        for (i, modifier_config) in config.modifiers.iter().enumerate() {
            let kind = match modifier_config {
                ModifierConfig::Regexp(_) => "regexp",
                ModifierConfig::Literal(_) => "literal",
                ModifierConfig::Upper(_) => "upper",
                ModifierConfig::Lower(_) => "lower",
                ModifierConfig::Trim(_) => "trim",
            };
            let modifier = Modifier::compile(modifier_config).map_err(|(key, message)| {
                ConfigError::new(format!("modifiers[{i}].{kind}.{key}"), message)
            })?;
            if let Some(problem) = modifier.stream_problem() {
                let key = if kind == "trim" { "" } else { ".find" };
                let path = format!("modifiers[{i}].{kind}{key}");
                if config.streaming == Some(true) {
                    return Err(ConfigError::new(
                        path,
                        format!("{problem}; or set \"streaming\": false to refuse event streams"),
                    ));
                }
                stream_refusal.get_or_insert_with(|| format!("{path}: {problem}"));
            }
            modifiers.push(modifier);
        }
        if config.streaming == Some(false) {
            stream_refusal = Some("the config sets \"streaming\": false".to_owned());
        }
        for (limit, name) in [
            (config.max_body_size, "max_body_size"),
            (config.max_event_size, "max_event_size"),
        ] {
            if limit == Some(0) {
                return Err(ConfigError::new(name, "must be greater than 0"));
            }
        }
        Ok(Self {
            state: Arc::new(State {
                modifiers,
                stream_refusal,
                non_json: config.non_json,
                max_body_size: config.max_body_size.unwrap_or(DEFAULT_BODY_LIMIT),
                max_event_size: config.max_event_size.unwrap_or(DEFAULT_EVENT_LIMIT),
            }),
        })
    }

    /// Applies every modifier, in order, to the strings its `field` reaches.
    /// Other values are left alone.
    pub fn mask_value(&self, value: &mut Value) {
        for modifier in &self.state.modifiers {
            modifier.path.for_each_string_mut(value, &mut |text| {
                if let Some(changed) = modifier.apply(text) {
                    *text = changed;
                }
            });
        }
    }

    /// Why event streams are refused (502) instead of masked, or `None`
    /// when they are masked.
    pub fn stream_refusal(&self) -> Option<&str> {
        self.state.stream_refusal.as_deref()
    }

    /// A masker for one event stream, or `None` when streams are refused
    /// (see [`ResponseMasker::stream_refusal`]).
    pub fn sse_masker(&self) -> Option<SseMasker> {
        self.state
            .stream_refusal
            .is_none()
            .then(|| SseMasker::new(self.state.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed() -> Value {
        json!({"modifiers": [
            {"regexp": {"@comment": "cards", "field": "req_uri_details.path",
                        "find": "\\b(\\d{13,16})\\b", "replace": "XXX-CREDIT-CARD-XXX"}},
            {"regexp": {"field": "req_uri_details.path",
                        "find": "([\\d+\\-\\s]*)(\\d{4})", "replace": "XXX-$2"}}
        ]})
    }

    #[test]
    fn seed_example_masks_the_echo_path() {
        let masker = ResponseMasker::try_from_config(&seed()).unwrap();
        let mut echo = json!({"req_uri": "/__echo/123456789",
                              "req_uri_details": {"path": "/__echo/123456789", "query": ""}});
        masker.mask_value(&mut echo);
        assert_eq!(echo["req_uri_details"]["path"], "/__echo/XXX-6789");
        assert_eq!(echo["req_uri"], "/__echo/123456789");
        // The seed's second pattern is unbounded: streams are refused, with
        // the reason.
        let refusal = masker.stream_refusal().unwrap();
        assert!(refusal.starts_with("modifiers[1].regexp.find"), "{refusal}");
        assert!(masker.sse_masker().is_none());
    }

    #[test]
    fn streaming_true_refuses_unbounded_patterns_at_load() {
        let mut config = seed();
        config["streaming"] = json!(true);
        let err = ResponseMasker::try_from_config(&config).unwrap_err();
        assert_eq!(err.path, "modifiers[1].regexp.find");
        assert!(err.message.contains("unboundedly long"), "{}", err.message);
        let config = json!({"streaming": true, "modifiers": [{"regexp": {"field": "a", "find": "\\d+", "replace": "#"}}]});
        assert!(ResponseMasker::try_from_config(&config).is_err());
        let config =
            json!({"streaming": true, "modifiers": [{"trim": {"field": "a", "find": " "}}]});
        assert_eq!(
            ResponseMasker::try_from_config(&config).unwrap_err().path,
            "modifiers[0].trim"
        );
        let config = json!({"streaming": true, "modifiers": [{"regexp": {"field": "a", "find": "\\d{4}", "replace": "#"}}]});
        assert!(
            ResponseMasker::try_from_config(&config)
                .unwrap()
                .sse_masker()
                .is_some()
        );
        let config = json!({"streaming": false, "modifiers": [{"upper": {"field": "a"}}]});
        assert!(
            ResponseMasker::try_from_config(&config)
                .unwrap()
                .stream_refusal()
                .is_some()
        );
    }

    #[test]
    fn every_kind_applies_in_order() {
        let config = json!({"modifiers": [
            {"literal": {"field": "a", "find": "secret", "replace": "[x]"}},
            {"upper": {"field": "a"}},
            {"lower": {"field": "b.*"}},
            {"trim": {"field": "c.0", "find": " \n"}},
            {"regexp": {"field": "d.*.n", "find": "(\\d)\\d*", "replace": "${1}…"}}
        ]});
        let masker = ResponseMasker::try_from_config(&config).unwrap();
        let mut value = json!({
            "a": "my secret", "b": {"x": "MiXed", "y": 3, "z": ["KEEP"]},
            "c": ["  padded\n", " no "], "d": [{"n": "12345"}, {"n": 12345}, {"m": "999"}]
        });
        masker.mask_value(&mut value);
        assert_eq!(
            value,
            json!({
                "a": "MY [X]", "b": {"x": "mixed", "y": 3, "z": ["KEEP"]},
                "c": ["padded", " no "], "d": [{"n": "1…"}, {"n": 12345}, {"m": "999"}]
            })
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (
                json!({"modifiers": [{"regexp": {"field": "a", "find": "(", "replace": ""}}]}),
                "modifiers[0].regexp.find",
            ),
            (
                json!({"modifiers": [{"upper": {"field": "a"}}, {"literal": {"field": "a", "find": "", "replace": "x"}}]}),
                "modifiers[1].literal.find",
            ),
            (
                json!({"modifiers": [{"upper": {"field": "a..b"}}]}),
                "modifiers[0].upper.field",
            ),
            (
                json!({"modifiers": [{"upper": {"field": "a", "find": "x"}}]}),
                "modifiers[0].upper.find",
            ),
            (
                json!({"modifiers": [], "max_body_size": 0}),
                "max_body_size",
            ),
            (json!({"modifiers": [], "non_json": "maybe"}), "non_json"),
        ];
        for (config, path) in cases {
            let err = ResponseMasker::try_from_config(&config).unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
        let two_kinds = json!({"modifiers": [{"upper": {"field": "a"}, "lower": {"field": "a"}}]});
        assert!(ResponseMasker::try_from_config(&two_kinds).is_err());
    }
}
