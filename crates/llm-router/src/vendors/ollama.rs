//! Ollama's native chat API (`/api/chat`): one JSON object per line
//! (NDJSON) when streaming, usage as `prompt_eval_count` / `eval_count` in
//! the last (`"done": true`) object.
//!
//! `provider: "ollama"` speaks the native API when the endpoint's path ends
//! in `/api/chat`, and Ollama's OpenAI-compatible `/v1/chat/completions`
//! otherwise (the default).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, FinishReason, ImageSource, LlmError,
    ResponseFormat, Role, StreamEvent, TokenUsage, ToolChoice,
};
use crate::vendors::openai_compatible::json_request;
use crate::vendors::wire::{
    self, MAX_STREAM_EVENT, arguments_object, put, tool_name_for, tool_result_text,
};

const VENDOR: &str = "ollama";

/// The native API's default endpoint.
pub const NATIVE_ENDPOINT: &str = "http://127.0.0.1:11434/api/chat";

/// What Ollama's native chat cannot express.
const UNSUPPORTED: &[Feature] = &[
    Feature::MultipleChoices,
    Feature::Logprobs,
    Feature::ParallelToolCalls,
    Feature::Metadata,
    Feature::User,
];

/// The native adapter for an endpoint ending in `/api/chat`, else the
/// OpenAI-compatible one.
pub fn select(endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    match endpoint {
        Some(endpoint) if super::endpoint_path(endpoint).ends_with("/api/chat") => {
            Ok(Arc::new(OllamaNative))
        }
        _ => super::openai_compatible::ollama(endpoint),
    }
}

/// The Ollama native `/api/chat` adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct OllamaNative;

impl VendorAdapter for OllamaNative {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        NATIVE_ENDPOINT.to_owned()
    }

    fn default_model(&self) -> &'static str {
        "llama3.2"
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, UNSUPPORTED, VENDOR)?;
        match request.tool_choice {
            None | Some(ToolChoice::Auto) => Ok(()),
            Some(_) => Err(LlmError::unsupported("tool_choice other than auto", VENDOR)),
        }
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
        let answer: ChatLine = wire::parse_json(VENDOR, body)?;
        if let Some(error) = answer.error {
            return Err(LlmError::bad_upstream(error));
        }
        let mut content = Vec::new();
        let message = answer.message.unwrap_or_default();
        if !message.content.is_empty() {
            content.push(ContentPart::Text(message.content));
        }
        let called_tools = !message.tool_calls.is_empty();
        for (index, call) in message.tool_calls.into_iter().enumerate() {
            content.push(call.into_part(index as u32));
        }
        let reason = finish_reason(answer.done_reason.as_deref(), called_tools);
        Ok(ChatResponse {
            id: None,
            model: answer.model,
            created: None,
            choices: vec![Choice::new(0, content, Some(reason))],
            usage: usage(answer.prompt_eval_count, answer.eval_count),
        })
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| wire::str_field(&v, "error").map(str::to_owned));
        upstream_error(status, headers, message)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(NdjsonStream::default())
    }
}

fn usage(prompt: Option<u64>, eval: Option<u64>) -> TokenUsage {
    TokenUsage {
        input_tokens: prompt,
        output_tokens: eval,
        ..TokenUsage::default()
    }
}

fn finish_reason(reason: Option<&str>, called_tools: bool) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ if called_tools => FinishReason::ToolCalls,
        None | Some("stop" | "") => FinishReason::Stop,
        Some(other) => FinishReason::Other(other.to_owned()),
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
    for (at, message) in request.messages.iter().enumerate() {
        let mut text = String::new();
        let mut images = Vec::new();
        let mut tool_calls = Vec::new();
        for part in &message.content {
            match part {
                ContentPart::Text(piece) => text.push_str(piece),
                ContentPart::Image(ImageSource::Base64 { data, .. }) => images.push(json!(data)),
                ContentPart::Image(ImageSource::Url(_)) => {
                    return Err(LlmError::unsupported("image_url with a remote URL", VENDOR));
                }
                ContentPart::ToolUse {
                    name, arguments, ..
                } => tool_calls.push(
                    json!({"function": {"name": name, "arguments": arguments_object(arguments)?}}),
                ),
                ContentPart::ToolResult {
                    tool_use_id,
                    content,
                    ..
                } => {
                    let mut result = Map::new();
                    result.insert("role".to_owned(), json!("tool"));
                    result.insert(
                        "content".to_owned(),
                        json!(tool_result_text(content, VENDOR)?),
                    );
                    if let Some(name) = tool_name_for(&request.messages, at, tool_use_id) {
                        result.insert("tool_name".to_owned(), json!(name));
                    }
                    messages.push(Value::Object(result));
                }
            }
        }
        if text.is_empty() && images.is_empty() && tool_calls.is_empty() {
            continue;
        }
        let role = match message.role {
            Role::Assistant => "assistant",
            Role::User => "user",
        };
        let mut entry = Map::new();
        entry.insert("role".to_owned(), json!(role));
        entry.insert("content".to_owned(), json!(text));
        if !images.is_empty() {
            entry.insert("images".to_owned(), Value::Array(images));
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
    // Ollama streams unless told not to.
    body.insert("stream".to_owned(), json!(request.stream));
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            body.insert("format".to_owned(), json!("json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("format".to_owned(), schema.clone());
        }
        _ => {}
    }
    let mut options = Map::new();
    put(&mut options, "num_predict", request.max_tokens);
    put(&mut options, "temperature", request.temperature);
    put(&mut options, "top_p", request.top_p);
    put(&mut options, "top_k", request.top_k);
    if !request.stop.is_empty() {
        options.insert("stop".to_owned(), json!(request.stop));
    }
    put(&mut options, "seed", request.seed);
    put(&mut options, "presence_penalty", request.presence_penalty);
    put(&mut options, "frequency_penalty", request.frequency_penalty);
    if !options.is_empty() {
        body.insert("options".to_owned(), Value::Object(options));
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(body)
}

/// One `/api/chat` object: the whole answer, or one line of a stream.
#[derive(Deserialize)]
struct ChatLine {
    model: Option<String>,
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: Option<String>,
}

#[derive(Default, Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    tool_calls: Vec<OllamaToolCall>,
}

#[derive(Deserialize)]
struct OllamaToolCall {
    id: Option<String>,
    function: OllamaFunction,
}

#[derive(Deserialize)]
struct OllamaFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl OllamaToolCall {
    fn into_part(self, index: u32) -> ContentPart {
        let arguments = match self.function.arguments {
            Value::Null => "{}".to_owned(),
            Value::String(text) => text,
            other => other.to_string(),
        };
        ContentPart::ToolUse {
            id: self.id.unwrap_or_else(|| format!("call_{index}")),
            name: self.function.name,
            arguments,
        }
    }
}

/// Reads an NDJSON stream line by line, bounded.
#[derive(Default)]
struct NdjsonStream {
    line: Vec<u8>,
    started: bool,
    finished: bool,
    failed: bool,
    tool_calls: u32,
}

impl NdjsonStream {
    fn fail(&mut self, error: LlmError, out: &mut Vec<StreamEvent>) {
        if !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(error));
        }
    }

    fn on_line(&mut self, out: &mut Vec<StreamEvent>) {
        let line = std::mem::take(&mut self.line);
        let text = line.trim_ascii();
        if text.is_empty() {
            return;
        }
        let chunk: ChatLine = match serde_json::from_slice(text) {
            Ok(chunk) => chunk,
            Err(err) => {
                let error =
                    LlmError::bad_upstream(format!("ollama streamed unreadable JSON: {err}"));
                self.fail(error, out);
                return;
            }
        };
        if let Some(error) = chunk.error {
            self.fail(LlmError::bad_upstream(error), out);
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: None,
                model: chunk.model.clone(),
            });
        }
        if let Some(message) = chunk.message {
            if !message.content.is_empty() {
                out.push(StreamEvent::TextDelta {
                    choice: 0,
                    text: message.content,
                });
            }
            // Ollama sends each tool call whole, in one line.
            for call in message.tool_calls {
                let index = self.tool_calls;
                self.tool_calls += 1;
                if let ContentPart::ToolUse {
                    id,
                    name,
                    arguments,
                } = call.into_part(index)
                {
                    out.push(StreamEvent::ToolCallStart {
                        choice: 0,
                        index,
                        id,
                        name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        choice: 0,
                        index,
                        arguments,
                    });
                }
            }
        }
        if chunk.done {
            self.finished = true;
            out.push(StreamEvent::Finish {
                choice: 0,
                reason: finish_reason(chunk.done_reason.as_deref(), self.tool_calls > 0),
            });
            out.push(StreamEvent::Usage(usage(
                chunk.prompt_eval_count,
                chunk.eval_count,
            )));
        }
    }
}

impl StreamDecoder for NdjsonStream {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        let mut rest = chunk;
        while !self.failed && !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.line.extend_from_slice(&rest[..at]);
                    rest = &rest[at + 1..];
                    if self.line.len() > MAX_STREAM_EVENT {
                        self.fail(
                            LlmError::bad_upstream("an ollama stream line is too long"),
                            out,
                        );
                    } else {
                        self.on_line(out);
                    }
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > MAX_STREAM_EVENT {
                        self.fail(
                            LlmError::bad_upstream("an ollama stream line is too long"),
                            out,
                        );
                    }
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        self.on_line(out);
        if !self.finished {
            self.fail(wire::cut_stream(VENDOR), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Secret;
    use crate::ir::{Message, Tool};

    fn settings() -> ProviderSettings {
        ProviderSettings::new("ol", NATIVE_ENDPOINT, "llama3.2", Secret::default())
    }

    #[test]
    fn the_endpoint_path_picks_the_native_api() {
        assert_eq!(
            select(Some("http://127.0.0.1:11434/api/chat"))
                .unwrap()
                .default_endpoint("m", false),
            NATIVE_ENDPOINT
        );
        assert_ne!(
            select(None).unwrap().default_endpoint("m", false),
            NATIVE_ENDPOINT
        );
    }

    #[test]
    fn builds_native_requests() {
        let mut chat = ChatRequest {
            system: Some("sys".into()),
            max_tokens: Some(9),
            seed: Some(1),
            response_format: Some(ResponseFormat::JsonObject),
            ..ChatRequest::default()
        };
        chat.tools.push(Tool::new("f", json!({"type": "object"})));
        chat.messages.push(Message::new(
            Role::User,
            vec![
                ContentPart::text("see"),
                ContentPart::Image(ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "AAAA".into(),
                }),
            ],
        ));
        chat.messages.push(Message::new(
            Role::Assistant,
            vec![ContentPart::ToolUse {
                id: "call_0".into(),
                name: "f".into(),
                arguments: r#"{"a":1}"#.into(),
            }],
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::ToolResult {
                tool_use_id: "call_0".into(),
                content: vec![ContentPart::text("ok")],
                is_error: false,
            }],
        ));
        let request = OllamaNative.build_request(&chat, &settings()).unwrap();
        assert!(request.headers().get("authorization").is_none());
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "see", "images": ["AAAA"]},
                    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                    {"role": "tool", "content": "ok", "tool_name": "f"}
                ],
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "stream": false,
                "format": "json",
                "options": {"num_predict": 9, "seed": 1}
            })
        );
        let err = OllamaNative
            .check_request(&ChatRequest {
                tool_choice: Some(ToolChoice::Required),
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn parses_answers_errors_and_ndjson_streams() {
        let response = OllamaNative
            .parse_response(
                br#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"Hi!"},
                  "done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":3}"#,
            )
            .unwrap();
        assert_eq!(response.choices[0].text(), "Hi!");
        assert_eq!(response.usage, TokenUsage::new(26, 3));
        let err = OllamaNative.parse_error(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            br#"{"error":"model \"nope\" not found, try pulling it first"}"#,
        );
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        assert!(err.message.contains("not found"));

        let stream = concat!(
            "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"He\"},\"done\":false}\n",
            "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1}}}]},\"done\":false}\n",
            "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":5,\"eval_count\":2}\n",
        );
        let mut decoder = OllamaNative.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(stream.as_bytes(), &mut out);
        decoder.finish(&mut out);
        assert_eq!(out.len(), 6, "{out:?}");
        assert_eq!(
            out[4],
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolCalls
            }
        );
        assert_eq!(out[5], StreamEvent::Usage(TokenUsage::new(5, 2)));
        let mut decoder = OllamaNative.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(b"{\"error\":\"out of memory\"}\n", &mut out);
        decoder.finish(&mut out);
        assert!(matches!(out.as_slice(), [StreamEvent::Error(_)]));
        let mut decoder = OllamaNative.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(&stream.as_bytes()[..80], &mut out);
        decoder.finish(&mut out);
        assert!(matches!(out.last(), Some(StreamEvent::Error(_))));
    }
}
