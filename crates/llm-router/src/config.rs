//! Provider configuration: KrakenD's `ai/providers` inventory and the
//! backend `ai/llm` object, validated at load.

use serde_json::{Map, Value};
use switchboard_core::ConfigError;

/// Type-checks the variables every vendor shares: sampling numbers within
/// range, token limits as positive integers, stop lists as strings,
/// `extra_payload` as an object. Unknown variables pass (KrakenD accepts
/// them for custom templates), except where an adapter says otherwise.
pub fn check_common_variables(variables: &Map<String, Value>) -> Result<(), ConfigError> {
    for (key, value) in variables {
        let problem = match key.as_str() {
            "temperature" => range(value, 0.0, 2.0),
            "top_p" => range(value, 0.0, 1.0),
            "top_k" | "max_tokens" | "max_output_tokens" | "n" | "candidate_count" => {
                positive_integer(value)
            }
            "seed" | "random_seed" => value
                .as_i64()
                .is_none()
                .then(|| "must be an integer".to_owned()),
            "stop" | "stop_sequences" => string_or_list(value),
            "safe_prompt" => (!value.is_boolean()).then(|| "must be a boolean".to_owned()),
            "truncation" => match value.as_str() {
                Some("auto" | "disabled") => None,
                _ => Some("must be \"auto\" or \"disabled\"".to_owned()),
            },
            "extra_payload" => (!value.is_object()).then(|| "must be an object".to_owned()),
            "model" => (!value.is_string()).then(|| "must be a string".to_owned()),
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(ConfigError::new(key.clone(), problem));
        }
    }
    Ok(())
}

fn range(value: &Value, min: f64, max: f64) -> Option<String> {
    match value.as_f64() {
        Some(v) if (min..=max).contains(&v) => None,
        _ => Some(format!("must be a number from {min} to {max}")),
    }
}

fn positive_integer(value: &Value) -> Option<String> {
    match value.as_u64() {
        Some(v) if v > 0 => None,
        _ => Some("must be a positive integer".to_owned()),
    }
}

fn string_or_list(value: &Value) -> Option<String> {
    match value {
        Value::String(_) => None,
        Value::Array(items) if items.iter().all(Value::is_string) => None,
        _ => Some("must be a string or a list of strings".to_owned()),
    }
}

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::adapter::{ProviderSettings, Secret, VendorAdapter};
use crate::format::ClientFormat;

/// One provider of the inventory: its settings, the adapter that speaks its
/// API and the client format its endpoints speak.
#[derive(Clone)]
pub struct Provider {
    settings: Arc<ProviderSettings>,
    adapter: Arc<dyn VendorAdapter>,
    format: ClientFormat,
    debug: bool,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.settings.name)
            .field("vendor", &self.adapter.vendor())
            .field("endpoint", &self.settings.endpoint)
            .field("model", &self.settings.model)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// A provider served by `adapter` (a registered one or your own),
    /// speaking the unified format until [`Provider::with_format`].
    pub fn with_adapter(adapter: Arc<dyn VendorAdapter>, settings: ProviderSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            adapter,
            format: ClientFormat::Unified,
            debug: false,
        }
    }

    /// A provider of a registered vendor with its defaults: `endpoint` and
    /// `model` may be `None`.
    pub fn builtin(
        name: &str,
        vendor: &str,
        endpoint: Option<&str>,
        model: Option<&str>,
        credentials: Secret,
    ) -> Result<Self, ConfigError> {
        let adapter = crate::vendors::adapter_for(vendor, endpoint)
            .map_err(|message| ConfigError::new("provider", message))?;
        let model_configured = model.is_some();
        let model = model.unwrap_or(adapter.default_model()).to_owned();
        let mut settings = ProviderSettings::new(
            name,
            endpoint.map_or_else(|| adapter.default_endpoint(&model, false), str::to_owned),
            model,
            credentials,
        );
        settings.endpoint_configured = endpoint.is_some();
        settings.model_configured = model_configured;
        Ok(Self::with_adapter(adapter, settings))
    }

    /// Sets the client format.
    #[must_use]
    pub fn with_format(mut self, format: ClientFormat) -> Self {
        self.format = format;
        self
    }

    /// The inventory name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The settings the adapter sees.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// The adapter.
    pub fn adapter(&self) -> &dyn VendorAdapter {
        self.adapter.as_ref()
    }

    /// The client format.
    pub fn format(&self) -> ClientFormat {
        self.format
    }

    /// Whether `debug` is on: translated requests and answers are logged at
    /// debug level (never headers, so never credentials).
    pub fn debug(&self) -> bool {
        self.debug
    }
}

/// The provider inventory (`ai/providers` in the root `extra_config`).
#[derive(Clone, Debug, Default)]
pub struct Providers {
    list: Vec<Provider>,
}

impl Providers {
    /// An inventory of `providers` (names should be unique; the first of a
    /// name wins).
    pub fn new(providers: Vec<Provider>) -> Self {
        Self { list: providers }
    }

    /// Reads `{"providers": [...]}`. Errors name the JSON path relative to
    /// the object (`providers[1].variables.temperature`).
    pub fn from_config(value: &Value) -> Result<Self, ConfigError> {
        let config: ProvidersConfig = switchboard_core::config::from_value(value)?;
        let mut list: Vec<Provider> = Vec::with_capacity(config.providers.len());
        for (i, entry) in config.providers.into_iter().enumerate() {
            let at = format!("providers[{i}]");
            if entry.name.is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
            }
            if list.iter().any(|p| p.name() == entry.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("provider name {:?} is used twice", entry.name),
                ));
            }
            list.push(entry.build().map_err(|e| e.at(&at))?);
        }
        Ok(Self { list })
    }

    /// A provider by name.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.list.iter().find(|p| p.name() == name)
    }

    /// Every provider, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.list.iter()
    }

    /// The number of providers.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether the inventory is empty.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersConfig {
    providers: Vec<ProviderEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    name: String,
    provider: String,
    model: Option<String>,
    credentials: Option<String>,
    endpoint: Option<String>,
    input_template: Option<String>,
    output_template: Option<String>,
    debug: Option<bool>,
    streaming: Option<bool>,
    format: Option<FormatName>,
    variables: Option<Map<String, Value>>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FormatName {
    Openai,
    Anthropic,
}

impl From<FormatName> for ClientFormat {
    fn from(name: FormatName) -> Self {
        match name {
            FormatName::Openai => ClientFormat::OpenAi,
            FormatName::Anthropic => ClientFormat::Anthropic,
        }
    }
}

/// Go templates are KrakenD's own engine: refused rather than ignored, since
/// ignoring one would change every answer's shape.
fn refuse_templates(input: &Option<String>, output: &Option<String>) -> Result<(), ConfigError> {
    for (field, value) in [("input_template", input), ("output_template", output)] {
        if value.is_some() {
            return Err(ConfigError::new(
                field,
                "custom Go templates are not supported; remove it to use the built-in translation",
            ));
        }
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    match url::Url::parse(endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(()),
        _ => Err(ConfigError::new("endpoint", "must be a full http(s) URL")),
    }
}

/// Builds a provider from its parts, as both config forms give them.
struct Parts<'a> {
    name: &'a str,
    vendor: &'a str,
    model: Option<String>,
    credentials: Option<String>,
    endpoint: Option<String>,
    streaming: bool,
    debug: bool,
    format: ClientFormat,
    variables: Map<String, Value>,
    /// Where `model` sits, for errors.
    model_path: &'static str,
}

fn build_provider(parts: Parts<'_>) -> Result<Provider, ConfigError> {
    if let Some(endpoint) = &parts.endpoint {
        check_endpoint(endpoint)?;
    }
    let adapter = crate::vendors::adapter_for(parts.vendor, parts.endpoint.as_deref()).map_err(
        |message| {
            let field =
                if parts.endpoint.is_some() && crate::vendors::adapter(parts.vendor).is_some() {
                    "endpoint"
                } else {
                    "provider"
                };
            ConfigError::new(field, message)
        },
    )?;
    adapter
        .check_variables(&parts.variables)
        .map_err(|e| e.at("variables"))?;
    let model_configured = parts.model.is_some();
    if !model_configured && adapter.requires_model() {
        return Err(ConfigError::new(
            parts.model_path,
            "is required for this provider",
        ));
    }
    let model = parts
        .model
        .unwrap_or_else(|| adapter.default_model().to_owned());
    let endpoint_configured = parts.endpoint.is_some();
    let endpoint = parts
        .endpoint
        .unwrap_or_else(|| adapter.default_endpoint(&model, parts.streaming));
    let mut settings = ProviderSettings::new(
        parts.name,
        endpoint,
        model,
        Secret::new(parts.credentials.unwrap_or_default()),
    )
    .with_variables(parts.variables);
    settings.endpoint_configured = endpoint_configured;
    settings.model_configured = model_configured;
    settings.streaming = parts.streaming;
    let mut provider = Provider::with_adapter(adapter, settings).with_format(parts.format);
    provider.debug = parts.debug;
    Ok(provider)
}

impl ProviderEntry {
    fn build(self) -> Result<Provider, ConfigError> {
        refuse_templates(&self.input_template, &self.output_template)?;
        let mut variables = self.variables.unwrap_or_default();
        // A model in the variables is the same as the entry's own.
        let model = match (self.model, variables.remove("model")) {
            (Some(model), _) => Some(model),
            (None, Some(Value::String(model))) => Some(model),
            (None, Some(_)) => return Err(ConfigError::new("variables.model", "must be a string")),
            (None, None) => None,
        };
        build_provider(Parts {
            name: &self.name,
            vendor: &self.provider,
            model,
            credentials: self.credentials,
            endpoint: self.endpoint,
            streaming: self.streaming.unwrap_or(false),
            debug: self.debug.unwrap_or(false),
            format: self.format.map_or(ClientFormat::Unified, Into::into),
            variables,
            model_path: "model",
        })
    }
}

/// The backend's `ai/llm`: which provider serves it and the client format.
#[derive(Clone, Debug)]
pub struct LlmBackend {
    provider: Provider,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineVersion {
    credentials: String,
    variables: Option<Map<String, Value>>,
    debug: Option<bool>,
    input_template: Option<String>,
    output_template: Option<String>,
}

/// The version key of an inline vendor object.
fn version_key(vendor: &str) -> &'static str {
    if vendor == "gemini" { "v1beta" } else { "v1" }
}

/// Vendors whose model KrakenD requires in the inline `variables`.
const INLINE_MODEL_REQUIRED: [&str; 4] = ["openai", "anthropic", "mistral", "alibaba"];

impl LlmBackend {
    /// Reads `ai/llm`: a reference `{"provider": "<name>"}` into
    /// `providers`, or the inline `{"<vendor>": {"v1": {...}}, "format"}`.
    /// `backend_url` (the backend's host + `url_pattern`) is the inline
    /// form's endpoint; `None` leaves the vendor default.
    pub fn from_config(
        value: &Value,
        providers: Option<&Providers>,
        backend_url: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut value = value.clone();
        switchboard_core::config::strip_comments(&mut value);
        let Value::Object(map) = value else {
            return Err(ConfigError::new("", "must be an object"));
        };
        if let Some(reference) = map.get("provider") {
            if let Some(extra) = map.keys().find(|k| *k != "provider") {
                return Err(ConfigError::new(
                    switchboard_core::config::key_segment(extra),
                    "a provider reference takes no other field (the provider's own config applies)",
                ));
            }
            let Some(name) = reference.as_str() else {
                return Err(ConfigError::new("provider", "must be a string"));
            };
            let provider = providers.and_then(|p| p.get(name)).ok_or_else(|| {
                ConfigError::new(
                    "provider",
                    format!("no provider {name:?} in the root ai/providers"),
                )
            })?;
            return Ok(Self {
                provider: provider.clone(),
            });
        }
        let format = match map.get("format") {
            None => ClientFormat::Unified,
            Some(Value::String(name)) => ClientFormat::from_name(name)
                .ok_or_else(|| ConfigError::new("format", "must be \"openai\" or \"anthropic\""))?,
            Some(_) => return Err(ConfigError::new("format", "must be a string")),
        };
        let vendors: Vec<&String> = map.keys().filter(|k| *k != "format").collect();
        let vendor = match vendors.as_slice() {
            [vendor] => vendor.as_str(),
            [] => {
                return Err(ConfigError::new(
                    "",
                    "needs a \"provider\" reference or one vendor object such as {\"openai\": {\"v1\": {...}}}",
                ));
            }
            [_, second, ..] => {
                return Err(ConfigError::new(
                    switchboard_core::config::key_segment(second),
                    "only one vendor object is allowed",
                ));
            }
        };
        let vendor_at = switchboard_core::config::key_segment(vendor);
        if crate::vendors::adapter_for(vendor, Some("http://check.invalid/x")).is_err()
            && !crate::vendors::names().any(|n| n == vendor)
        {
            return Err(ConfigError::new(
                vendor_at,
                format!(
                    "unknown provider {vendor:?}; known: {}",
                    crate::vendors::names().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let key = version_key(vendor);
        let versions = map.get(vendor).and_then(Value::as_object).ok_or_else(|| {
            ConfigError::new(vendor_at.clone(), format!("must be {{\"{key}\": {{...}}}}"))
        })?;
        if let Some(other) = versions.keys().find(|k| *k != key) {
            return Err(ConfigError::new(
                format!(
                    "{vendor_at}.{}",
                    switchboard_core::config::key_segment(other)
                ),
                format!("unknown version; {vendor} takes {key:?}"),
            ));
        }
        let at = format!("{vendor_at}.{key}");
        let version_value = versions
            .get(key)
            .ok_or_else(|| ConfigError::new(at.clone(), "is required"))?;
        let version: InlineVersion =
            switchboard_core::config::from_value(version_value).map_err(|e| e.at(&at))?;
        refuse_templates(&version.input_template, &version.output_template)
            .map_err(|e| e.at(&at))?;
        let mut variables = match version.variables {
            Some(variables) => variables,
            None if vendor == "gemini" => Map::new(),
            None => return Err(ConfigError::new(format!("{at}.variables"), "is required")),
        };
        let model = match variables.remove("model") {
            Some(Value::String(model)) if vendor == "bedrock" => {
                let _ = model;
                return Err(ConfigError::new(
                    format!("{at}.variables.model"),
                    "bedrock takes the model from the backend URL (/model/<id>/converse)",
                ));
            }
            Some(Value::String(model)) => Some(model),
            Some(_) => {
                return Err(ConfigError::new(
                    format!("{at}.variables.model"),
                    "must be a string",
                ));
            }
            None if INLINE_MODEL_REQUIRED.contains(&vendor) => {
                return Err(ConfigError::new(
                    format!("{at}.variables.model"),
                    "is required",
                ));
            }
            None => None,
        };
        let provider = build_provider(Parts {
            name: vendor,
            vendor,
            model,
            credentials: Some(version.credentials),
            endpoint: backend_url.map(str::to_owned),
            streaming: false,
            debug: version.debug.unwrap_or(false),
            format,
            variables,
            model_path: "variables.model",
        })
        .map_err(|e| {
            if e.path == "endpoint" {
                ConfigError::new("", format!("the backend URL: {}", e.message))
            } else {
                e.at(&at)
            }
        })?;
        Ok(Self { provider })
    }

    /// The provider that serves the backend.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// Into the provider.
    pub fn into_provider(self) -> Provider {
        self.provider
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inventory_with_defaults_and_paths() {
        let providers = Providers::from_config(&json!({"providers": [
            {"name": "fast-chat", "provider": "openai", "model": "gpt-5-nano",
             "endpoint": "https://api.openai.com/v1/chat/completions",
             "credentials": "sk", "variables": {"max_output_tokens": 512}},
            {"name": "cheap", "provider": "mistral", "credentials": "k", "streaming": true, "format": "openai"},
            {"name": "claude", "provider": "anthropic", "@comment": "x"}
        ]}))
        .unwrap();
        let cheap = providers.get("cheap").unwrap();
        assert_eq!(
            cheap.settings().endpoint,
            "https://api.mistral.ai/v1/chat/completions"
        );
        assert_eq!(cheap.settings().model, "mistral-small-latest");
        assert_eq!(cheap.format(), ClientFormat::OpenAi);
        assert!(!format!("{providers:?}").contains("\"sk\""));

        let err = Providers::from_config(&json!({"providers": [
            {"name": "a", "provider": "anthropic", "variables": {"temperature": 3}}]}))
        .unwrap_err();
        assert_eq!(err.path, "providers[0].variables.temperature");
        let err = Providers::from_config(&json!({"providers": [
            {"name": "a", "provider": "skynet"}]}))
        .unwrap_err();
        assert_eq!(err.path, "providers[0].provider");
        let err = Providers::from_config(&json!({"providers": [
            {"name": "a", "provider": "openai", "temprature": 1}]}))
        .unwrap_err();
        assert!(err.message.contains("temprature"), "{err}");
        let err = Providers::from_config(&json!({"providers": [
            {"name": "a", "provider": "openai-compatible"}]}))
        .unwrap_err();
        assert_eq!(err.path, "providers[0].provider");
        let err = Providers::from_config(&json!({"providers": [
            {"name": "a", "provider": "anthropic"}, {"name": "a", "provider": "anthropic"}]}))
        .unwrap_err();
        assert_eq!(err.path, "providers[1].name");
    }

    #[test]
    fn backend_forms() {
        let providers = Providers::from_config(&json!({"providers": [
            {"name": "claude", "provider": "anthropic", "format": "anthropic"}]}))
        .unwrap();
        let backend =
            LlmBackend::from_config(&json!({"provider": "claude"}), Some(&providers), None)
                .unwrap();
        assert_eq!(backend.provider().format(), ClientFormat::Anthropic);
        let err = LlmBackend::from_config(
            &json!({"provider": "claude", "format": "openai"}),
            Some(&providers),
            None,
        )
        .unwrap_err();
        assert_eq!(err.path, "format");
        let err = LlmBackend::from_config(&json!({"provider": "nope"}), Some(&providers), None)
            .unwrap_err();
        assert_eq!(err.path, "provider");

        let inline = LlmBackend::from_config(
            &json!({"format": "openai", "anthropic": {"v1": {"credentials": "k",
                "variables": {"model": "claude-x", "max_tokens": 200}}}}),
            None,
            Some("https://api.anthropic.com/v1/messages"),
        )
        .unwrap();
        assert_eq!(inline.provider().settings().model, "claude-x");
        assert_eq!(inline.provider().format(), ClientFormat::OpenAi);
        let err = LlmBackend::from_config(
            &json!({"mistral": {"v1": {"credentials": "k", "variables": {}}}}),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(err.path, "mistral.v1.variables.model");
        let err = LlmBackend::from_config(
            &json!({"mistral": {"v2": {"credentials": "k"}}}),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(err.path, "mistral.v2");
        let err = LlmBackend::from_config(
            &json!({"openai": {"v1": {"variables": {"model": "m"}}}}),
            None,
            None,
        )
        .unwrap_err();
        assert!(err.message.contains("credentials"), "{err}");
        let err = LlmBackend::from_config(&json!({"hal": {"v1": {}}}), None, None).unwrap_err();
        assert_eq!(err.path, "hal");
    }
}
