//! The OpenAI Responses API (`/v1/responses`, KrakenD's default OpenAI
//! endpoint, and the shape of Alibaba's `/compatible-mode/v1/responses`):
//! `instructions` and `input` items in, `output` items out; streams are SSE
//! events named by `type` (`response.created`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.completed` with
//! usage, `error`).

use std::collections::HashMap;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::dialect::openai_chat;
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, LlmError,
    ResponseFormat, Role, StreamEvent, TokenUsage, ToolChoice,
};
use crate::vendors::openai_compatible::json_request;
use crate::vendors::wire::{self, SseJson, event_json, put, tool_result_text};

/// What the Responses API cannot express.
const UNSUPPORTED: &[Feature] = &[
    Feature::MultipleChoices,
    Feature::Seed,
    Feature::TopK,
    Feature::Penalties,
    Feature::Logprobs,
];

/// A Responses API vendor: OpenAI's own, or a server with the same shape.
#[derive(Clone, Copy, Debug)]
pub struct OpenAiResponses {
    vendor: &'static str,
    endpoint: &'static str,
    model: &'static str,
}

impl OpenAiResponses {
    /// OpenAI at `https://api.openai.com/v1/responses`.
    pub const OPENAI: Self = Self {
        vendor: "openai",
        endpoint: super::openai::DEFAULT_ENDPOINT,
        model: super::openai::DEFAULT_MODEL,
    };

    /// Alibaba Cloud Model Studio's Responses-style endpoint.
    pub const ALIBABA: Self = Self {
        vendor: "alibaba",
        endpoint: super::openai_compatible::ALIBABA_KRAKEND_ENDPOINT,
        model: "qwen3.8-flash",
    };
}

impl VendorAdapter for OpenAiResponses {
    fn vendor(&self) -> &'static str {
        self.vendor
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        self.endpoint.to_owned()
    }

    fn default_model(&self) -> &'static str {
        self.model
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, UNSUPPORTED, self.vendor)?;
        if !request.stop.is_empty() {
            return Err(LlmError::unsupported("stop", self.vendor));
        }
        Ok(())
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let body = request_body(request, provider, self.vendor)?;
        json_request(&provider.endpoint, Some(&provider.credentials), body)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        let answer: Response = wire::parse_json(self.vendor, body)?;
        answer.into_chat()
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let mut err = upstream_error(status, headers, None);
        openai_chat::parse_error_body(&mut err, body);
        err
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesStream::default())
    }
}

fn request_body(
    request: &ChatRequest,
    provider: &ProviderSettings,
    vendor: &str,
) -> Result<Map<String, Value>, LlmError> {
    let mut body = Map::new();
    body.insert("model".to_owned(), json!(provider.model_for(request)));
    put(&mut body, "instructions", request.system.clone());
    let mut input = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let mut content = Vec::new();
        // Text and images become one message item; calls and results are
        // items of their own, in order.
        let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
            if !content.is_empty() {
                let role = match message.role {
                    Role::Assistant => "assistant",
                    Role::User => "user",
                };
                input.push(json!({"role": role, "content": std::mem::take(content)}));
            }
        };
        for part in &message.content {
            match part {
                ContentPart::Text(text) => content.push(match message.role {
                    Role::Assistant => json!({"type": "output_text", "text": text}),
                    Role::User => json!({"type": "input_text", "text": text}),
                }),
                ContentPart::Image(image) => {
                    if message.role == Role::Assistant {
                        return Err(LlmError::unsupported(
                            "images in assistant messages",
                            vendor,
                        ));
                    }
                    content.push(json!({"type": "input_image", "image_url": image.to_url()}));
                }
                ContentPart::ToolUse {
                    id,
                    name,
                    arguments,
                } => {
                    flush(&mut content, &mut input);
                    input.push(json!({
                        "type": "function_call", "call_id": id, "name": name, "arguments": arguments
                    }));
                }
                ContentPart::ToolResult {
                    tool_use_id,
                    content: result,
                    ..
                } => {
                    flush(&mut content, &mut input);
                    input.push(json!({
                        "type": "function_call_output", "call_id": tool_use_id,
                        "output": tool_result_text(result, vendor)?
                    }));
                }
            }
        }
        flush(&mut content, &mut input);
    }
    body.insert("input".to_owned(), Value::Array(input));
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut function = Map::new();
                function.insert("type".to_owned(), json!("function"));
                function.insert("name".to_owned(), json!(tool.name));
                put(&mut function, "description", tool.description.clone());
                function.insert("parameters".to_owned(), tool.parameters.clone());
                // The Responses API is strict unless told otherwise; Chat
                // Completions is not, and clients expect its default.
                function.insert("strict".to_owned(), json!(tool.strict.unwrap_or(false)));
                Value::Object(function)
            })
            .collect();
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(choice) = &request.tool_choice {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
        };
        body.insert("tool_choice".to_owned(), choice);
    }
    put(
        &mut body,
        "parallel_tool_calls",
        request.parallel_tool_calls,
    );
    put(&mut body, "max_output_tokens", request.max_tokens);
    put(&mut body, "temperature", request.temperature);
    put(&mut body, "top_p", request.top_p);
    if let Some(truncation) = provider.variable("truncation") {
        body.insert("truncation".to_owned(), truncation.clone());
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert(
                "text".to_owned(),
                json!({"format": {"type": "json_object"}}),
            );
        }
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
            description,
        }) => {
            let mut format = Map::new();
            format.insert("type".to_owned(), json!("json_schema"));
            format.insert("name".to_owned(), json!(name));
            format.insert("schema".to_owned(), schema.clone());
            put(&mut format, "strict", *strict);
            put(&mut format, "description", description.clone());
            body.insert("text".to_owned(), json!({"format": format}));
        }
        _ => {}
    }
    if let Some(metadata) = &request.metadata {
        body.insert("metadata".to_owned(), Value::Object(metadata.clone()));
    }
    put(&mut body, "user", request.user.clone());
    if request.stream {
        body.insert("stream".to_owned(), json!(true));
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Response {
    id: Option<String>,
    created_at: Option<f64>,
    model: Option<String>,
    status: Option<String>,
    #[serde(default)]
    output: Vec<OutputItem>,
    incomplete_details: Option<IncompleteDetails>,
    error: Option<ApiError>,
    usage: Option<ResponsesUsage>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    content: Vec<OutputContent>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct OutputContent {
    #[serde(rename = "type", default)]
    kind: String,
    text: Option<String>,
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    code: Option<String>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<InputDetails>,
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OutputDetails {
    reasoning_tokens: Option<u64>,
}

impl ResponsesUsage {
    fn usage(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cached_tokens: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_creation_tokens: None,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

impl ApiError {
    /// A failure the vendor reported in a 200 answer or in its stream.
    fn into_error(self) -> LlmError {
        let (status, kind) = match self.code.as_deref() {
            Some("rate_limit_exceeded") => (StatusCode::TOO_MANY_REQUESTS, ErrorKind::RateLimit),
            Some("invalid_prompt" | "invalid_request_error" | "context_length_exceeded") => {
                (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest)
            }
            Some("server_error") => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Api),
            Some("server_is_overloaded" | "slow_down") => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Overloaded)
            }
            _ => (StatusCode::BAD_GATEWAY, ErrorKind::Api),
        };
        let message = if self.message.is_empty() {
            "the response failed".to_owned()
        } else {
            self.message
        };
        let mut error = LlmError::new(status, message).with_kind(kind);
        error.code = self.code;
        error
    }
}

fn incomplete_reason(details: Option<&IncompleteDetails>) -> FinishReason {
    match details.and_then(|d| d.reason.as_deref()) {
        Some("content_filter") => FinishReason::ContentFilter,
        Some("max_output_tokens") | None => FinishReason::Length,
        Some(other) => FinishReason::Other(other.to_owned()),
    }
}

impl Response {
    fn into_chat(self) -> Result<ChatResponse, LlmError> {
        if self.status.as_deref() == Some("failed")
            && let Some(error) = self.error
        {
            return Err(error.into_error());
        }
        let mut content = Vec::new();
        let mut called_tools = false;
        for item in self.output {
            match item.kind.as_str() {
                "message" => {
                    for piece in item.content {
                        let text = match piece.kind.as_str() {
                            "output_text" => piece.text,
                            "refusal" => piece.refusal,
                            _ => None,
                        };
                        if let Some(text) = text {
                            match content.last_mut() {
                                Some(ContentPart::Text(last)) => last.push_str(&text),
                                _ => content.push(ContentPart::Text(text)),
                            }
                        }
                    }
                }
                "function_call" => {
                    called_tools = true;
                    content.push(ContentPart::ToolUse {
                        id: item.call_id.unwrap_or_default(),
                        name: item.name.unwrap_or_default(),
                        arguments: item.arguments.unwrap_or_default(),
                    });
                }
                _ => {}
            }
        }
        let reason = match self.status.as_deref() {
            Some("incomplete") => incomplete_reason(self.incomplete_details.as_ref()),
            _ if called_tools => FinishReason::ToolCalls,
            _ => FinishReason::Stop,
        };
        Ok(ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created_at.map(|t| t.max(0.0) as u64),
            choices: vec![Choice::new(0, content, Some(reason))],
            usage: self.usage.map(|u| u.usage()).unwrap_or_default(),
        })
    }
}

/// One streamed event; which fields are set depends on `type`.
#[derive(Deserialize)]
struct ResponsesEvent {
    #[serde(rename = "type", default)]
    kind: String,
    response: Option<Response>,
    output_index: Option<u64>,
    item: Option<OutputItem>,
    delta: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// Reads a Responses API stream.
#[derive(Default)]
struct ResponsesStream {
    sse: Option<SseJson>,
    finished: bool,
    /// `output_index` of a function call -> its tool call index.
    calls: HashMap<u64, u32>,
}

impl ResponsesStream {
    fn sse(&mut self) -> &mut SseJson {
        self.sse.get_or_insert_with(SseJson::new)
    }

    fn on_event(&mut self, event: ResponsesEvent, out: &mut Vec<StreamEvent>) {
        match event.kind.as_str() {
            "response.created" => {
                let response = event.response;
                out.push(StreamEvent::Start {
                    id: response.as_ref().and_then(|r| r.id.clone()),
                    model: response.and_then(|r| r.model),
                });
            }
            "response.output_item.added" => {
                if let Some(item) = event.item
                    && item.kind == "function_call"
                {
                    let index = self.calls.len() as u32;
                    self.calls.insert(event.output_index.unwrap_or(0), index);
                    out.push(StreamEvent::ToolCallStart {
                        choice: 0,
                        index,
                        id: item.call_id.unwrap_or_default(),
                        name: item.name.unwrap_or_default(),
                    });
                    if let Some(arguments) = item.arguments.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: 0,
                            index,
                            arguments,
                        });
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(text) = event.delta.filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::TextDelta { choice: 0, text });
                }
            }
            "response.function_call_arguments.delta" => {
                let index = self.calls.get(&event.output_index.unwrap_or(0)).copied();
                match (index, event.delta) {
                    (Some(index), Some(arguments)) if !arguments.is_empty() => {
                        out.push(StreamEvent::ToolCallDelta {
                            choice: 0,
                            index,
                            arguments,
                        });
                    }
                    (None, _) => {
                        let error = LlmError::bad_upstream(
                            "the responses stream sent arguments for a call it never started",
                        );
                        self.sse().fail(error, out);
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                self.finished = true;
                let response = event.response;
                let reason = if event.kind == "response.incomplete" {
                    incomplete_reason(
                        response
                            .as_ref()
                            .and_then(|r| r.incomplete_details.as_ref()),
                    )
                } else if self.calls.is_empty() {
                    FinishReason::Stop
                } else {
                    FinishReason::ToolCalls
                };
                out.push(StreamEvent::Finish { choice: 0, reason });
                if let Some(usage) = response.and_then(|r| r.usage) {
                    out.push(StreamEvent::Usage(usage.usage()));
                }
            }
            "response.failed" => {
                let error = event.response.and_then(|r| r.error).map_or_else(
                    || LlmError::bad_upstream("the response failed"),
                    ApiError::into_error,
                );
                self.sse().fail(error, out);
            }
            "error" => {
                let error = ApiError {
                    code: event.code,
                    message: event.message.unwrap_or_default(),
                }
                .into_error();
                self.sse().fail(error, out);
            }
            _ => {}
        }
    }
}

impl StreamDecoder for ResponsesStream {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        for event in self.sse().events(chunk, out) {
            if self.sse().failed() {
                break;
            }
            match event_json("responses", &event) {
                Some(Ok(value)) => self.on_event(value, out),
                Some(Err(error)) => self.sse().fail(error, out),
                None => {}
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some(event) = self.sse().rest(out) {
            match event_json("responses", &event) {
                Some(Ok(value)) => self.on_event(value, out),
                Some(Err(error)) => self.sse().fail(error, out),
                None => {}
            }
        }
        if !self.finished && !self.sse().failed() {
            self.sse().fail(wire::cut_stream("responses"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Secret;
    use crate::ir::{ImageSource, Message, Tool};
    use http::header::AUTHORIZATION;

    const RESPONSES: OpenAiResponses = OpenAiResponses::OPENAI;

    fn settings() -> ProviderSettings {
        ProviderSettings::new(
            "oa",
            "https://api.openai.com/v1/responses",
            "gpt-5.4-mini",
            Secret::new("sk-test"),
        )
    }

    #[test]
    fn builds_input_items_instructions_and_tools() {
        let mut chat = ChatRequest {
            system: Some("Be brief.".into()),
            max_tokens: Some(30),
            tool_choice: Some(ToolChoice::Tool("f".into())),
            response_format: Some(ResponseFormat::JsonObject),
            stream: true,
            ..ChatRequest::default()
        };
        chat.tools.push(Tool::new("f", json!({"type": "object"})));
        chat.messages.push(Message::new(
            Role::User,
            vec![
                ContentPart::text("What is this?"),
                ContentPart::Image(ImageSource::Url("https://x/cat.png".into())),
            ],
        ));
        chat.messages.push(Message::new(
            Role::Assistant,
            vec![
                ContentPart::text("Checking."),
                ContentPart::ToolUse {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{}".into(),
                },
            ],
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::ToolResult {
                tool_use_id: "call_1".into(),
                content: vec![ContentPart::text("a cat")],
                is_error: false,
            }],
        ));
        RESPONSES.check_request(&chat).unwrap();
        let mut settings = settings();
        settings.variables = serde_json::from_value(json!({"truncation": "auto"})).unwrap();
        let request = RESPONSES.build_request(&chat, &settings).unwrap();
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer sk-test");
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-5.4-mini",
                "instructions": "Be brief.",
                "input": [
                    {"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://x/cat.png"}]},
                    {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                    {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "call_1", "output": "a cat"}
                ],
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": false}],
                "tool_choice": {"type": "function", "name": "f"},
                "max_output_tokens": 30,
                "truncation": "auto",
                "text": {"format": {"type": "json_object"}},
                "stream": true
            })
        );
        let err = RESPONSES
            .check_request(&ChatRequest {
                stop: vec!["x".into()],
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("stop"));
    }

    #[test]
    fn parses_output_items_usage_and_failures() {
        let response = RESPONSES
            .parse_response(
                br#"{"id":"resp_1","object":"response","created_at":1741476542,"status":"completed",
                  "model":"gpt-5.4-mini","output":[
                    {"type":"reasoning","id":"rs_1","summary":[]},
                    {"type":"message","id":"msg_1","status":"completed","role":"assistant",
                     "content":[{"type":"output_text","text":"Hello","annotations":[]}]},
                    {"type":"function_call","id":"fc_1","call_id":"call_9","name":"f","arguments":"{\"a\":1}","status":"completed"}],
                  "usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":8},
                    "output_tokens":87,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":123}}"#,
            )
            .unwrap();
        assert_eq!(response.created, Some(1_741_476_542));
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.text(), "Hello");
        assert_eq!(response.usage.cached_tokens, Some(8));
        assert_eq!(response.usage.reasoning_tokens, Some(64));
        let incomplete = RESPONSES
            .parse_response(
                br#"{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}"#,
            )
            .unwrap();
        assert_eq!(
            incomplete.choices[0].finish_reason,
            Some(FinishReason::Length)
        );
        let err = RESPONSES.parse_error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        );
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        assert_eq!(err.code.as_deref(), Some("invalid_api_key"));
    }

    fn decode(stream: &str) -> Vec<StreamEvent> {
        let mut decoder = RESPONSES.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(stream.as_bytes(), &mut out);
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn decodes_streams_and_error_events() {
        let events = decode(concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"model\":\"gpt-5.4-mini\",\"output\":[]}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
            "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"output_index\":1,\"item\":{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_1\",\"name\":\"f\",\"arguments\":\"\"}}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{}\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\n\n",
        ));
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: Some("resp_1".into()),
                    model: Some("gpt-5.4-mini".into())
                },
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "Hi".into()
                },
                StreamEvent::ToolCallStart {
                    choice: 0,
                    index: 0,
                    id: "call_1".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: "{}".into()
                },
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Usage(TokenUsage::new(3, 4)),
            ]
        );
        let events = decode(
            "event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\",\"param\":null}\n\n",
        );
        match events.as_slice() {
            [StreamEvent::Error(err)] => assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS),
            other => panic!("{other:?}"),
        }
        let events = decode(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\"}}\n\n",
        );
        assert!(matches!(events.last(), Some(StreamEvent::Error(_))));
    }
}
