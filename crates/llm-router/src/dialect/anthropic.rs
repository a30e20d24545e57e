//! The Anthropic Messages wire format, both ways: read a client's request
//! and write the answer back (client format), write a vendor request and
//! read the vendor's answer (the Anthropic adapter).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_core::sse::{Event, SseDecoder};

use super::openai_chat::{MAX_EVENT, kind_from_type, parse_json, write_json_str, write_json_u64};
use super::{Obj, Str};
use crate::adapter::StreamDecoder;
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    Message, Role, StreamEvent, TokenUsage, Tool, ToolChoice, WireDialect,
};

/// The `max_tokens` Anthropic requires when neither the client nor the
/// provider's variables give one (KrakenD's default).
pub(crate) const DEFAULT_MAX_TOKENS: u64 = 1024;

// ---------------------------------------------------------------- client in

#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    max_tokens: Option<u64>,
    system: Option<WireSystem>,
    messages: Vec<WireMessage>,
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<WireToolChoice>,
    stop_sequences: Option<Vec<String>>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u64>,
    stream: Option<bool>,
    metadata: Option<WireMetadata>,
    /// Everything else (`thinking`, `service_tier`, ...), forwarded to the
    /// Anthropic vendor only.
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireSystem {
    Text(String),
    Blocks(Vec<WireTextBlock>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTextBlock {
    #[allow(dead_code)]
    #[serde(rename = "type")]
    kind: String,
    text: String,
    // A caching hint: only cost changes without it.
    #[allow(dead_code)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMetadata {
    user_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    role: String,
    content: WireContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<WireBlock>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireBlock {
    Text {
        text: String,
        #[allow(dead_code)]
        cache_control: Option<Value>,
        #[allow(dead_code)]
        citations: Option<Value>,
    },
    Image {
        source: WireImageSource,
        #[allow(dead_code)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[allow(dead_code)]
        cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        content: Option<WireToolResultContent>,
        is_error: Option<bool>,
        #[allow(dead_code)]
        cache_control: Option<Value>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireToolResultContent {
    Text(String),
    Blocks(Vec<WireBlock>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTool {
    name: String,
    description: Option<String>,
    input_schema: Value,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[allow(dead_code)]
    cache_control: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

fn bad(message: impl Into<String>) -> LlmError {
    LlmError::invalid_request(message)
}

/// Reads a client's Messages request.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    let wire: WireRequest = parse_json(body)?;
    let mut request = ChatRequest {
        model: wire.model,
        max_tokens: wire.max_tokens,
        temperature: wire.temperature,
        top_p: wire.top_p,
        top_k: wire.top_k,
        stop: wire.stop_sequences.unwrap_or_default(),
        stream: wire.stream.unwrap_or(false),
        // Anthropic streams always carry usage.
        include_usage: true,
        user: wire.metadata.and_then(|m| m.user_id),
        client_dialect: Some(WireDialect::AnthropicMessages),
        client_fields: wire.other,
        ..ChatRequest::default()
    };
    request.system = match wire.system {
        None => None,
        Some(WireSystem::Text(text)) => Some(text),
        Some(WireSystem::Blocks(blocks)) => Some(
            blocks
                .into_iter()
                .map(|b| b.text)
                .collect::<Vec<_>>()
                .join("\n\n"),
        ),
    };
    for tool in wire.tools.unwrap_or_default() {
        if let Some(kind) = tool.kind.as_deref()
            && kind != "custom"
        {
            return Err(LlmError::unsupported(
                &format!("tools[].type {kind:?}"),
                "gateway",
            ));
        }
        request.tools.push(Tool {
            name: tool.name,
            description: tool.description,
            parameters: tool.input_schema,
            strict: None,
        });
    }
    if let Some(choice) = wire.tool_choice {
        request.tool_choice = Some(match choice.kind.as_str() {
            "auto" => ToolChoice::Auto,
            "any" => ToolChoice::Required,
            "none" => ToolChoice::None,
            "tool" => ToolChoice::Tool(
                choice
                    .name
                    .ok_or_else(|| bad("tool_choice.name is required with type \"tool\""))?,
            ),
            other => return Err(bad(format!("tool_choice.type {other:?} is not supported"))),
        });
        if choice.disable_parallel_tool_use == Some(true) {
            request.parallel_tool_calls = Some(false);
        }
    }
    for (i, message) in wire.messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(bad(format!(
                    "messages[{i}].role {other:?} is not supported"
                )));
            }
        };
        let content = match message.content {
            WireContent::Text(text) => vec![ContentPart::Text(text)],
            WireContent::Blocks(blocks) => blocks.into_iter().map(block_part).collect(),
        };
        request.messages.push(Message::new(role, content));
    }
    Ok(request)
}

fn block_part(block: WireBlock) -> ContentPart {
    match block {
        WireBlock::Text { text, .. } => ContentPart::Text(text),
        WireBlock::Image { source, .. } => ContentPart::Image(match source {
            WireImageSource::Base64 { media_type, data } => {
                ImageSource::Base64 { media_type, data }
            }
            WireImageSource::Url { url } => ImageSource::Url(url),
        }),
        WireBlock::ToolUse {
            id, name, input, ..
        } => ContentPart::ToolUse {
            id,
            name,
            arguments: input.to_string(),
        },
        WireBlock::ToolResult {
            tool_use_id,
            content,
            is_error,
            ..
        } => ContentPart::ToolResult {
            tool_use_id,
            content: match content {
                None => Vec::new(),
                Some(WireToolResultContent::Text(text)) => vec![ContentPart::Text(text)],
                Some(WireToolResultContent::Blocks(blocks)) => {
                    blocks.into_iter().map(block_part).collect()
                }
            },
            is_error: is_error.unwrap_or(false),
        },
    }
}

// --------------------------------------------------------------- vendor out

fn image_block(source: &ImageSource) -> Value {
    match source {
        ImageSource::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
        ImageSource::Base64 { media_type, data } => json!({"type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data}}),
    }
}

fn arguments_value(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| json!({}))
}

fn render_block(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text(text) => json!({"type": "text", "text": text}),
        ContentPart::Image(source) => image_block(source),
        ContentPart::ToolUse {
            id,
            name,
            arguments,
        } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": arguments_value(arguments)})
        }
        ContentPart::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let mut block = json!({
                "type": "tool_result",
                "tool_use_id": tool_use_id,
                "content": content.iter().map(render_block).collect::<Vec<_>>(),
            });
            if *is_error {
                block["is_error"] = true.into();
            }
            block
        }
    }
}

/// Writes the vendor body for `request`.
pub(crate) fn render_request(
    request: &ChatRequest,
    model: &str,
    default_max_tokens: u64,
) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    body.insert(
        "max_tokens".into(),
        request.max_tokens.unwrap_or(default_max_tokens).into(),
    );
    if let Some(system) = &request.system {
        body.insert("system".into(), system.clone().into());
    }
    let messages: Vec<Value> = request
        .messages
        .iter()
        // Anthropic refuses empty content; an empty turn says nothing.
        .filter(|m| !m.content.is_empty())
        .map(|message| {
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content: Vec<Value> = message
                .content
                .iter()
                .filter(|p| !matches!(p, ContentPart::Text(t) if t.is_empty()))
                .map(render_block)
                .collect();
            json!({"role": role, "content": content})
        })
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                let mut value = Map::new();
                value.insert("name".into(), tool.name.clone().into());
                if let Some(description) = &tool.description {
                    value.insert("description".into(), description.clone().into());
                }
                value.insert("input_schema".into(), tool.parameters.clone());
                Value::Object(value)
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let parallel_off = request.parallel_tool_calls == Some(false);
    if request.tool_choice.is_some() || (parallel_off && !request.tools.is_empty()) {
        let mut choice = match request.tool_choice.as_ref().unwrap_or(&ToolChoice::Auto) {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        if parallel_off && !matches!(request.tool_choice, Some(ToolChoice::None)) {
            choice["disable_parallel_tool_use"] = true.into();
        }
        body.insert("tool_choice".into(), choice);
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), t.into());
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), p.into());
    }
    if let Some(k) = request.top_k {
        body.insert("top_k".into(), k.into());
    }
    if request.stream {
        body.insert("stream".into(), true.into());
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if request.client_dialect == Some(WireDialect::AnthropicMessages) {
        for (key, value) in &request.client_fields {
            body.insert(key.clone(), value.clone());
        }
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    body
}

// ---------------------------------------------------------------- vendor in

pub(crate) fn stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn stop_reason_str(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Other(other) => match other.as_str() {
            "pause_turn" | "stop_sequence" => other,
            _ => "end_turn",
        },
    }
}

/// Anthropic counts cache reads and writes apart from `input_tokens`; the
/// IR's input includes them.
pub(crate) fn parse_usage(value: &Value) -> TokenUsage {
    let get = |key: &str| value.get(key).and_then(Value::as_u64);
    usage_of(
        get("input_tokens"),
        get("cache_read_input_tokens"),
        get("cache_creation_input_tokens"),
        get("output_tokens"),
    )
}

fn usage_of(
    input: Option<u64>,
    cache_read: Option<u64>,
    cache_write: Option<u64>,
    output: Option<u64>,
) -> TokenUsage {
    let input_total = input.map(|i| {
        i.saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_write.unwrap_or(0))
    });
    TokenUsage {
        input_tokens: input_total,
        output_tokens: output,
        cached_tokens: cache_read,
        cache_creation_tokens: cache_write,
        reasoning_tokens: None,
    }
}

/// Reads a vendor's Messages answer.
pub(crate) fn parse_response(body: &[u8]) -> Result<ChatResponse, LlmError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        LlmError::bad_upstream(format!("the provider answered invalid JSON: {err}"))
    })?;
    let Some(blocks) = value.get("content").and_then(Value::as_array) else {
        return Err(LlmError::bad_upstream(
            "the provider's answer has no content",
        ));
    };
    let mut content = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => content.push(ContentPart::Text(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )),
            Some("tool_use") => content.push(ContentPart::ToolUse {
                id: str_field(block, "id"),
                name: str_field(block, "name"),
                arguments: block
                    .get("input")
                    .map_or_else(|| "{}".to_owned(), Value::to_string),
            }),
            // Thinking blocks are the model's scratchpad, not its answer.
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: value.get("id").and_then(Value::as_str).map(str::to_owned),
        model: value
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        created: None,
        choices: vec![Choice::new(
            0,
            content,
            value
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(stop_reason),
        )],
        usage: value.get("usage").map(parse_usage).unwrap_or_default(),
    })
}

fn str_field(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Reads `{"type": "error", "error": {"type", "message"}}`.
pub(crate) fn parse_error_body(err: &mut LlmError, body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let inner = value.get("error").unwrap_or(&value);
    if let Some(message) = inner.get("message").and_then(Value::as_str) {
        err.message = message.to_owned();
    }
    if let Some(kind) = inner.get("type").and_then(Value::as_str) {
        if let Some(mapped) = kind_from_type(kind) {
            err.kind = mapped;
        }
        err.code = Some(kind.to_owned());
    }
}

/// One Messages stream event, typed: only what the decoder reads.
#[derive(Deserialize)]
struct WireStreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    index: Option<u64>,
    message: Option<Obj<WireStreamMessage>>,
    #[serde(borrow)]
    content_block: Option<Obj<WireStreamBlock<'a>>>,
    #[serde(borrow)]
    delta: Option<Obj<WireStreamDelta<'a>>>,
    #[serde(default, deserialize_with = "present_usage")]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireStreamMessage {
    id: Option<String>,
    model: Option<String>,
    #[serde(default, deserialize_with = "present_usage")]
    usage: Option<WireUsage>,
}

#[derive(Default, Deserialize)]
struct WireStreamBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Value>,
}

#[derive(Default, Deserialize)]
struct WireStreamDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    text: Option<String>,
    partial_json: Option<String>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
}

/// Anthropic's usage counts, as [`parse_usage`] reads them.
#[derive(Default, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    fn to_usage(&self) -> TokenUsage {
        usage_of(
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.output_tokens,
        )
    }
}

/// A `usage` key that is present counts even when it is `null` (nothing
/// reported), as the `Value` reading has it.
fn present_usage<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<WireUsage>, D::Error> {
    Ok(Some(
        Option::<Obj<WireUsage>>::deserialize(deserializer)?
            .map(|Obj(usage)| usage)
            .unwrap_or_default(),
    ))
}

#[derive(Clone, Copy)]
enum Block {
    Text,
    Tool(u32),
    Other,
}

/// Decodes a Messages SSE stream.
pub(crate) struct MessageDecoder {
    sse: SseDecoder,
    blocks: BTreeMap<u64, Block>,
    tools: u32,
    done: bool,
    failed: bool,
}

impl MessageDecoder {
    pub(crate) fn new() -> Self {
        Self {
            sse: SseDecoder::new(MAX_EVENT),
            blocks: BTreeMap::new(),
            tools: 0,
            done: false,
            failed: false,
        }
    }

    fn fail(&mut self, err: LlmError, out: &mut Vec<StreamEvent>) {
        if !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(err));
        }
    }

    fn event(&mut self, event: Event, out: &mut Vec<StreamEvent>) {
        let Some(data) = event.data else { return };
        // The typed reading covers every well-formed event; anything it
        // refuses (a field of an unexpected type, duplicate keys, invalid
        // JSON) takes the lenient `Value` reading, which decides.
        if let Ok(Obj(wire)) = serde_json::from_str::<Obj<WireStreamEvent<'_>>>(&data) {
            return self.typed_event(wire, event.event.as_deref(), &data, out);
        }
        self.value_event(event.event.as_deref(), &data, out);
    }

    fn typed_event(
        &mut self,
        wire: WireStreamEvent<'_>,
        name: Option<&str>,
        data: &str,
        out: &mut Vec<StreamEvent>,
    ) {
        let kind = wire
            .kind
            .as_ref()
            .map(Str::as_str)
            .or(name)
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let (id, model, usage) = match wire.message {
                    Some(Obj(message)) => (message.id, message.model, message.usage),
                    None => (None, None, None),
                };
                out.push(StreamEvent::Start { id, model });
                if let Some(usage) = usage {
                    out.push(StreamEvent::Usage(usage.to_usage()));
                }
            }
            "content_block_start" => {
                let index = wire.index.unwrap_or(0);
                let block = wire.content_block.map(|Obj(b)| b).unwrap_or_default();
                match block.kind.as_ref().map(Str::as_str) {
                    Some("text") => {
                        self.blocks.insert(index, Block::Text);
                        if let Some(text) = block.text
                            && !text.is_empty()
                        {
                            out.push(StreamEvent::TextDelta { choice: 0, text });
                        }
                    }
                    Some("tool_use") => {
                        let tool = self.tools;
                        self.tools += 1;
                        self.blocks.insert(index, Block::Tool(tool));
                        out.push(StreamEvent::ToolCallStart {
                            choice: 0,
                            index: tool,
                            id: block.id.unwrap_or_default(),
                            name: block.name.unwrap_or_default(),
                        });
                        // A non-empty `input` here is the whole argument set.
                        if let Some(input) = block.input
                            && input.as_object().is_some_and(|m| !m.is_empty())
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: tool,
                                arguments: input.to_string(),
                            });
                        }
                    }
                    _ => {
                        self.blocks.insert(index, Block::Other);
                    }
                }
            }
            "content_block_delta" => {
                let index = wire.index.unwrap_or(0);
                let delta = wire.delta.map(|Obj(d)| d).unwrap_or_default();
                match (
                    self.blocks.get(&index).copied(),
                    delta.kind.as_ref().map(Str::as_str),
                ) {
                    (Some(Block::Text) | None, Some("text_delta")) => {
                        out.push(StreamEvent::TextDelta {
                            choice: 0,
                            text: delta.text.unwrap_or_default(),
                        })
                    }
                    (Some(Block::Tool(tool)), Some("input_json_delta")) => {
                        let arguments = delta.partial_json.unwrap_or_default();
                        if !arguments.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: tool,
                                arguments,
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = wire.usage {
                    out.push(StreamEvent::Usage(usage.to_usage()));
                }
                if let Some(reason) = wire.delta.and_then(|Obj(d)| d.stop_reason) {
                    out.push(StreamEvent::Finish {
                        choice: 0,
                        reason: stop_reason(reason.as_str()),
                    });
                }
            }
            "message_stop" => self.done = true,
            "error" => self.stream_error(data, out),
            // ping, content_block_stop and future event types.
            _ => {}
        }
    }

    fn stream_error(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let mut err = LlmError::bad_upstream("the provider failed mid-stream");
        parse_error_body(&mut err, data.as_bytes());
        if err.kind == ErrorKind::Overloaded {
            err.status = http::StatusCode::from_u16(529).unwrap_or(err.status);
        }
        self.fail(err, out);
    }

    fn value_event(&mut self, name: Option<&str>, data: &str, out: &mut Vec<StreamEvent>) {
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(err) => {
                return self.fail(
                    LlmError::bad_upstream(format!("the provider streamed invalid JSON: {err}")),
                    out,
                );
            }
        };
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .or(name)
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                out.push(StreamEvent::Start {
                    id: message.get("id").and_then(Value::as_str).map(str::to_owned),
                    model: message
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
                if let Some(usage) = message.get("usage") {
                    out.push(StreamEvent::Usage(parse_usage(usage)));
                }
            }
            "content_block_start" => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = value.get("content_block").cloned().unwrap_or(Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        self.blocks.insert(index, Block::Text);
                        if let Some(text) = block.get("text").and_then(Value::as_str)
                            && !text.is_empty()
                        {
                            out.push(StreamEvent::TextDelta {
                                choice: 0,
                                text: text.to_owned(),
                            });
                        }
                    }
                    Some("tool_use") => {
                        let tool = self.tools;
                        self.tools += 1;
                        self.blocks.insert(index, Block::Tool(tool));
                        out.push(StreamEvent::ToolCallStart {
                            choice: 0,
                            index: tool,
                            id: str_field(&block, "id"),
                            name: str_field(&block, "name"),
                        });
                        // A non-empty `input` here is the whole argument set.
                        if let Some(input) = block.get("input")
                            && input.as_object().is_some_and(|m| !m.is_empty())
                        {
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: tool,
                                arguments: input.to_string(),
                            });
                        }
                    }
                    _ => {
                        self.blocks.insert(index, Block::Other);
                    }
                }
            }
            "content_block_delta" => {
                let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = value.get("delta").cloned().unwrap_or(Value::Null);
                match (
                    self.blocks.get(&index).copied(),
                    delta.get("type").and_then(Value::as_str),
                ) {
                    (Some(Block::Text) | None, Some("text_delta")) => {
                        out.push(StreamEvent::TextDelta {
                            choice: 0,
                            text: str_field(&delta, "text"),
                        })
                    }
                    (Some(Block::Tool(tool)), Some("input_json_delta")) => {
                        let arguments = str_field(&delta, "partial_json");
                        if !arguments.is_empty() {
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: tool,
                                arguments,
                            });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = value.get("usage") {
                    out.push(StreamEvent::Usage(parse_usage(usage)));
                }
                if let Some(reason) = value
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(StreamEvent::Finish {
                        choice: 0,
                        reason: stop_reason(reason),
                    });
                }
            }
            "message_stop" => self.done = true,
            "error" => self.stream_error(data, out),
            // ping, content_block_stop and future event types.
            _ => {}
        }
    }
}

impl StreamDecoder for MessageDecoder {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.failed || self.done {
            return;
        }
        match self.sse.decode(chunk) {
            Ok(events) => {
                for event in events {
                    if self.failed || self.done {
                        break;
                    }
                    self.event(event, out);
                }
            }
            Err(err) => self.fail(LlmError::bad_upstream(err.to_string()), out),
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.failed || self.done {
            return;
        }
        match self.sse.finish() {
            Ok(Some(event)) => self.event(event, out),
            Ok(None) => {}
            Err(err) => return self.fail(LlmError::bad_upstream(err.to_string()), out),
        }
        if !self.done {
            self.fail(
                LlmError::bad_upstream("the provider's stream ended before the answer did"),
                out,
            );
        }
    }
}

// --------------------------------------------------------------- client out

/// The usage object of a client answer (input without cache, as Anthropic
/// counts it).
pub(crate) fn render_usage(usage: &TokenUsage) -> Value {
    let cache_read = usage.cached_tokens.unwrap_or(0);
    let cache_write = usage.cache_creation_tokens.unwrap_or(0);
    json!({
        "input_tokens": usage.input().saturating_sub(cache_read).saturating_sub(cache_write),
        "output_tokens": usage.output(),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    })
}

fn response_blocks(choice: Option<&Choice>) -> Vec<Value> {
    let Some(choice) = choice else {
        return Vec::new();
    };
    choice
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text(text) => Some(json!({"type": "text", "text": text})),
            ContentPart::ToolUse { .. } => Some(render_block(part)),
            _ => None,
        })
        .collect()
}

/// Writes the client's Messages answer (first choice).
pub(crate) fn render_response(response: &ChatResponse, id: &str, model: &str) -> Value {
    let first = response.choices.first();
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": response_blocks(first),
        "stop_reason": stop_reason_str(first.and_then(|c| c.finish_reason.as_ref()).unwrap_or(&FinishReason::Stop)),
        "stop_sequence": Value::Null,
        "usage": render_usage(&response.usage),
    })
}

/// The id a client sees for a vendor's response id.
pub(crate) fn client_id(vendor: &str) -> String {
    if vendor.starts_with("msg_") {
        vendor.to_owned()
    } else {
        format!("msg_{vendor}")
    }
}

/// The client's Anthropic error body.
pub(crate) fn render_error(err: &LlmError) -> Value {
    json!({
        "type": "error",
        "error": {"type": err.kind.anthropic_type(), "message": err.message},
    })
}

/// Writes IR stream events as the Messages event sequence:
/// `message_start`, per block `content_block_start` / `content_block_delta`
/// / `content_block_stop`, then `message_delta` and `message_stop`.
pub(crate) struct MessageEncoder {
    id: String,
    model: String,
    usage: TokenUsage,
    started: bool,
    pending_start: bool,
    open: Option<(u32, Block)>,
    next_block: u32,
    tool_blocks: BTreeMap<u32, u32>,
    stop: Option<FinishReason>,
    failed: bool,
}

impl MessageEncoder {
    pub(crate) fn new(id: String, model: String) -> Self {
        Self {
            id,
            model,
            usage: TokenUsage::default(),
            started: false,
            pending_start: false,
            open: None,
            next_block: 0,
            tool_blocks: BTreeMap::new(),
            stop: None,
            failed: false,
        }
    }

    fn write(event: &str, value: &Value, out: &mut Vec<u8>) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
        super::openai_chat::write_data(value, out);
    }

    /// `message_start` waits for the usage that arrives with the vendor's
    /// own start, so that input tokens are in it when the vendor tells them.
    fn flush_start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.pending_start = false;
        let mut usage = render_usage(&self.usage);
        usage["output_tokens"] = 0.into();
        let message = json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": Value::Null,
            "stop_sequence": Value::Null,
            "usage": usage,
        });
        Self::write(
            "message_start",
            &json!({"type": "message_start", "message": message}),
            out,
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            out.extend_from_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            write_json_u64(out, index.into());
            out.extend_from_slice(b"}\n\n");
        }
    }

    /// Opens a block: text when `tool` is `None`, else a tool use with its
    /// id and name.
    fn open_block(&mut self, block: Block, tool: Option<(&str, &str)>, out: &mut Vec<u8>) -> u32 {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, block));
        out.extend_from_slice(
            b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":",
        );
        write_json_u64(out, index.into());
        match tool {
            None => {
                out.extend_from_slice(b",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")
            }
            Some((id, name)) => {
                out.extend_from_slice(b",\"content_block\":{\"type\":\"tool_use\",\"id\":");
                write_json_str(out, id);
                out.extend_from_slice(b",\"name\":");
                write_json_str(out, name);
                out.extend_from_slice(b",\"input\":{}}}\n\n");
            }
        }
        index
    }

    /// A `content_block_delta` of `kind` (`text_delta`) whose `field`
    /// (`text`) holds `value`.
    fn write_delta(index: u32, kind: &str, field: &str, value: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_json_u64(out, index.into());
        out.extend_from_slice(b",\"delta\":{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        write_json_str(out, value);
        out.extend_from_slice(b"}}\n\n");
    }

    pub(crate) fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        match event {
            StreamEvent::Start { model, id } => {
                if let Some(id) = id
                    && !id.is_empty()
                    && !self.started
                {
                    self.id = client_id(id);
                }
                if let Some(model) = model
                    && !model.is_empty()
                {
                    self.model = model.clone();
                }
                self.pending_start = true;
                return;
            }
            StreamEvent::Usage(usage) => {
                self.usage.merge(usage);
                return;
            }
            _ => {}
        }
        if !matches!(event, StreamEvent::Error(_)) {
            self.flush_start(out);
        }
        match event {
            // Only the first choice has a place in a Messages answer.
            StreamEvent::TextDelta { choice, .. }
            | StreamEvent::ToolCallStart { choice, .. }
            | StreamEvent::ToolCallDelta { choice, .. }
            | StreamEvent::Finish { choice, .. }
                if *choice != 0 => {}
            StreamEvent::TextDelta { text, .. } => {
                let index = match self.open {
                    Some((index, Block::Text)) => index,
                    _ => self.open_block(Block::Text, None, out),
                };
                Self::write_delta(index, "text_delta", "text", text, out);
            }
            StreamEvent::ToolCallStart {
                index, id, name, ..
            } => {
                let block =
                    self.open_block(Block::Tool(*index), Some((id.as_str(), name.as_str())), out);
                self.tool_blocks.insert(*index, block);
            }
            StreamEvent::ToolCallDelta {
                index, arguments, ..
            } => {
                let block = match self.tool_blocks.get(index) {
                    Some(block) => *block,
                    None => {
                        let block = self.open_block(Block::Tool(*index), Some(("", "")), out);
                        self.tool_blocks.insert(*index, block);
                        block
                    }
                };
                Self::write_delta(block, "input_json_delta", "partial_json", arguments, out);
            }
            StreamEvent::Finish { reason, .. } => self.stop = Some(reason.clone()),
            StreamEvent::Error(err) => {
                self.failed = true;
                Self::write("error", &render_error(err), out);
            }
            StreamEvent::Start { .. } | StreamEvent::Usage(_) => {}
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        self.flush_start(out);
        self.close_block(out);
        let stop = self.stop.clone().unwrap_or(FinishReason::Stop);
        Self::write(
            "message_delta",
            &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason_str(&stop), "stop_sequence": Value::Null},
                "usage": render_usage(&self.usage)}),
            out,
        );
        Self::write("message_stop", &json!({"type": "message_stop"}), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_reads_blocks_and_tools() {
        let body = br#"{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"sys"}],
            "messages":[{"role":"user","content":"hi"},
              {"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}],
            "tools":[{"name":"f","input_schema":{"type":"object"}}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},"stream":true}"#;
        let request = parse_request(body).unwrap();
        assert_eq!(request.system.as_deref(), Some("sys"));
        assert_eq!(request.tool_choice, Some(ToolChoice::Required));
        assert_eq!(request.parallel_tool_calls, Some(false));
        let body = render_request(&request, "claude", 1024);
        assert_eq!(body["messages"][1]["content"][0]["input"]["a"], 1);
        assert_eq!(body["tool_choice"]["disable_parallel_tool_use"], true);
        assert_eq!(body["max_tokens"], 100);
    }

    #[test]
    fn usage_counts_cache_in_input() {
        let usage = parse_usage(
            &json!({"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 1}),
        );
        assert_eq!(usage.input(), 15);
        assert_eq!(render_usage(&usage)["input_tokens"], 5);
    }

    fn decode_events(stream: &str) -> Vec<StreamEvent> {
        let mut decoder = MessageDecoder::new();
        let mut events = Vec::new();
        decoder.decode(stream.as_bytes(), &mut events);
        decoder.finish(&mut events);
        events
    }

    #[test]
    fn typed_reading_takes_every_recorded_event() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/llm/anthropic/stream.sse"
        );
        let stream = std::fs::read_to_string(path).unwrap();
        let mut seen = 0;
        for data in stream.lines().filter_map(|l| l.strip_prefix("data: ")) {
            assert!(
                serde_json::from_str::<Obj<WireStreamEvent<'_>>>(data).is_ok(),
                "{data}"
            );
            seen += 1;
        }
        assert!(seen > 5);
    }

    #[test]
    fn odd_events_read_as_the_lenient_reading_has_them() {
        // A null usage is a report of nothing; a message that is not an
        // object has no id (the typed reading refuses both shapes' types
        // or takes them as the `Value` reading does).
        let events = decode_events(concat!(
            "data: {\"type\":\"message_start\",\"message\":[\"x\"]}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":null,\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":\"0\",\"delta\":{\"type\":\"text_delta\",\"text\":\"a\\\"b\"}}\n\n",
            "event: message_stop\ndata: {}\n\n",
        ));
        assert_eq!(
            events,
            [
                StreamEvent::Start {
                    id: None,
                    model: None
                },
                StreamEvent::Usage(TokenUsage::default()),
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::Stop
                },
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "a\"b".into()
                },
            ]
        );
    }

    #[test]
    fn encoder_emits_the_event_sequence() {
        let mut encoder = MessageEncoder::new("msg_1".into(), "m".into());
        let mut out = Vec::new();
        for event in [
            StreamEvent::Start {
                id: None,
                model: None,
            },
            StreamEvent::Usage(TokenUsage {
                input_tokens: Some(4),
                ..TokenUsage::default()
            }),
            StreamEvent::TextDelta {
                choice: 0,
                text: "Hi".into(),
            },
            StreamEvent::ToolCallStart {
                choice: 0,
                index: 0,
                id: "t".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: 0,
                arguments: "{}".into(),
            },
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolCalls,
            },
            StreamEvent::Usage(TokenUsage {
                output_tokens: Some(3),
                ..TokenUsage::default()
            }),
        ] {
            encoder.encode(&event, &mut out);
        }
        encoder.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains("\"input_tokens\":4"));
        assert!(text.contains("\"stop_reason\":\"tool_use\""));
    }
}
