//! The OpenAI Chat Completions wire format, both ways: read a client's
//! request and write the answer back (client format), write a vendor request
//! and read the vendor's answer (OpenAI, Mistral, Deepseek, Alibaba, Ollama,
//! any compatible server).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_core::sse::{Event, SseDecoder};

use super::{Obj, Str};
use crate::adapter::StreamDecoder;
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    Message, ResponseFormat, Role, StreamEvent, TokenUsage, Tool, ToolChoice, WireDialect,
};

/// The largest SSE event a vendor stream may send.
pub(crate) const MAX_EVENT: usize = 4 * 1024 * 1024;

// ---------------------------------------------------------------- client in

#[derive(Deserialize)]
struct WireRequest {
    model: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<WireTool>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    // Not OpenAI's, but common on compatible servers and sent as extra_body.
    top_k: Option<u64>,
    stop: Option<StringOrList>,
    seed: Option<i64>,
    n: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    response_format: Option<WireResponseFormat>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    stream: Option<bool>,
    stream_options: Option<WireStreamOptions>,
    user: Option<String>,
    metadata: Option<Map<String, Value>>,
    /// Everything else, forwarded to OpenAI-dialect vendors only.
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireStreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    role: String,
    #[serde(default)]
    content: Option<WireContent>,
    #[allow(dead_code)]
    name: Option<String>,
    tool_calls: Option<Vec<WireToolCall>>,
    tool_call_id: Option<String>,
    #[allow(dead_code)]
    refusal: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Parts(Vec<WirePart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WirePart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: WireImageUrl,
    },
    #[allow(dead_code)]
    Refusal {
        refusal: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireImageUrl {
    url: String,
    #[allow(dead_code)]
    detail: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireToolCall {
    id: String,
    #[allow(dead_code)]
    #[serde(rename = "type")]
    kind: Option<String>,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireTool {
    #[serde(rename = "type")]
    kind: String,
    function: WireFunction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum WireResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: WireJsonSchema },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireJsonSchema {
    name: String,
    description: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

fn bad(message: impl Into<String>) -> LlmError {
    LlmError::invalid_request(message)
}

/// Reads a client's Chat Completions request.
pub(crate) fn parse_request(body: &[u8]) -> Result<ChatRequest, LlmError> {
    let wire: WireRequest = parse_json(body)?;
    let mut request = ChatRequest {
        model: wire.model,
        max_tokens: wire.max_completion_tokens.or(wire.max_tokens),
        temperature: wire.temperature,
        top_p: wire.top_p,
        top_k: wire.top_k,
        seed: wire.seed,
        n: wire.n,
        presence_penalty: wire.presence_penalty,
        frequency_penalty: wire.frequency_penalty,
        parallel_tool_calls: wire.parallel_tool_calls,
        logprobs: wire.logprobs.unwrap_or(false),
        top_logprobs: wire.top_logprobs,
        stream: wire.stream.unwrap_or(false),
        include_usage: wire
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        user: wire.user,
        metadata: wire.metadata,
        client_dialect: Some(WireDialect::OpenAiChat),
        client_fields: wire.other,
        ..ChatRequest::default()
    };
    request.stop = match wire.stop {
        None => Vec::new(),
        Some(StringOrList::One(stop)) => vec![stop],
        Some(StringOrList::Many(stops)) => stops,
    };
    request.response_format = wire.response_format.map(|f| match f {
        WireResponseFormat::Text => ResponseFormat::Text,
        WireResponseFormat::JsonObject => ResponseFormat::JsonObject,
        WireResponseFormat::JsonSchema { json_schema } => ResponseFormat::JsonSchema {
            name: json_schema.name,
            schema: json_schema.schema.unwrap_or_else(|| json!({})),
            strict: json_schema.strict,
            description: json_schema.description,
        },
    });
    for tool in wire.tools.unwrap_or_default() {
        if tool.kind != "function" {
            return Err(LlmError::unsupported(
                &format!("tools[].type {:?}", tool.kind),
                "gateway",
            ));
        }
        request.tools.push(Tool {
            name: tool.function.name,
            description: tool.function.description,
            parameters: tool
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: tool.function.strict,
        });
    }
    request.tool_choice = wire.tool_choice.map(parse_tool_choice).transpose()?;
    let mut system: Vec<String> = Vec::new();
    for (i, message) in wire.messages.into_iter().enumerate() {
        match message.role.as_str() {
            "system" | "developer" => system.push(content_text(message.content, i)?),
            "user" => {
                let parts = content_parts(message.content)?;
                request.messages.push(Message::new(Role::User, parts));
            }
            "assistant" => {
                let mut parts = content_parts(message.content)?;
                for call in message.tool_calls.unwrap_or_default() {
                    parts.push(ContentPart::ToolUse {
                        id: call.id,
                        name: call.function.name,
                        arguments: call.function.arguments,
                    });
                }
                request.messages.push(Message::new(Role::Assistant, parts));
            }
            "tool" => {
                let Some(tool_use_id) = message.tool_call_id else {
                    return Err(bad(format!("messages[{i}].tool_call_id is required")));
                };
                let result = ContentPart::ToolResult {
                    tool_use_id,
                    content: content_parts(message.content)?,
                    is_error: false,
                };
                // Consecutive tool results answer one assistant turn together.
                match request.messages.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last
                                .content
                                .iter()
                                .all(|p| matches!(p, ContentPart::ToolResult { .. })) =>
                    {
                        last.content.push(result);
                    }
                    _ => request
                        .messages
                        .push(Message::new(Role::User, vec![result])),
                }
            }
            other => {
                return Err(bad(format!(
                    "messages[{i}].role {other:?} is not supported"
                )));
            }
        }
    }
    if !system.is_empty() {
        request.system = Some(system.join("\n\n"));
    }
    Ok(request)
}

/// Reads a client body into a wire type; the error names the bad field.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LlmError> {
    serde_json::from_slice(body).map_err(|err| bad(format!("invalid request body: {err}")))
}

fn parse_tool_choice(value: Value) -> Result<ToolChoice, LlmError> {
    match &value {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!("tool_choice {other:?} is not supported"))),
        },
        Value::Object(map) => map
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|name| ToolChoice::Tool(name.to_owned()))
            .ok_or_else(|| bad("tool_choice.function.name is required")),
        _ => Err(bad("tool_choice must be a string or an object")),
    }
}

fn content_text(content: Option<WireContent>, index: usize) -> Result<String, LlmError> {
    let parts = content_parts(content)?;
    if parts.iter().any(|p| !matches!(p, ContentPart::Text(_))) {
        return Err(bad(format!(
            "messages[{index}]: a system message holds text only"
        )));
    }
    Ok(crate::ir::join_text(&parts))
}

fn content_parts(content: Option<WireContent>) -> Result<Vec<ContentPart>, LlmError> {
    Ok(match content {
        None => Vec::new(),
        Some(WireContent::Text(text)) if text.is_empty() => Vec::new(),
        Some(WireContent::Text(text)) => vec![ContentPart::Text(text)],
        Some(WireContent::Parts(parts)) => parts
            .into_iter()
            .map(|part| match part {
                WirePart::Text { text } => ContentPart::Text(text),
                WirePart::ImageUrl { image_url } => {
                    ContentPart::Image(ImageSource::from_url(&image_url.url))
                }
                // A refusal in history is the model's own words: keep as text.
                WirePart::Refusal { refusal } => ContentPart::Text(refusal),
            })
            .collect(),
    })
}

// --------------------------------------------------------------- vendor out

/// Which optional pieces a compatible vendor's body may carry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dialect {
    /// Sends `max_completion_tokens` (OpenAI) rather than `max_tokens`.
    pub(crate) max_completion_tokens: bool,
    /// Asks for usage in streams with `stream_options.include_usage`.
    pub(crate) stream_options: bool,
    /// The seed field name (`seed`, Mistral's `random_seed`).
    pub(crate) seed_field: &'static str,
    /// Whether `tool_choice: "required"` is spelled `"any"` (Mistral).
    pub(crate) required_is_any: bool,
}

impl Dialect {
    pub(crate) const OPENAI: Dialect = Dialect {
        max_completion_tokens: true,
        stream_options: true,
        seed_field: "seed",
        required_is_any: false,
    };
    pub(crate) const COMPATIBLE: Dialect = Dialect {
        max_completion_tokens: false,
        stream_options: true,
        seed_field: "seed",
        required_is_any: false,
    };
}

/// Writes the vendor body for `request`.
pub(crate) fn render_request(
    request: &ChatRequest,
    model: &str,
    dialect: Dialect,
) -> Result<Map<String, Value>, LlmError> {
    let mut body = Map::new();
    body.insert("model".into(), model.into());
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        render_message(message, &mut messages)?;
    }
    body.insert("messages".into(), Value::Array(messages));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert("name".into(), tool.name.clone().into());
                if let Some(description) = &tool.description {
                    function.insert("description".into(), description.clone().into());
                }
                function.insert("parameters".into(), tool.parameters.clone());
                if let Some(strict) = tool.strict {
                    function.insert("strict".into(), strict.into());
                }
                json!({"type": "function", "function": function})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let value = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required if dialect.required_is_any => json!("any"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), value);
    }
    if let Some(parallel) = request.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), parallel.into());
    }
    if let Some(max) = request.max_tokens {
        let field = if dialect.max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body.insert(field.into(), max.into());
    }
    insert_opt(&mut body, "temperature", request.temperature);
    insert_opt(&mut body, "top_p", request.top_p);
    insert_opt(&mut body, "top_k", request.top_k);
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    insert_opt(&mut body, dialect.seed_field, request.seed);
    insert_opt(&mut body, "n", request.n);
    insert_opt(&mut body, "presence_penalty", request.presence_penalty);
    insert_opt(&mut body, "frequency_penalty", request.frequency_penalty);
    if let Some(format) = &request.response_format {
        let value = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
                description,
            } => {
                let mut inner = Map::new();
                inner.insert("name".into(), name.clone().into());
                if let Some(description) = description {
                    inner.insert("description".into(), description.clone().into());
                }
                inner.insert("schema".into(), schema.clone());
                if let Some(strict) = strict {
                    inner.insert("strict".into(), (*strict).into());
                }
                json!({"type": "json_schema", "json_schema": inner})
            }
        };
        body.insert("response_format".into(), value);
    }
    if request.logprobs {
        body.insert("logprobs".into(), true.into());
    }
    insert_opt(&mut body, "top_logprobs", request.top_logprobs);
    if request.stream {
        body.insert("stream".into(), true.into());
        if dialect.stream_options {
            // Always asked: usage is recorded even when the client did not
            // ask for it (the client format strips it again).
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), user.clone().into());
    }
    if let Some(metadata) = &request.metadata {
        body.insert("metadata".into(), Value::Object(metadata.clone()));
    }
    if request.client_dialect == Some(WireDialect::OpenAiChat) {
        for (key, value) in &request.client_fields {
            body.insert(key.clone(), value.clone());
        }
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(body)
}

fn insert_opt<T: Into<Value>>(body: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        body.insert(key.to_owned(), value.into());
    }
}

fn render_part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text(text) => json!({"type": "text", "text": text}),
        ContentPart::Image(source) => {
            json!({"type": "image_url", "image_url": {"url": source.to_url()}})
        }
        // Not reached: tool parts are rendered as messages of their own.
        ContentPart::ToolUse { .. } | ContentPart::ToolResult { .. } => Value::Null,
    }
}

fn render_content(parts: &[&ContentPart]) -> Value {
    match parts {
        [] => Value::String(String::new()),
        [ContentPart::Text(text)] => Value::String(text.clone()),
        parts => Value::Array(parts.iter().map(|p| render_part(p)).collect()),
    }
}

fn render_message(message: &Message, out: &mut Vec<Value>) -> Result<(), LlmError> {
    match message.role {
        Role::User => {
            let mut rest: Vec<&ContentPart> = Vec::new();
            for part in &message.content {
                match part {
                    ContentPart::ToolResult {
                        tool_use_id,
                        content,
                        is_error: _,
                    } => {
                        if content.iter().any(|c| !matches!(c, ContentPart::Text(_))) {
                            return Err(LlmError::unsupported(
                                "image content in a tool result",
                                "OpenAI-style",
                            ));
                        }
                        out.push(json!({
                            "role": "tool",
                            "tool_call_id": tool_use_id,
                            "content": crate::ir::join_text(content),
                        }));
                    }
                    ContentPart::ToolUse { .. } => {
                        return Err(bad("a user message cannot hold a tool call"));
                    }
                    other => rest.push(other),
                }
            }
            if !rest.is_empty() {
                out.push(json!({"role": "user", "content": render_content(&rest)}));
            }
        }
        Role::Assistant => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for part in &message.content {
                match part {
                    ContentPart::Text(t) => text.push_str(t),
                    ContentPart::ToolUse {
                        id,
                        name,
                        arguments,
                    } => calls.push(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    })),
                    ContentPart::Image(_) => {
                        return Err(LlmError::unsupported(
                            "image content in an assistant message",
                            "OpenAI-style",
                        ));
                    }
                    ContentPart::ToolResult { .. } => {
                        return Err(bad("an assistant message cannot hold a tool result"));
                    }
                }
            }
            let mut value = Map::new();
            value.insert("role".into(), "assistant".into());
            value.insert(
                "content".into(),
                if text.is_empty() && !calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                },
            );
            if !calls.is_empty() {
                value.insert("tool_calls".into(), Value::Array(calls));
            }
            out.push(Value::Object(value));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- vendor in

pub(crate) fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" | "eos" => FinishReason::Stop,
        "length" | "model_length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

pub(crate) fn finish_reason_str(reason: &FinishReason) -> &str {
    match reason {
        FinishReason::Stop | FinishReason::Other(_) => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

pub(crate) fn parse_usage(value: &Value) -> TokenUsage {
    let get = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64);
    TokenUsage {
        input_tokens: get(value, "prompt_tokens"),
        output_tokens: get(value, "completion_tokens"),
        cached_tokens: value
            .get("prompt_tokens_details")
            .and_then(|d| get(d, "cached_tokens"))
            // Deepseek reports its cache this way.
            .or_else(|| get(value, "prompt_cache_hit_tokens")),
        cache_creation_tokens: None,
        reasoning_tokens: value
            .get("completion_tokens_details")
            .and_then(|d| get(d, "reasoning_tokens")),
    }
}

/// [`text_of`] for a value of its own: a string is moved, not copied.
fn text_of_owned(value: Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s),
        other => text_of(Some(&other)),
    }
}

fn text_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        // Some compatible servers answer with content parts.
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

/// Reads a vendor's Chat Completions answer.
pub(crate) fn parse_response(body: &[u8]) -> Result<ChatResponse, LlmError> {
    let value: Value = serde_json::from_slice(body).map_err(|err| {
        LlmError::bad_upstream(format!("the provider answered invalid JSON: {err}"))
    })?;
    let Some(choices) = value.get("choices").and_then(Value::as_array) else {
        return Err(LlmError::bad_upstream(
            "the provider's answer has no choices",
        ));
    };
    let mut response = ChatResponse {
        id: value.get("id").and_then(Value::as_str).map(str::to_owned),
        model: value
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        created: value.get("created").and_then(Value::as_u64),
        choices: Vec::with_capacity(choices.len()),
        usage: value.get("usage").map(parse_usage).unwrap_or_default(),
    };
    for (position, choice) in choices.iter().enumerate() {
        let index = choice
            .get("index")
            .and_then(Value::as_u64)
            .map_or(position as u32, |i| i as u32);
        let message = choice.get("message").cloned().unwrap_or(Value::Null);
        let mut content = Vec::new();
        if let Some(text) = text_of(message.get("content"))
            && !text.is_empty()
        {
            content.push(ContentPart::Text(text));
        } else if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            content.push(ContentPart::Text(refusal.to_owned()));
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let function = call.get("function");
            content.push(ContentPart::ToolUse {
                id: call
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                name: function
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                arguments: match function.and_then(|f| f.get("arguments")) {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => String::new(),
                },
            });
        }
        let mut out = Choice::new(
            index,
            content,
            choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(finish_reason),
        );
        out.logprobs = choice.get("logprobs").filter(|v| !v.is_null()).cloned();
        response.choices.push(out);
    }
    Ok(response)
}

/// Reads an OpenAI-style error body: `{"error": {"message", "type", "code",
/// "param"}}` (also a bare `{"message"}` or `{"detail"}`, as compatible
/// servers send).
pub(crate) fn parse_error_body(err: &mut LlmError, body: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let inner = value.get("error").unwrap_or(&value);
    let message = match inner {
        Value::String(s) => Some(s.clone()),
        other => other
            .get("message")
            .or_else(|| other.get("detail"))
            .and_then(|m| match m {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }),
    };
    if let Some(message) = message {
        err.message = message;
    }
    if let Some(code) = inner.get("code").and_then(|c| match c {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }) {
        err.code = Some(code);
    }
    if let Some(param) = inner.get("param").and_then(Value::as_str) {
        err.param = Some(param.to_owned());
    }
}

/// One Chat Completions stream chunk, typed: only what the decoder reads.
#[derive(Deserialize)]
struct WireChunk<'a> {
    error: Option<serde::de::IgnoredAny>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    #[serde(borrow)]
    choices: Option<Vec<Obj<WireChunkChoice<'a>>>>,
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct WireChunkChoice<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<Obj<WireChunkDelta<'a>>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct WireChunkDelta<'a> {
    content: Option<Value>,
    #[serde(borrow)]
    refusal: Option<Str<'a>>,
    tool_calls: Option<Vec<Obj<WireCallDelta>>>,
}

#[derive(Deserialize)]
struct WireCallDelta {
    index: Option<u64>,
    id: Option<String>,
    function: Option<Obj<WireFunctionDelta>>,
}

#[derive(Deserialize)]
struct WireFunctionDelta {
    name: Option<String>,
    arguments: Option<Value>,
}

/// Decodes a Chat Completions SSE stream.
pub(crate) struct ChunkDecoder {
    sse: SseDecoder,
    started: bool,
    done: bool,
    finished_any: bool,
    failed: bool,
    /// Tool calls whose start was sent, by (choice, index).
    open_calls: BTreeSet<(u32, u32)>,
}

impl ChunkDecoder {
    pub(crate) fn new() -> Self {
        Self {
            sse: SseDecoder::new(MAX_EVENT),
            started: false,
            done: false,
            finished_any: false,
            failed: false,
            open_calls: BTreeSet::new(),
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
        let data = data.trim();
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.done = true;
            return;
        }
        // The typed reading covers every well-formed chunk; anything it
        // refuses (a field of an unexpected type, duplicate keys, invalid
        // JSON, an error) takes the lenient `Value` reading, which decides.
        if let Ok(Obj(chunk)) = serde_json::from_str::<Obj<WireChunk<'_>>>(data)
            && chunk.error.is_none()
        {
            return self.typed_chunk(chunk, out);
        }
        self.value_chunk(data, out);
    }

    fn typed_chunk(&mut self, chunk: WireChunk<'_>, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.map(|id| id.0.into_owned()),
                model: chunk.model.map(|model| model.0.into_owned()),
            });
        }
        for Obj(choice) in chunk.choices.into_iter().flatten() {
            let index = choice.index.unwrap_or(0) as u32;
            if let Some(Obj(delta)) = choice.delta {
                if let Some(text) = delta.content.and_then(text_of_owned)
                    && !text.is_empty()
                {
                    out.push(StreamEvent::TextDelta {
                        choice: index,
                        text,
                    });
                }
                if let Some(refusal) = delta.refusal
                    && !refusal.0.is_empty()
                {
                    out.push(StreamEvent::TextDelta {
                        choice: index,
                        text: refusal.0.into_owned(),
                    });
                }
                for (position, Obj(call)) in delta.tool_calls.into_iter().flatten().enumerate() {
                    let call_index = call.index.map_or(position as u32, |i| i as u32);
                    let (name, arguments) = match call.function {
                        Some(Obj(function)) => (function.name, function.arguments),
                        None => (None, None),
                    };
                    if self.open_calls.insert((index, call_index)) {
                        out.push(StreamEvent::ToolCallStart {
                            choice: index,
                            index: call_index,
                            id: call.id.unwrap_or_default(),
                            name: name.unwrap_or_default(),
                        });
                    }
                    let arguments = match arguments {
                        Some(Value::String(s)) => s,
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: index,
                            index: call_index,
                            arguments,
                        });
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finished_any = true;
                out.push(StreamEvent::Finish {
                    choice: index,
                    reason: finish_reason(reason.as_str()),
                });
            }
        }
        if let Some(usage) = chunk.usage.filter(Value::is_object) {
            out.push(StreamEvent::Usage(parse_usage(&usage)));
        }
    }

    fn value_chunk(&mut self, data: &str, out: &mut Vec<StreamEvent>) {
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(err) => {
                return self.fail(
                    LlmError::bad_upstream(format!("the provider streamed invalid JSON: {err}")),
                    out,
                );
            }
        };
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            let mut err = LlmError::bad_upstream("the provider failed mid-stream");
            parse_error_body(&mut err, data.as_bytes());
            if let Some(kind) = error.get("type").and_then(Value::as_str) {
                err.kind = kind_from_type(kind).unwrap_or(ErrorKind::Api);
            }
            return self.fail(err, out);
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: value.get("id").and_then(Value::as_str).map(str::to_owned),
                model: value
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        for choice in value
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as u32;
            if let Some(delta) = choice.get("delta") {
                if let Some(text) = text_of(delta.get("content"))
                    && !text.is_empty()
                {
                    out.push(StreamEvent::TextDelta {
                        choice: index,
                        text,
                    });
                }
                if let Some(refusal) = delta.get("refusal").and_then(Value::as_str)
                    && !refusal.is_empty()
                {
                    out.push(StreamEvent::TextDelta {
                        choice: index,
                        text: refusal.to_owned(),
                    });
                }
                for (position, call) in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    let call_index = call
                        .get("index")
                        .and_then(Value::as_u64)
                        .map_or(position as u32, |i| i as u32);
                    let function = call.get("function");
                    if self.open_calls.insert((index, call_index)) {
                        out.push(StreamEvent::ToolCallStart {
                            choice: index,
                            index: call_index,
                            id: call
                                .get("id")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            name: function
                                .and_then(|f| f.get("name"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                    let arguments = match function.and_then(|f| f.get("arguments")) {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Null) | None => String::new(),
                        Some(other) => other.to_string(),
                    };
                    if !arguments.is_empty() {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: index,
                            index: call_index,
                            arguments,
                        });
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finished_any = true;
                out.push(StreamEvent::Finish {
                    choice: index,
                    reason: finish_reason(reason),
                });
            }
        }
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            out.push(StreamEvent::Usage(parse_usage(usage)));
        }
    }
}

pub(crate) fn kind_from_type(kind: &str) -> Option<ErrorKind> {
    Some(match kind {
        "invalid_request_error" => ErrorKind::InvalidRequest,
        "authentication_error" => ErrorKind::Authentication,
        "permission_error" => ErrorKind::Permission,
        "not_found_error" => ErrorKind::NotFound,
        "request_too_large" => ErrorKind::RequestTooLarge,
        "rate_limit_error" | "rate_limit_exceeded" => ErrorKind::RateLimit,
        "overloaded_error" => ErrorKind::Overloaded,
        "timeout_error" => ErrorKind::Timeout,
        "api_error" | "server_error" => ErrorKind::Api,
        _ => return None,
    })
}

impl StreamDecoder for ChunkDecoder {
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
        if self.failed {
            return;
        }
        if !self.done {
            match self.sse.finish() {
                Ok(Some(event)) => self.event(event, out),
                Ok(None) => {}
                Err(err) => return self.fail(LlmError::bad_upstream(err.to_string()), out),
            }
        }
        // Some compatible servers omit `[DONE]`; a finish reason still says
        // the answer is whole.
        if !self.done && !self.finished_any && !self.failed {
            self.fail(
                LlmError::bad_upstream("the provider's stream ended before the answer did"),
                out,
            );
        }
    }
}

// --------------------------------------------------------------- client out

/// Writes the client's Chat Completions answer.
pub(crate) fn render_response(
    response: &ChatResponse,
    id: &str,
    created: u64,
    model: &str,
) -> Value {
    let choices: Vec<Value> = response
        .choices
        .iter()
        .map(|choice| {
            let text = choice.text();
            let calls: Vec<Value> = choice
                .content
                .iter()
                .filter_map(|part| match part {
                    ContentPart::ToolUse {
                        id,
                        name,
                        arguments,
                    } => Some(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    })),
                    _ => None,
                })
                .collect();
            let mut message = Map::new();
            message.insert("role".into(), "assistant".into());
            message.insert(
                "content".into(),
                if text.is_empty() && !calls.is_empty() {
                    Value::Null
                } else {
                    Value::String(text)
                },
            );
            message.insert("refusal".into(), Value::Null);
            if !calls.is_empty() {
                message.insert("tool_calls".into(), Value::Array(calls));
            }
            json!({
                "index": choice.index,
                "message": message,
                "logprobs": choice.logprobs.clone().unwrap_or(Value::Null),
                "finish_reason": finish_reason_str(choice.finish_reason.as_ref().unwrap_or(&FinishReason::Stop)),
            })
        })
        .collect();
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": render_usage(&response.usage),
        "system_fingerprint": Value::Null,
    })
}

pub(crate) fn render_usage(usage: &TokenUsage) -> Value {
    let mut value = json!({
        "prompt_tokens": usage.input(),
        "completion_tokens": usage.output(),
        "total_tokens": usage.total(),
    });
    if let Some(cached) = usage.cached_tokens {
        value["prompt_tokens_details"] = json!({"cached_tokens": cached});
    }
    if let Some(reasoning) = usage.reasoning_tokens {
        value["completion_tokens_details"] = json!({"reasoning_tokens": reasoning});
    }
    value
}

/// The client's OpenAI error body.
pub(crate) fn render_error(err: &LlmError) -> Value {
    json!({
        "error": {
            "message": err.message,
            "type": err.kind.openai_type(),
            "param": err.param,
            "code": err.code,
        }
    })
}

/// Writes IR stream events as Chat Completions chunks, straight into the
/// output: the part of a chunk that only changes with the id and model
/// (`data: {"id":...,"choices":[`) is written once and copied per chunk.
pub(crate) struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    usage: TokenUsage,
    roles_sent: Vec<u32>,
    failed: bool,
    /// `data: {"id":..,"object":..,"created":..,"model":..,
    /// "system_fingerprint":null,"choices":[`; empty until first needed
    /// and again after the id or model change.
    prefix: Vec<u8>,
}

/// The delta of one chunk.
enum Delta<'a> {
    Content(&'a str),
    ToolStart {
        index: u32,
        id: &'a str,
        name: &'a str,
    },
    ToolArguments {
        index: u32,
        arguments: &'a str,
    },
    Empty,
}

impl ChunkEncoder {
    pub(crate) fn new(id: String, created: u64, model: String, include_usage: bool) -> Self {
        Self {
            id,
            created,
            model,
            include_usage,
            usage: TokenUsage::default(),
            roles_sent: Vec::new(),
            failed: false,
            prefix: Vec::new(),
        }
    }

    fn write_prefix(&mut self, out: &mut Vec<u8>) {
        if self.prefix.is_empty() {
            let prefix = &mut self.prefix;
            prefix.extend_from_slice(b"data: {\"id\":");
            write_json_str(prefix, &self.id);
            prefix.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
            write_json_u64(prefix, self.created);
            prefix.extend_from_slice(b",\"model\":");
            write_json_str(prefix, &self.model);
            prefix.extend_from_slice(b",\"system_fingerprint\":null,\"choices\":[");
        }
        out.extend_from_slice(&self.prefix);
    }

    fn delta(&mut self, choice: u32, delta: Delta<'_>, finish: Option<&str>, out: &mut Vec<u8>) {
        let role = !self.roles_sent.contains(&choice);
        if role {
            self.roles_sent.push(choice);
        }
        self.write_prefix(out);
        out.extend_from_slice(b"{\"index\":");
        write_json_u64(out, choice.into());
        out.extend_from_slice(b",\"delta\":{");
        let empty = matches!(delta, Delta::Empty);
        match delta {
            Delta::Content(text) => {
                out.extend_from_slice(b"\"content\":");
                write_json_str(out, text);
            }
            Delta::ToolStart { index, id, name } => {
                out.extend_from_slice(b"\"tool_calls\":[{\"index\":");
                write_json_u64(out, index.into());
                out.extend_from_slice(b",\"id\":");
                write_json_str(out, id);
                out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
                write_json_str(out, name);
                out.extend_from_slice(b",\"arguments\":\"\"}}]");
            }
            Delta::ToolArguments { index, arguments } => {
                out.extend_from_slice(b"\"tool_calls\":[{\"index\":");
                write_json_u64(out, index.into());
                out.extend_from_slice(b",\"function\":{\"arguments\":");
                write_json_str(out, arguments);
                out.extend_from_slice(b"}}]");
            }
            Delta::Empty => {}
        }
        if role {
            if !empty {
                out.push(b',');
            }
            out.extend_from_slice(b"\"role\":\"assistant\"");
        }
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(reason) => write_json_str(out, reason),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }

    pub(crate) fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        match event {
            StreamEvent::Start { model, id } => {
                if let Some(id) = id
                    && !id.is_empty()
                {
                    self.id = client_id(id);
                    self.prefix.clear();
                }
                if let Some(model) = model
                    && !model.is_empty()
                {
                    self.model.clone_from(model);
                    self.prefix.clear();
                }
                self.delta(0, Delta::Content(""), None, out);
            }
            StreamEvent::TextDelta { choice, text } => {
                self.delta(*choice, Delta::Content(text), None, out);
            }
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => self.delta(
                *choice,
                Delta::ToolStart {
                    index: *index,
                    id,
                    name,
                },
                None,
                out,
            ),
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => self.delta(
                *choice,
                Delta::ToolArguments {
                    index: *index,
                    arguments,
                },
                None,
                out,
            ),
            StreamEvent::Finish { choice, reason } => {
                self.delta(*choice, Delta::Empty, Some(finish_reason_str(reason)), out);
            }
            StreamEvent::Usage(usage) => self.usage.merge(usage),
            StreamEvent::Error(err) => {
                self.failed = true;
                write_data(&render_error(err), out);
            }
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        if self.include_usage {
            self.write_prefix(out);
            out.extend_from_slice(b"],\"usage\":");
            // Serialising a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &render_usage(&self.usage));
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// Appends `text` as a JSON string, escaped as `serde_json` escapes it.
pub(crate) fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Appends a JSON number.
pub(crate) fn write_json_u64(out: &mut Vec<u8>, number: u64) {
    let _ = serde_json::to_writer(&mut *out, &number);
}

/// The id a client sees for a vendor's response id.
pub(crate) fn client_id(vendor: &str) -> String {
    if vendor.starts_with("chatcmpl") {
        vendor.to_owned()
    } else {
        format!("chatcmpl-{vendor}")
    }
}

pub(crate) fn write_data(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_round_trip() {
        let body = br#"{"model":"gpt-x","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "tool_choice":"required","stop":"END","seed":7,"n":2,"stream":true,
            "stream_options":{"include_usage":true},"response_format":{"type":"json_object"}}"#;
        let request = parse_request(body).unwrap();
        assert_eq!(request.system.as_deref(), Some("be brief"));
        assert_eq!(request.messages.len(), 3);
        assert_eq!(request.stop, vec!["END"]);
        assert!(request.include_usage);
        assert_eq!(request.tool_choice, Some(ToolChoice::Required));
        let rendered = render_request(&request, "gpt-x", Dialect::OPENAI).unwrap();
        let messages = rendered["messages"].as_array().unwrap();
        assert_eq!(messages[0]["role"], "system");
        assert_eq!(
            messages[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AA"
        );
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(messages[3]["role"], "tool");
        assert_eq!(rendered["stream_options"]["include_usage"], true);
        assert_eq!(rendered["seed"], 7);
    }

    #[test]
    fn unknown_fields_are_kept_for_the_same_dialect() {
        let request = parse_request(
            br#"{"model":"m","messages":[],"logit_bias":{"1":2},"reasoning_effort":"low"}"#,
        )
        .unwrap();
        assert_eq!(request.client_fields.len(), 2);
        let body = render_request(&request, "m", Dialect::OPENAI).unwrap();
        assert_eq!(body["reasoning_effort"], "low");
        // Nested objects stay strict.
        let err = parse_request(br#"{"messages":[{"role":"user","content":"x","colour":1}]}"#)
            .unwrap_err();
        assert!(err.message.contains("colour"), "{}", err.message);
    }

    #[test]
    fn stream_decodes_tool_calls_and_usage() {
        let stream = concat!(
            "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"t\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        let mut decoder = ChunkDecoder::new();
        let mut events = Vec::new();
        decoder.decode(stream.as_bytes(), &mut events);
        decoder.finish(&mut events);
        assert_eq!(events.len(), 5, "{events:?}");
        assert!(matches!(&events[1], StreamEvent::ToolCallStart { name, .. } if name == "f"));
        assert_eq!(events[4], StreamEvent::Usage(TokenUsage::new(3, 2)));
    }

    #[test]
    fn typed_reading_takes_every_recorded_chunk() {
        for vendor in ["openai", "mistral", "deepseek", "alibaba"] {
            let path = format!(
                "{}/../../tests/fixtures/llm/{vendor}/stream.sse",
                env!("CARGO_MANIFEST_DIR")
            );
            let stream = std::fs::read_to_string(path).unwrap();
            for data in stream.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if data.trim() != "[DONE]" {
                    assert!(
                        serde_json::from_str::<Obj<WireChunk<'_>>>(data).is_ok(),
                        "{vendor}: {data}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_chunks_read_as_the_lenient_reading_has_them() {
        let stream = concat!(
            // `choices` elements that are not objects hold nothing.
            "data: {\"id\":\"c\",\"choices\":[[0]]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":[{\"text\":\"a\"},{\"text\":\"b\"}]}}],\"usage\":[1]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":{\"x\":1}}}]},\"finish_reason\":7}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut decoder = ChunkDecoder::new();
        let mut events = Vec::new();
        decoder.decode(stream.as_bytes(), &mut events);
        decoder.finish(&mut events);
        assert_eq!(
            events,
            [
                StreamEvent::Start {
                    id: Some("c".into()),
                    model: None
                },
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "ab".into()
                },
                StreamEvent::ToolCallStart {
                    choice: 0,
                    index: 0,
                    id: String::new(),
                    name: String::new()
                },
                StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: "{\"x\":1}".into()
                },
            ]
        );
    }

    #[test]
    fn cut_stream_is_an_error() {
        let mut decoder = ChunkDecoder::new();
        let mut events = Vec::new();
        decoder.decode(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            &mut events,
        );
        decoder.finish(&mut events);
        assert!(matches!(events.last(), Some(StreamEvent::Error(_))));
    }
}
