//! The vendor adapter trait: everything that differs between vendors, behind
//! one object-safe interface, with no tower types and no I/O.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use switchboard_core::ConfigError;

use crate::ir::{ChatRequest, ChatResponse, LlmError, StreamEvent};

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a key.
    pub fn new(key: impl Into<Arc<str>>) -> Self {
        Self(key.into())
    }

    /// The key itself, to put in an upstream request and nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What an adapter knows about the provider it serves, resolved at load.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProviderSettings {
    /// The inventory name (`fast-chat`), or the vendor for inline configs.
    pub name: Arc<str>,
    /// The full upstream URL (the vendor default when the config gave none).
    pub endpoint: String,
    /// Whether the config set `endpoint` itself (adapters that derive the
    /// URL from the model leave a configured one alone).
    pub endpoint_configured: bool,
    /// The model (the vendor default when the config gave none).
    pub model: String,
    /// Whether the config set `model` itself; when not, a model the client
    /// names is used instead of the default.
    pub model_configured: bool,
    /// The API key.
    pub credentials: Secret,
    /// The vendor `variables`, type-checked at load.
    pub variables: Map<String, Value>,
    /// The provider's `streaming` flag.
    pub streaming: bool,
}

impl ProviderSettings {
    /// Settings with a name, endpoint, model and key; no variables.
    pub fn new(
        name: impl Into<Arc<str>>,
        endpoint: impl Into<String>,
        model: impl Into<String>,
        credentials: Secret,
    ) -> Self {
        Self {
            name: name.into(),
            endpoint: endpoint.into(),
            endpoint_configured: true,
            model: model.into(),
            model_configured: true,
            credentials,
            variables: Map::new(),
            streaming: false,
        }
    }

    /// Sets the variables.
    #[must_use]
    pub fn with_variables(mut self, variables: Map<String, Value>) -> Self {
        self.variables = variables;
        self
    }

    /// The model a request gets: the configured one, else the client's,
    /// else the vendor default.
    pub fn model_for<'a>(&'a self, request: &'a ChatRequest) -> &'a str {
        match &request.model {
            Some(model) if !self.model_configured && !model.is_empty() => model,
            _ => &self.model,
        }
    }

    /// A variable, when set.
    pub fn variable(&self, name: &str) -> Option<&Value> {
        self.variables.get(name)
    }
}

/// The request an adapter wants sent upstream. The layer sends it through
/// the inner service unchanged (method POST unless set otherwise).
pub type UpstreamRequest = http::Request<Bytes>;

/// Turns a vendor's stream, chunk by chunk, into [`StreamEvent`]s.
///
/// Chunks split anywhere (inside an SSE line, a UTF-8 sequence or a binary
/// frame): the decoder carries what is incomplete over to the next call,
/// bounded, so that any split gives the same events as the whole stream.
pub trait StreamDecoder: Send {
    /// Feeds one chunk; appends the events it completes. A malformed or
    /// failed stream appends a terminal [`StreamEvent::Error`].
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>);

    /// The stream ended: appends what is left. A stream that ends before the
    /// vendor's own end marker appends a [`StreamEvent::Error`], so that a
    /// cut connection never looks like a normal finish.
    fn finish(&mut self, out: &mut Vec<StreamEvent>);
}

/// Request features a vendor may be unable to express. An adapter lists the
/// ones it lacks; a request using one is refused with a 400 naming the
/// field instead of losing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feature {
    /// `n` > 1.
    MultipleChoices,
    /// `seed`.
    Seed,
    /// `logprobs` / `top_logprobs`.
    Logprobs,
    /// `top_k`.
    TopK,
    /// `response_format` JSON object mode.
    JsonMode,
    /// `response_format` JSON schema.
    JsonSchema,
    /// Image parts.
    Images,
    /// Tools and tool choice.
    Tools,
    /// `presence_penalty` / `frequency_penalty`.
    Penalties,
    /// `parallel_tool_calls`.
    ParallelToolCalls,
    /// `metadata`.
    Metadata,
    /// `user`.
    User,
}

impl Feature {
    /// The client-facing field the feature is, for the 400.
    pub fn field(self) -> &'static str {
        match self {
            Self::MultipleChoices => "n",
            Self::Seed => "seed",
            Self::Logprobs => "logprobs",
            Self::TopK => "top_k",
            Self::JsonMode | Self::JsonSchema => "response_format",
            Self::Images => "image content",
            Self::Tools => "tools",
            Self::Penalties => "presence_penalty/frequency_penalty",
            Self::ParallelToolCalls => "parallel_tool_calls",
            Self::Metadata => "metadata",
            Self::User => "user",
        }
    }

    /// Whether `request` uses the feature.
    pub fn used_by(self, request: &ChatRequest) -> bool {
        use crate::ir::{ContentPart, ResponseFormat};
        match self {
            Self::MultipleChoices => request.n.is_some_and(|n| n > 1),
            Self::Seed => request.seed.is_some(),
            Self::Logprobs => request.logprobs || request.top_logprobs.is_some(),
            Self::TopK => request.top_k.is_some(),
            Self::JsonMode => matches!(request.response_format, Some(ResponseFormat::JsonObject)),
            Self::JsonSchema => matches!(
                request.response_format,
                Some(ResponseFormat::JsonSchema { .. })
            ),
            Self::Images => request.messages.iter().any(|m| {
                m.content.iter().any(|p| match p {
                    ContentPart::Image(_) => true,
                    ContentPart::ToolResult { content, .. } => {
                        content.iter().any(|c| matches!(c, ContentPart::Image(_)))
                    }
                    _ => false,
                })
            }),
            Self::Tools => !request.tools.is_empty() || request.tool_choice.is_some(),
            Self::Penalties => {
                request.presence_penalty.is_some() || request.frequency_penalty.is_some()
            }
            Self::ParallelToolCalls => request.parallel_tool_calls.is_some(),
            Self::Metadata => request.metadata.is_some(),
            Self::User => request.user.is_some(),
        }
    }
}

/// Refuses a request that uses one of `unsupported`, naming the field.
pub fn check_features(
    request: &ChatRequest,
    unsupported: &[Feature],
    vendor: &str,
) -> Result<(), LlmError> {
    match unsupported.iter().find(|f| f.used_by(request)) {
        Some(feature) => Err(LlmError::unsupported(feature.field(), vendor)),
        None => Ok(()),
    }
}

/// One vendor's API: how to call it and how to read what it answers.
///
/// Implementations are pure translation (no I/O): the [`crate::RouteLlm`]
/// service sends what [`build_request`](Self::build_request) returns through
/// its inner HTTP service and feeds the answer back to the adapter. One
/// module per vendor under `src/vendors/`; a vendor from outside the
/// workspace implements this trait and passes it to
/// [`crate::Provider::with_adapter`].
///
/// ```
/// use switchboard_llm_router::{ChatRequest, Message, ProviderSettings, Secret, vendors};
///
/// let adapter = vendors::adapter("anthropic").unwrap();
/// let settings = ProviderSettings::new(
///     "claude",
///     "https://api.anthropic.com/v1/messages",
///     "claude-haiku-4-5",
///     Secret::new("sk-ant-test"),
/// );
/// let mut chat = ChatRequest::default();
/// chat.messages.push(Message::user("Hello"));
/// let request = adapter.build_request(&chat, &settings).unwrap();
/// assert_eq!(request.headers()["x-api-key"], "sk-ant-test");
/// assert_eq!(request.uri(), "https://api.anthropic.com/v1/messages");
/// ```
pub trait VendorAdapter: Send + Sync + 'static {
    /// The `provider` value that selects this adapter (`openai`).
    fn vendor(&self) -> &'static str;

    /// The endpoint when the config names none. `model` and `streaming` are
    /// the provider's (Gemini and Bedrock put the model in the URL).
    fn default_endpoint(&self, model: &str, streaming: bool) -> String;

    /// The model when the config names none.
    fn default_model(&self) -> &'static str;

    /// Type-checks the provider's `variables` at load. Errors carry a path
    /// relative to the variables object (`temperature`).
    fn check_variables(&self, variables: &Map<String, Value>) -> Result<(), ConfigError> {
        crate::config::check_common_variables(variables)
    }

    /// Whether the config must name a model (no usable default).
    fn requires_model(&self) -> bool {
        false
    }

    /// Refuses, with a 400 naming the field, a request the vendor cannot
    /// express. Called before [`build_request`](Self::build_request).
    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError>;

    /// The upstream request for `request`: URL, headers (credentials as the
    /// vendor expects them), body. When `request.stream` is set it asks the
    /// vendor for a stream, with usage included where the vendor must be
    /// asked for it.
    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError>;

    /// Reads a successful non-streamed answer.
    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError>;

    /// Reads a failed answer (status >= 400) into an error; keeps
    /// `Retry-After`.
    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError;

    /// A fresh decoder for one streamed answer.
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
}

/// The `Retry-After` header value, when present and printable.
pub fn retry_after(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error for a failed answer whose body says `message` (or nothing
/// useful), with the status kept and `Retry-After` carried.
pub fn upstream_error(
    status: StatusCode,
    headers: &HeaderMap,
    message: Option<String>,
) -> LlmError {
    let message = message.unwrap_or_else(|| {
        format!(
            "the provider answered {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned()
    });
    // A vendor's own status outside the error range would mislead clients.
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_GATEWAY
    };
    LlmError::new(status, message).with_retry_after(retry_after(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-live-123");
        assert_eq!(format!("{secret:?} {secret}"), "Secret(***) ***");
        let settings = ProviderSettings::new("p", "https://x", "m", secret);
        assert!(!format!("{settings:?}").contains("sk-live"));
    }

    #[test]
    fn unsupported_features_name_the_field() {
        let mut request = ChatRequest {
            seed: Some(1),
            ..ChatRequest::default()
        };
        let err = check_features(&request, &[Feature::TopK, Feature::Seed], "x").unwrap_err();
        assert_eq!(err.param.as_deref(), Some("seed"));
        request.seed = None;
        assert!(check_features(&request, &[Feature::TopK, Feature::Seed], "x").is_ok());
    }

    #[test]
    fn model_resolution() {
        let mut settings =
            ProviderSettings::new("p", "https://x", "default-model", Secret::default());
        let request = ChatRequest {
            model: Some("client-model".into()),
            ..ChatRequest::default()
        };
        assert_eq!(settings.model_for(&request), "default-model");
        settings.model_configured = false;
        assert_eq!(settings.model_for(&request), "client-model");
    }
}
