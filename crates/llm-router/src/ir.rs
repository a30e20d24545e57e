//! The unified intermediate representation: one shape for chat requests,
//! responses, stream events and errors, whatever the client speaks and
//! whatever vendor answers.
//!
//! Client formats parse into it and render from it; vendor adapters build
//! their upstream request from it and parse their answers into it. Nothing
//! here knows HTTP framing or a wire format.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Map, Value};

/// Who wrote a message. System prompts live in [`ChatRequest::system`];
/// tool results are [`ContentPart::ToolResult`] parts of a user message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// The end user (and tool results handed back to the model).
    User,
    /// The model.
    Assistant,
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ImageSource {
    /// An `http(s)` URL the vendor fetches.
    Url(String),
    /// Inline bytes, base64-encoded.
    Base64 {
        /// The MIME type (`image/png`).
        media_type: String,
        /// The base64 text.
        data: String,
    },
}

impl ImageSource {
    /// Reads a `data:<type>;base64,<data>` URL as inline bytes; any other
    /// URL stays a URL.
    pub fn from_url(url: &str) -> Self {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((meta, data)) = rest.split_once(',')
            && let Some(media_type) = meta.strip_suffix(";base64")
        {
            return Self::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            };
        }
        Self::Url(url.to_owned())
    }

    /// The source as a URL (`data:` for inline bytes).
    pub fn to_url(&self) -> String {
        match self {
            Self::Url(url) => url.clone(),
            Self::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// One part of a message.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ContentPart {
    /// Plain text.
    Text(String),
    /// An image.
    Image(ImageSource),
    /// A tool call the model made (assistant messages).
    ToolUse {
        /// The call id, echoed back by the tool result.
        id: String,
        /// The tool name.
        name: String,
        /// The arguments as JSON text (OpenAI sends text, Anthropic an
        /// object; text keeps both exact).
        arguments: String,
    },
    /// The result of a tool call (user messages).
    ToolResult {
        /// The id of the call this answers.
        tool_use_id: String,
        /// What the tool returned: text and images.
        content: Vec<ContentPart>,
        /// Whether the tool failed.
        is_error: bool,
    },
}

impl ContentPart {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text(text.into())
    }
}

/// A message of the conversation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What it holds, in order.
    pub content: Vec<ContentPart>,
}

impl Message {
    /// A message from `role` holding `content`.
    pub fn new(role: Role, content: Vec<ContentPart>) -> Self {
        Self { role, content }
    }

    /// A user message holding one text part.
    pub fn user(text: impl Into<String>) -> Self {
        Self::new(Role::User, vec![ContentPart::text(text)])
    }

    /// The text parts joined (no separator).
    pub fn text(&self) -> String {
        join_text(&self.content)
    }
}

/// The text parts of `parts` joined, in order.
pub fn join_text(parts: &[ContentPart]) -> String {
    let mut out = String::new();
    for part in parts {
        if let ContentPart::Text(text) = part {
            out.push_str(text);
        }
    }
    out
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Tool {
    /// The tool name.
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// The JSON Schema of its arguments.
    pub parameters: Value,
    /// OpenAI's `strict` flag, when given.
    pub strict: Option<bool>,
}

impl Tool {
    /// A tool with a name and an argument schema.
    pub fn new(name: impl Into<String>, parameters: Value) -> Self {
        Self {
            name: name.into(),
            description: None,
            parameters,
            strict: None,
        }
    }
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool call.
    None,
    /// Some tool call (OpenAI `required`, Anthropic `any`).
    Required,
    /// This tool.
    Tool(String),
}

/// The shape the answer must have.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The schema.
        schema: Value,
        /// Whether the vendor must follow it strictly.
        strict: Option<bool>,
        /// What it is for.
        description: Option<String>,
    },
}

/// A wire format spoken both by clients and by vendors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireDialect {
    /// OpenAI Chat Completions.
    OpenAiChat,
    /// Anthropic Messages.
    AnthropicMessages,
}

/// A chat request, whatever the client spoke.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The model the client named; the provider's model when `None` (or
    /// always, if the provider fixes it).
    pub model: Option<String>,
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// Whether and which tool must be called.
    pub tool_choice: Option<ToolChoice>,
    /// Whether several tool calls may come at once.
    pub parallel_tool_calls: Option<bool>,
    /// Most tokens to generate.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling.
    pub top_k: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// How many choices to generate.
    pub n: Option<u32>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// The answer's shape.
    pub response_format: Option<ResponseFormat>,
    /// Whether to return token log-probabilities.
    pub logprobs: bool,
    /// How many alternatives per token with `logprobs`.
    pub top_logprobs: Option<u32>,
    /// Whether the client wants a stream.
    pub stream: bool,
    /// Whether the client asked for usage in its stream.
    pub include_usage: bool,
    /// The end-user id.
    pub user: Option<String>,
    /// Free metadata for the vendor.
    pub metadata: Option<Map<String, Value>>,
    /// Vendor fields merged into the upstream body as they are (the
    /// provider's `variables.extra_payload`); never read from the client.
    pub extra: Map<String, Value>,
    /// Top-level fields of the client's request that the IR does not model
    /// (`reasoning_effort`, `thinking`, ...), in the client's dialect. Only
    /// an adapter whose [`native_dialect`](crate::VendorAdapter::native_dialect)
    /// is [`ChatRequest::client_dialect`] forwards them; for any other the
    /// request is refused with a 400 naming the first one.
    pub client_fields: Map<String, Value>,
    /// The dialect of [`ChatRequest::client_fields`].
    pub client_dialect: Option<WireDialect>,
}

/// Why a choice stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The vendor's content filter.
    ContentFilter,
    /// Something else, as the vendor named it.
    Other(String),
}

/// Token counts the vendor reported. `None` means not reported (yet):
/// streams report pieces (Anthropic input first, output last) that
/// [`TokenUsage::merge`] combines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenUsage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: Option<u64>,
    /// Completion tokens, reasoning ones included.
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the vendor's cache.
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the vendor's cache (Anthropic).
    pub cache_creation_tokens: Option<u64>,
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: Option<u64>,
}

impl TokenUsage {
    /// Input and output counts.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens: Some(input_tokens),
            output_tokens: Some(output_tokens),
            ..Self::default()
        }
    }

    /// Takes every count `other` reports, keeping ours where it has none.
    pub fn merge(&mut self, other: &TokenUsage) {
        fn take(mine: &mut Option<u64>, theirs: Option<u64>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        take(&mut self.input_tokens, other.input_tokens);
        take(&mut self.output_tokens, other.output_tokens);
        take(&mut self.cached_tokens, other.cached_tokens);
        take(&mut self.cache_creation_tokens, other.cache_creation_tokens);
        take(&mut self.reasoning_tokens, other.reasoning_tokens);
    }

    /// Input tokens, 0 when unknown.
    pub fn input(&self) -> u64 {
        self.input_tokens.unwrap_or(0)
    }

    /// Output tokens, 0 when unknown.
    pub fn output(&self) -> u64 {
        self.output_tokens.unwrap_or(0)
    }

    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input().saturating_add(self.output())
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The shared usage value, with where it came from.
    pub fn to_core(&self, provider: &str, model: &str) -> switchboard_core::Usage {
        self.core_with_source(Arc::from(provider), Arc::from(model))
    }

    /// [`TokenUsage::to_core`] sharing names already held (a stream
    /// records its running total on every usage event).
    pub(crate) fn core_usage(
        &self,
        provider: &Arc<str>,
        model: &Arc<str>,
    ) -> switchboard_core::Usage {
        self.core_with_source(Arc::clone(provider), Arc::clone(model))
    }

    fn core_with_source(&self, provider: Arc<str>, model: Arc<str>) -> switchboard_core::Usage {
        let mut usage =
            switchboard_core::Usage::new(self.input(), self.output()).with_source(provider, model);
        usage.cached_tokens = self.cached_tokens.unwrap_or(0);
        usage.reasoning_tokens = self.reasoning_tokens.unwrap_or(0);
        usage
    }
}

/// One generated alternative.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Choice {
    /// Its index (0 unless `n` > 1).
    pub index: u32,
    /// Text and tool-use parts, in order.
    pub content: Vec<ContentPart>,
    /// Why it stopped.
    pub finish_reason: Option<FinishReason>,
    /// Log-probabilities in OpenAI's shape, when the vendor gave them.
    pub logprobs: Option<Value>,
}

impl Choice {
    /// A choice holding `content`.
    pub fn new(index: u32, content: Vec<ContentPart>, finish_reason: Option<FinishReason>) -> Self {
        Self {
            index,
            content,
            finish_reason,
            logprobs: None,
        }
    }

    /// The text parts joined.
    pub fn text(&self) -> String {
        join_text(&self.content)
    }
}

/// A whole (non-streamed) answer.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatResponse {
    /// The vendor's response id, when it gave one.
    pub id: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// When it was created (Unix seconds), when the vendor said.
    pub created: Option<u64>,
    /// The alternatives.
    pub choices: Vec<Choice>,
    /// Token usage.
    pub usage: TokenUsage,
}

impl ChatResponse {
    /// The answer as the events a stream of it would give (to replay a
    /// whole answer to a client that asked for a stream).
    pub fn to_events(&self) -> Vec<StreamEvent> {
        let mut events = vec![StreamEvent::Start {
            id: self.id.clone(),
            model: self.model.clone(),
        }];
        for choice in &self.choices {
            let mut tool = 0;
            for part in &choice.content {
                match part {
                    ContentPart::Text(text) => events.push(StreamEvent::TextDelta {
                        choice: choice.index,
                        text: text.clone(),
                    }),
                    ContentPart::ToolUse {
                        id,
                        name,
                        arguments,
                    } => {
                        events.push(StreamEvent::ToolCallStart {
                            choice: choice.index,
                            index: tool,
                            id: id.clone(),
                            name: name.clone(),
                        });
                        events.push(StreamEvent::ToolCallDelta {
                            choice: choice.index,
                            index: tool,
                            arguments: arguments.clone(),
                        });
                        tool += 1;
                    }
                    _ => {}
                }
            }
            events.push(StreamEvent::Finish {
                choice: choice.index,
                reason: choice.finish_reason.clone().unwrap_or(FinishReason::Stop),
            });
        }
        events.push(StreamEvent::Usage(self.usage));
        events
    }
}

/// One event of a streamed answer. `choice` is the choice index (0 unless
/// `n` > 1); `index` numbers tool calls within a choice from 0.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The answer starts (first event).
    Start {
        /// The vendor's response id.
        id: Option<String>,
        /// The model that answers.
        model: Option<String>,
    },
    /// More text.
    TextDelta {
        /// The choice index.
        choice: u32,
        /// The text.
        text: String,
    },
    /// A tool call begins.
    ToolCallStart {
        /// The choice index.
        choice: u32,
        /// The tool call's index within the choice.
        index: u32,
        /// The call id.
        id: String,
        /// The tool name.
        name: String,
    },
    /// More of a tool call's JSON arguments.
    ToolCallDelta {
        /// The choice index.
        choice: u32,
        /// The tool call's index within the choice.
        index: u32,
        /// A piece of JSON text.
        arguments: String,
    },
    /// A choice ended.
    Finish {
        /// The choice index.
        choice: u32,
        /// Why.
        reason: FinishReason,
    },
    /// Token counts (running totals; merge with [`TokenUsage::merge`]).
    Usage(TokenUsage),
    /// The vendor failed mid-stream: terminal.
    Error(LlmError),
}

/// What kind of failure an error is, in the terms both client formats use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or asks for something unsupported (400).
    InvalidRequest,
    /// Bad credentials (401).
    Authentication,
    /// Not allowed (403).
    Permission,
    /// No such model or resource (404).
    NotFound,
    /// The request is too large (413).
    RequestTooLarge,
    /// Rate limited (429).
    RateLimit,
    /// The vendor failed (500 and most 5xx).
    Api,
    /// The vendor is overloaded (503, Anthropic's 529).
    Overloaded,
    /// The vendor did not answer in time (504).
    Timeout,
}

impl ErrorKind {
    /// The kind a status stands for.
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => Self::Authentication,
            403 => Self::Permission,
            404 => Self::NotFound,
            413 => Self::RequestTooLarge,
            429 => Self::RateLimit,
            503 | 529 => Self::Overloaded,
            504 => Self::Timeout,
            400..=499 => Self::InvalidRequest,
            _ => Self::Api,
        }
    }

    /// The OpenAI `error.type` for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge | Self::NotFound => {
                "invalid_request_error"
            }
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::RateLimit => "rate_limit_error",
            Self::Api | Self::Overloaded | Self::Timeout => "server_error",
        }
    }

    /// The Anthropic `error.type` for this kind.
    pub fn anthropic_type(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::Permission => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimit => "rate_limit_error",
            Self::Api => "api_error",
            Self::Overloaded => "overloaded_error",
            Self::Timeout => "timeout_error",
        }
    }
}

/// An LLM call that failed: from the vendor, or refused before it was made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {:?}: {message}", status.as_u16(), kind)]
#[non_exhaustive]
pub struct LlmError {
    /// The status the client gets.
    pub status: StatusCode,
    /// The kind.
    pub kind: ErrorKind,
    /// A human message (never a credential).
    pub message: String,
    /// A machine-readable code, when the vendor gave one.
    pub code: Option<String>,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// The vendor's `Retry-After` value, kept as it was.
    pub retry_after: Option<String>,
}

impl LlmError {
    /// An error with a status; the kind follows from it.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: ErrorKind::from_status(status),
            message: message.into(),
            code: None,
            param: None,
            retry_after: None,
        }
    }

    /// 400: the client's request is malformed.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400: the vendor cannot express `field`; never dropped silently.
    pub fn unsupported(field: &str, vendor: &str) -> Self {
        let mut err = Self::invalid_request(format!(
            "`{field}` is not supported by the {vendor} provider"
        ));
        err.param = Some(field.to_owned());
        err.code = Some("unsupported_parameter".to_owned());
        err
    }

    /// 502: the vendor answered something unusable.
    pub fn bad_upstream(message: impl Into<String>) -> Self {
        let mut err = Self::new(StatusCode::BAD_GATEWAY, message);
        err.kind = ErrorKind::Api;
        err
    }

    /// Sets the kind.
    #[must_use]
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the `Retry-After` value.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<String>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_merges_pieces() {
        let mut usage = TokenUsage {
            input_tokens: Some(10),
            ..TokenUsage::default()
        };
        usage.merge(&TokenUsage {
            output_tokens: Some(3),
            ..TokenUsage::default()
        });
        assert_eq!(usage, TokenUsage::new(10, 3));
        assert_eq!(usage.total(), 13);
        let core = usage.to_core("fast", "gpt");
        assert_eq!(core.total_tokens(), 13);
        assert_eq!(core.model.as_deref(), Some("gpt"));
    }

    #[test]
    fn data_urls_become_inline_images() {
        let image = ImageSource::from_url("data:image/png;base64,AAAA");
        assert_eq!(
            image,
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        assert_eq!(image.to_url(), "data:image/png;base64,AAAA");
        assert_eq!(
            ImageSource::from_url("https://x/y.png"),
            ImageSource::Url("https://x/y.png".into())
        );
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(
            ErrorKind::from_status(StatusCode::TOO_MANY_REQUESTS),
            ErrorKind::RateLimit
        );
        assert_eq!(
            ErrorKind::from_status(StatusCode::from_u16(529).unwrap()).anthropic_type(),
            "overloaded_error"
        );
        let err = LlmError::unsupported("seed", "anthropic");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.param.as_deref(), Some("seed"));
    }
}
