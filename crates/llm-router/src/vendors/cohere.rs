//! Cohere v2 chat (`/v2/chat`), with a Bearer key. Streams are SSE whose
//! events are typed (`message-start`, `content-delta`, `tool-call-start`,
//! `tool-call-delta`, `tool-call-end`, `message-end` with usage).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, FinishReason, LlmError, ResponseFormat, Role,
    StreamEvent, TokenUsage, ToolChoice,
};
use crate::vendors::openai_compatible::json_request;
use crate::vendors::wire::{self, SseJson, event_json, put, tool_result_text};

const VENDOR: &str = "cohere";

/// What Cohere's v2 chat cannot express.
const UNSUPPORTED: &[Feature] = &[
    Feature::MultipleChoices,
    Feature::Logprobs,
    Feature::ParallelToolCalls,
    Feature::Metadata,
    Feature::User,
];

/// Cohere's only chat API here (v2).
pub fn select(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(Cohere))
}

/// The Cohere v2 chat adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cohere;

impl VendorAdapter for Cohere {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        "https://api.cohere.com/v2/chat".to_owned()
    }

    fn default_model(&self) -> &'static str {
        "command-a-03-2025"
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, UNSUPPORTED, VENDOR)?;
        if let Some(ToolChoice::Tool(_)) = request.tool_choice {
            return Err(LlmError::unsupported("tool_choice naming a tool", VENDOR));
        }
        Ok(())
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let body = request_body(request, provider)?;
        json_request(&provider.endpoint, Some(&provider.credentials), body)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        let answer: CohereResponse = wire::parse_json(VENDOR, body)?;
        let mut content = Vec::new();
        let mut called_tools = false;
        for block in answer.message.content {
            if block.kind == "text"
                && let Some(text) = block.text
            {
                content.push(ContentPart::Text(text));
            }
        }
        for call in answer.message.tool_calls {
            called_tools = true;
            content.push(ContentPart::ToolUse {
                id: call.id.unwrap_or_default(),
                name: call.function.name.unwrap_or_default(),
                arguments: call.function.arguments.unwrap_or_default(),
            });
        }
        let reason = answer
            .finish_reason
            .as_deref()
            .map(|r| finish_reason(r, called_tools));
        Ok(ChatResponse {
            id: answer.id,
            model: None,
            created: None,
            choices: vec![Choice::new(0, content, reason)],
            usage: answer.usage.map(|u| u.usage()).unwrap_or_default(),
        })
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| wire::str_field(&v, "message").map(str::to_owned));
        upstream_error(status, headers, message)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(CohereStream::default())
    }
}

fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "TOOL_CALL" => FinishReason::ToolCalls,
        "COMPLETE" | "STOP_SEQUENCE" if called_tools => FinishReason::ToolCalls,
        "COMPLETE" | "STOP_SEQUENCE" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

fn request_body(
    request: &ChatRequest,
    provider: &ProviderSettings,
) -> Result<Map<String, Value>, LlmError> {
    let mut body = Map::new();
    body.insert("model".to_owned(), json!(provider.model_for(request)));
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for message in &request.messages {
        let mut content = Vec::new();
        let mut tool_calls = Vec::new();
        for part in &message.content {
            match part {
                ContentPart::Text(text) => content.push(json!({"type": "text", "text": text})),
                ContentPart::Image(image) => {
                    content.push(json!({"type": "image_url", "image_url": {"url": image.to_url()}}))
                }
                ContentPart::ToolUse {
                    id,
                    name,
                    arguments,
                } => tool_calls.push(json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments}
                })),
                ContentPart::ToolResult {
                    tool_use_id,
                    content: result,
                    ..
                } => {
                    // Cohere takes tool results as messages of their own.
                    let text = tool_result_text(result, VENDOR)?;
                    messages.push(json!({
                        "role": "tool", "tool_call_id": tool_use_id,
                        "content": [{"type": "document", "document": {"data": text}}]
                    }));
                }
            }
        }
        let role = match message.role {
            Role::Assistant => "assistant",
            Role::User => "user",
        };
        if content.is_empty() && tool_calls.is_empty() {
            continue;
        }
        let mut entry = Map::new();
        entry.insert("role".to_owned(), json!(role));
        if !content.is_empty() {
            entry.insert("content".to_owned(), Value::Array(content));
        }
        if !tool_calls.is_empty() {
            entry.insert("tool_calls".to_owned(), Value::Array(tool_calls));
        }
        messages.push(Value::Object(entry));
    }
    body.insert("messages".to_owned(), Value::Array(messages));
    if !request.tools.is_empty() {
        body.insert("tools".to_owned(), wire::function_tools(&request.tools));
    }
    match request.tool_choice {
        Some(ToolChoice::Required) => {
            body.insert("tool_choice".to_owned(), json!("REQUIRED"));
        }
        Some(ToolChoice::None) => {
            body.insert("tool_choice".to_owned(), json!("NONE"));
        }
        _ => {}
    }
    if request.stream {
        body.insert("stream".to_owned(), json!(true));
    }
    put(&mut body, "max_tokens", request.max_tokens);
    put(&mut body, "temperature", request.temperature);
    put(&mut body, "p", request.top_p);
    put(&mut body, "k", request.top_k);
    if !request.stop.is_empty() {
        body.insert("stop_sequences".to_owned(), json!(request.stop));
    }
    put(&mut body, "seed", request.seed);
    put(&mut body, "presence_penalty", request.presence_penalty);
    put(&mut body, "frequency_penalty", request.frequency_penalty);
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".to_owned(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert(
                "response_format".to_owned(),
                json!({"type": "json_object", "json_schema": schema}),
            );
        }
        _ => {}
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(body)
}

#[derive(Deserialize)]
struct CohereResponse {
    id: Option<String>,
    finish_reason: Option<String>,
    #[serde(default)]
    message: CohereMessage,
    usage: Option<CohereUsage>,
}

#[derive(Default, Deserialize)]
struct CohereMessage {
    #[serde(default)]
    content: Vec<CohereContent>,
    #[serde(default)]
    tool_calls: Vec<CohereToolCall>,
}

#[derive(Deserialize)]
struct CohereContent {
    #[serde(rename = "type", default)]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct CohereToolCall {
    id: Option<String>,
    #[serde(default)]
    function: CohereFunction,
}

#[derive(Default, Deserialize)]
struct CohereFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct CohereUsage {
    billed_units: Option<Counts>,
    tokens: Option<Counts>,
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Counts {
    input_tokens: Option<f64>,
    output_tokens: Option<f64>,
}

impl CohereUsage {
    /// `tokens` counts what the model read and wrote; `billed_units` what
    /// was billed (without the template). Prefer the first.
    fn usage(&self) -> TokenUsage {
        let counts = self.tokens.as_ref().or(self.billed_units.as_ref());
        let count = |n: Option<f64>| n.map(|n| n.max(0.0) as u64);
        TokenUsage {
            input_tokens: counts.and_then(|c| count(c.input_tokens)),
            output_tokens: counts.and_then(|c| count(c.output_tokens)),
            cached_tokens: self.cached_tokens,
            cache_creation_tokens: None,
            reasoning_tokens: None,
        }
    }
}

/// One Cohere stream event; `delta.message` changes shape per type.
#[derive(Deserialize)]
struct CohereEvent {
    #[serde(rename = "type", default)]
    kind: String,
    id: Option<String>,
    index: Option<u32>,
    delta: Option<EventDelta>,
}

#[derive(Deserialize)]
struct EventDelta {
    message: Option<DeltaMessage>,
    finish_reason: Option<String>,
    usage: Option<CohereUsage>,
    error: Option<String>,
}

/// `content` and `tool_calls` are lists in `message-start` and single
/// objects in the deltas, so they are read per event type.
#[derive(Deserialize)]
struct DeltaMessage {
    content: Option<Value>,
    tool_calls: Option<Value>,
}

impl DeltaMessage {
    fn text(&self) -> Option<&str> {
        self.content.as_ref()?.get("text")?.as_str()
    }

    fn call(&self) -> Option<&Value> {
        self.tool_calls.as_ref().filter(|c| c.is_object())
    }
}

fn call_field<'a>(call: Option<&'a Value>, pointer: &str) -> Option<&'a str> {
    call?.pointer(pointer)?.as_str()
}

/// Reads Cohere's typed SSE events.
#[derive(Default)]
struct CohereStream {
    sse: Option<SseJson>,
    finished: bool,
    called_tools: bool,
}

impl CohereStream {
    fn sse(&mut self) -> &mut SseJson {
        self.sse.get_or_insert_with(SseJson::new)
    }

    fn on_event(&mut self, event: CohereEvent, out: &mut Vec<StreamEvent>) {
        let message = event.delta.as_ref().and_then(|d| d.message.as_ref());
        match event.kind.as_str() {
            "message-start" => out.push(StreamEvent::Start {
                id: event.id,
                model: None,
            }),
            "content-delta" => {
                if let Some(text) = message.and_then(DeltaMessage::text)
                    && !text.is_empty()
                {
                    out.push(StreamEvent::TextDelta {
                        choice: 0,
                        text: text.to_owned(),
                    });
                }
            }
            "tool-call-start" => {
                self.called_tools = true;
                let call = message.and_then(DeltaMessage::call);
                let index = event.index.unwrap_or(0);
                out.push(StreamEvent::ToolCallStart {
                    choice: 0,
                    index,
                    id: call_field(call, "/id").unwrap_or_default().to_owned(),
                    name: call_field(call, "/function/name")
                        .unwrap_or_default()
                        .to_owned(),
                });
                if let Some(arguments) = call_field(call, "/function/arguments")
                    && !arguments.is_empty()
                {
                    out.push(StreamEvent::ToolCallDelta {
                        choice: 0,
                        index,
                        arguments: arguments.to_owned(),
                    });
                }
            }
            "tool-call-delta" => {
                if let Some(arguments) =
                    call_field(message.and_then(DeltaMessage::call), "/function/arguments")
                    && !arguments.is_empty()
                {
                    out.push(StreamEvent::ToolCallDelta {
                        choice: 0,
                        index: event.index.unwrap_or(0),
                        arguments: arguments.to_owned(),
                    });
                }
            }
            "message-end" => {
                self.finished = true;
                let delta = event.delta;
                let reason = delta
                    .as_ref()
                    .and_then(|d| d.finish_reason.clone())
                    .unwrap_or_else(|| "COMPLETE".to_owned());
                if reason == "ERROR" || reason == "TIMEOUT" {
                    let message = delta
                        .as_ref()
                        .and_then(|d| d.error.clone())
                        .unwrap_or_else(|| format!("cohere stream ended with {reason}"));
                    let mut error = LlmError::bad_upstream(message);
                    if reason == "TIMEOUT" {
                        error.status = StatusCode::GATEWAY_TIMEOUT;
                        error.kind = crate::ir::ErrorKind::Timeout;
                    }
                    self.sse().fail(error, out);
                    return;
                }
                out.push(StreamEvent::Finish {
                    choice: 0,
                    reason: finish_reason(&reason, self.called_tools),
                });
                if let Some(usage) = delta.and_then(|d| d.usage) {
                    out.push(StreamEvent::Usage(usage.usage()));
                }
            }
            _ => {}
        }
    }
}

impl StreamDecoder for CohereStream {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        for event in self.sse().events(chunk, out) {
            if self.sse().failed() {
                break;
            }
            match event_json(VENDOR, &event) {
                Some(Ok(value)) => self.on_event(value, out),
                Some(Err(error)) => self.sse().fail(error, out),
                None => {}
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(event) = self.sse().rest(out) {
            match event_json(VENDOR, &event) {
                Some(Ok(value)) => self.on_event(value, out),
                Some(Err(error)) => self.sse().fail(error, out),
                None => {}
            }
        }
        if !self.finished && !self.sse().failed() {
            self.sse().fail(wire::cut_stream(VENDOR), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Secret;
    use crate::ir::{ImageSource, Message, Tool};
    use http::header::AUTHORIZATION;

    fn settings() -> ProviderSettings {
        ProviderSettings::new(
            "co",
            "https://api.cohere.com/v2/chat",
            "command-a-03-2025",
            Secret::new("co-key"),
        )
    }

    #[test]
    fn builds_v2_chat_requests() {
        let mut chat = ChatRequest {
            system: Some("Be brief.".into()),
            top_p: Some(0.5),
            stream: true,
            tool_choice: Some(ToolChoice::Required),
            ..ChatRequest::default()
        };
        chat.tools.push(Tool::new("f", json!({"type": "object"})));
        chat.messages.push(Message::new(
            Role::User,
            vec![
                ContentPart::text("Look:"),
                ContentPart::Image(ImageSource::Url("https://x/cat.png".into())),
            ],
        ));
        chat.messages.push(Message::new(
            Role::Assistant,
            vec![ContentPart::ToolUse {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::ToolResult {
                tool_use_id: "c1".into(),
                content: vec![ContentPart::text("42")],
                is_error: false,
            }],
        ));
        Cohere.check_request(&chat).unwrap();
        let request = Cohere.build_request(&chat, &settings()).unwrap();
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer co-key");
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "command-a-03-2025",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Look:"},
                        {"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
                    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]},
                    {"role": "tool", "tool_call_id": "c1",
                        "content": [{"type": "document", "document": {"data": "42"}}]}
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "tool_choice": "REQUIRED",
                "stream": true,
                "p": 0.5
            })
        );
        let err = Cohere
            .check_request(&ChatRequest {
                tool_choice: Some(ToolChoice::Tool("f".into())),
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn parses_responses_usage_and_errors() {
        let response = Cohere
            .parse_response(
                br#"{"id":"c-1","finish_reason":"TOOL_CALL","message":{"role":"assistant",
                  "tool_plan":"I will call f.","tool_calls":[{"id":"f_1","type":"function",
                  "function":{"name":"f","arguments":"{\"a\":1}"}}]},
                  "usage":{"billed_units":{"input_tokens":5,"output_tokens":3},
                           "tokens":{"input_tokens":70,"output_tokens":9}}}"#,
            )
            .unwrap();
        assert_eq!(
            response.choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
        assert_eq!(response.usage, TokenUsage::new(70, 9));
        let err = Cohere.parse_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"id":"e","message":"invalid api token"}"#,
        );
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert_eq!(err.message, "invalid api token");
    }

    #[test]
    fn decodes_streams_and_failed_ends() {
        let stream = concat!(
            "event: message-start\ndata: {\"id\":\"m1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
            "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hi\"}}}}\n\n",
            "event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"f_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}}}}\n\n",
            "event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{}\"}}}}}\n\n",
            "event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
            "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"billed_units\":{\"input_tokens\":1,\"output_tokens\":2},\"tokens\":{\"input_tokens\":3,\"output_tokens\":4}}}}\n\n",
        );
        let mut decoder = Cohere.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(stream.as_bytes(), &mut out);
        decoder.finish(&mut out);
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(
            out[3],
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: 0,
                arguments: "{}".into()
            }
        );
        assert_eq!(
            out[4],
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolCalls
            }
        );
        assert_eq!(out[5], StreamEvent::Usage(TokenUsage::new(3, 4)));
        let mut decoder = Cohere.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(&stream.as_bytes()[..300], &mut out);
        decoder.finish(&mut out);
        assert!(matches!(out.last(), Some(StreamEvent::Error(_))), "{out:?}");
    }
}
