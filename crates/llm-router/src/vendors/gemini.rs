//! Google Gemini: `generateContent`, and `streamGenerateContent?alt=sse`
//! for streams (each event a whole `GenerateContentResponse` holding the
//! next piece). The key goes in `x-goog-api-key`, unless the configured
//! endpoint already carries `?key=`.
//!
//! Tool results are matched by function name, not id, so a result's name
//! is looked up from the call it answers earlier in the conversation; tool
//! call ids Gemini does not give are `call_<n>`. Tool parameters and JSON
//! schemas go as `parametersJsonSchema` / `responseJsonSchema`, which take
//! JSON Schema as clients write it (the older `parameters` /
//! `responseSchema` take an OpenAPI subset that refuses
//! `additionalProperties`).

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    ResponseFormat, Role, StreamEvent, TokenUsage, ToolChoice,
};
use crate::vendors::wire::{
    self, SseJson, arguments_object, event_json, put, tool_name_for, tool_result_text,
};

const VENDOR: &str = "gemini";
const BASE: &str = "https://generativelanguage.googleapis.com/v1beta/models/";

/// What Gemini cannot express.
const UNSUPPORTED: &[Feature] = &[
    Feature::Logprobs,
    Feature::ParallelToolCalls,
    Feature::Metadata,
    Feature::User,
];

/// Gemini's only API.
pub fn select(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(Gemini))
}

/// The Gemini adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gemini;

impl VendorAdapter for Gemini {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn default_endpoint(&self, model: &str, streaming: bool) -> String {
        if streaming {
            format!("{BASE}{model}:streamGenerateContent?alt=sse")
        } else {
            format!("{BASE}{model}:generateContent")
        }
    }

    fn default_model(&self) -> &'static str {
        "gemini-3.5-flash"
    }

    fn model_from_endpoint(&self, endpoint: &str) -> Option<String> {
        let path = super::endpoint_path(endpoint);
        let (_, rest) = path.rsplit_once("/models/")?;
        let (model, _) = rest.split_once(':')?;
        (!model.is_empty() && !model.contains('/')).then(|| model.to_owned())
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, UNSUPPORTED, VENDOR)
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let body = request_body(request)?;
        let url = if provider.endpoint_configured {
            configured_url(&provider.endpoint, request.stream)?
        } else {
            self.default_endpoint(provider.model_for(request), request.stream)
        };
        let mut builder = http::Request::post(&url).header("content-type", "application/json");
        if !has_key_param(&url) {
            let mut key = HeaderValue::from_str(provider.credentials.expose()).map_err(|_| {
                LlmError::invalid_request("the gemini credentials are not a valid header value")
            })?;
            key.set_sensitive(true);
            builder = builder.header("x-goog-api-key", key);
        }
        builder
            .body(wire::to_body(&body)?)
            .map_err(|err| LlmError::invalid_request(format!("bad gemini endpoint `{url}`: {err}")))
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        let answer: GenerateResponse = wire::parse_json(VENDOR, body)?;
        if let Some(error) = answer.error {
            return Err(error.into_error(StatusCode::BAD_GATEWAY, &HeaderMap::new()));
        }
        let mut choices = Vec::with_capacity(answer.candidates.len().max(1));
        for candidate in answer.candidates {
            let index = candidate.index.unwrap_or(choices.len() as u32);
            let mut content = Vec::new();
            let mut calls = 0u32;
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                if part.thought {
                    continue;
                }
                if let Some(text) = part.text {
                    push_text(&mut content, text);
                }
                if let Some(call) = part.function_call {
                    content.push(ContentPart::ToolUse {
                        id: call.id.unwrap_or_else(|| call_id(index, calls)),
                        name: call.name,
                        arguments: call.args.map_or_else(|| "{}".to_owned(), |a| a.to_string()),
                    });
                    calls += 1;
                }
            }
            let reason = candidate
                .finish_reason
                .as_deref()
                .map(|r| finish_reason(r, calls > 0));
            choices.push(Choice::new(index, content, reason));
        }
        if choices.is_empty()
            && let Some(feedback) = answer.prompt_feedback
            && feedback.block_reason.is_some()
        {
            choices.push(Choice::new(
                0,
                Vec::new(),
                Some(FinishReason::ContentFilter),
            ));
        }
        Ok(ChatResponse {
            id: answer.response_id,
            model: answer.model_version,
            created: None,
            choices,
            usage: answer.usage_metadata.map(|u| u.usage()).unwrap_or_default(),
        })
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        match serde_json::from_slice::<ErrorEnvelope>(body) {
            Ok(envelope) => envelope.error.into_error(status, headers),
            Err(_) => upstream_error(status, headers, None),
        }
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStream::default())
    }
}

fn call_id(choice: u32, index: u32) -> String {
    if choice == 0 {
        format!("call_{index}")
    } else {
        format!("call_{choice}_{index}")
    }
}

fn push_text(content: &mut Vec<ContentPart>, text: String) {
    if let Some(ContentPart::Text(last)) = content.last_mut() {
        last.push_str(&text);
    } else {
        content.push(ContentPart::Text(text));
    }
}

fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "STOP" if called_tools => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_ascii_lowercase()),
    }
}

fn has_key_param(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair == "key" || pair.starts_with("key="))
    })
}

/// A configured endpoint, switched between `generateContent` and
/// `streamGenerateContent?alt=sse` to match what the client asked for.
fn configured_url(endpoint: &str, stream: bool) -> Result<String, LlmError> {
    let mut url = url::Url::parse(endpoint)
        .map_err(|err| LlmError::invalid_request(format!("bad gemini endpoint: {err}")))?;
    let path = url.path().to_owned();
    let (unary, streamed) = (":generateContent", ":streamGenerateContent");
    if stream && path.ends_with(unary) {
        url.set_path(&format!("{}{streamed}", &path[..path.len() - unary.len()]));
    } else if !stream && path.ends_with(streamed) {
        url.set_path(&format!("{}{unary}", &path[..path.len() - streamed.len()]));
    }
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "alt")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if stream || !others.is_empty() {
        let mut query = url.query_pairs_mut();
        for (k, v) in &others {
            query.append_pair(k, v);
        }
        if stream {
            query.append_pair("alt", "sse");
        }
    }
    Ok(url.into())
}

fn request_body(request: &ChatRequest) -> Result<Value, LlmError> {
    let mut body = Map::new();
    let mut contents = Vec::with_capacity(request.messages.len());
    for (at, message) in request.messages.iter().enumerate() {
        let mut parts = Vec::with_capacity(message.content.len());
        for part in &message.content {
            parts.push(match part {
                ContentPart::Text(text) => json!({"text": text}),
                ContentPart::Image(ImageSource::Base64 { media_type, data }) => {
                    json!({"inline_data": {"mime_type": media_type, "data": data}})
                }
                ContentPart::Image(ImageSource::Url(_)) => {
                    return Err(LlmError::unsupported("image_url with a remote URL", VENDOR));
                }
                ContentPart::ToolUse {
                    name, arguments, ..
                } => json!({"functionCall": {"name": name, "args": arguments_object(arguments)?}}),
                ContentPart::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    let name = tool_name_for(&request.messages, at, tool_use_id).ok_or_else(|| {
                        let mut err = LlmError::invalid_request(format!(
                            "tool result `{tool_use_id}` answers no earlier tool call; gemini needs the function name"
                        ));
                        err.param = Some("tool_call_id".to_owned());
                        err
                    })?;
                    let text = tool_result_text(content, VENDOR)?;
                    let response = match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Object(object)) if !is_error => Value::Object(object),
                        _ if *is_error => json!({"error": text}),
                        _ => json!({"result": text}),
                    };
                    json!({"functionResponse": {"name": name, "response": response}})
                }
            });
        }
        let role = match message.role {
            Role::Assistant => "model",
            Role::User => "user",
        };
        contents.push(json!({"role": role, "parts": parts}));
    }
    body.insert("contents".to_owned(), Value::Array(contents));
    if let Some(system) = &request.system {
        body.insert(
            "system_instruction".to_owned(),
            json!({"parts": [{"text": system}]}),
        );
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration = Map::new();
                declaration.insert("name".to_owned(), Value::String(tool.name.clone()));
                put(&mut declaration, "description", tool.description.clone());
                if tool.parameters.as_object().is_some_and(|p| !p.is_empty()) {
                    declaration.insert("parametersJsonSchema".to_owned(), tool.parameters.clone());
                }
                Value::Object(declaration)
            })
            .collect();
        body.insert(
            "tools".to_owned(),
            json!([{"functionDeclarations": declarations}]),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
        };
        body.insert(
            "toolConfig".to_owned(),
            json!({"functionCallingConfig": config}),
        );
    }
    let mut config = Map::new();
    put(&mut config, "candidateCount", request.n.map(u64::from));
    put(&mut config, "maxOutputTokens", request.max_tokens);
    if !request.stop.is_empty() {
        config.insert("stopSequences".to_owned(), json!(request.stop));
    }
    put(&mut config, "temperature", request.temperature);
    put(&mut config, "topK", request.top_k);
    put(&mut config, "topP", request.top_p);
    put(&mut config, "seed", request.seed);
    put(&mut config, "presencePenalty", request.presence_penalty);
    put(&mut config, "frequencyPenalty", request.frequency_penalty);
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            config.insert("responseJsonSchema".to_owned(), schema.clone());
        }
        _ => {}
    }
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(Value::Object(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<UsageMetadata>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<GeminiError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    content: Option<Content>,
    finish_reason: Option<String>,
    index: Option<u32>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Part {
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    id: Option<String>,
    name: String,
    args: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
}

impl UsageMetadata {
    fn usage(&self) -> TokenUsage {
        let input = match (self.prompt_token_count, self.tool_use_prompt_token_count) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_tokens: self.cached_content_token_count,
            cache_creation_tokens: None,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GeminiError,
}

#[derive(Deserialize)]
struct GeminiError {
    code: Option<u16>,
    #[serde(default)]
    message: String,
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

impl GeminiError {
    fn into_error(self, status: StatusCode, headers: &HeaderMap) -> LlmError {
        // Errors inside a 200 stream carry their own code.
        let status = if status.is_success() || status == StatusCode::BAD_GATEWAY {
            self.code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(status)
        } else {
            status
        };
        let message = (!self.message.is_empty()).then_some(self.message);
        let mut error = upstream_error(status, headers, message);
        // Gemini answers a bad key with 400 INVALID_ARGUMENT; clients
        // expect an authentication error.
        let bad_key = self
            .details
            .iter()
            .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"));
        let kind = match self.status.as_deref() {
            _ if bad_key => Some((StatusCode::UNAUTHORIZED, ErrorKind::Authentication)),
            Some("UNAUTHENTICATED") => Some((StatusCode::UNAUTHORIZED, ErrorKind::Authentication)),
            Some("PERMISSION_DENIED") => Some((StatusCode::FORBIDDEN, ErrorKind::Permission)),
            Some("RESOURCE_EXHAUSTED") => {
                Some((StatusCode::TOO_MANY_REQUESTS, ErrorKind::RateLimit))
            }
            _ => None,
        };
        if let Some((status, kind)) = kind {
            error.status = status;
            error.kind = kind;
        }
        if let Some(code) = self.status {
            error.code = Some(code);
        }
        error
    }
}

/// Reads `streamGenerateContent?alt=sse`.
#[derive(Default)]
struct GeminiStream {
    sse: Option<SseJson>,
    started: bool,
    finished: bool,
    /// Tool calls seen so far, per choice.
    calls: Vec<u32>,
}

impl GeminiStream {
    fn sse(&mut self) -> &mut SseJson {
        self.sse.get_or_insert_with(SseJson::new)
    }

    fn on_event(&mut self, answer: GenerateResponse, out: &mut Vec<StreamEvent>) {
        if let Some(error) = answer.error {
            let error = error.into_error(StatusCode::BAD_GATEWAY, &HeaderMap::new());
            self.sse().fail(error, out);
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: answer.response_id.clone(),
                model: answer.model_version.clone(),
            });
        }
        for (position, candidate) in answer.candidates.into_iter().enumerate() {
            let choice = candidate.index.unwrap_or(position as u32);
            let slot = choice as usize;
            if self.calls.len() <= slot {
                self.calls.resize(slot + 1, 0);
            }
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                if part.thought {
                    continue;
                }
                if let Some(text) = part.text
                    && !text.is_empty()
                {
                    out.push(StreamEvent::TextDelta { choice, text });
                }
                if let Some(call) = part.function_call {
                    let index = self.calls[slot];
                    self.calls[slot] += 1;
                    out.push(StreamEvent::ToolCallStart {
                        choice,
                        index,
                        id: call.id.unwrap_or_else(|| call_id(choice, index)),
                        name: call.name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        choice,
                        index,
                        arguments: call.args.map_or_else(|| "{}".to_owned(), |a| a.to_string()),
                    });
                }
            }
            if let Some(reason) = candidate.finish_reason {
                self.finished = true;
                out.push(StreamEvent::Finish {
                    choice,
                    reason: finish_reason(&reason, self.calls[slot] > 0),
                });
            }
        }
        if let Some(feedback) = answer.prompt_feedback
            && feedback.block_reason.is_some()
            && !self.finished
        {
            self.finished = true;
            out.push(StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ContentFilter,
            });
        }
        if let Some(usage) = answer.usage_metadata {
            out.push(StreamEvent::Usage(usage.usage()));
        }
    }
}

impl StreamDecoder for GeminiStream {
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
    use crate::ir::{Message, Tool};

    fn settings() -> ProviderSettings {
        let mut settings = ProviderSettings::new(
            "gem",
            Gemini.default_endpoint("gemini-3.5-flash", false),
            "gemini-3.5-flash",
            Secret::new("AIza-test"),
        );
        settings.endpoint_configured = false;
        settings
    }

    fn body(request: &UpstreamRequest) -> Value {
        serde_json::from_slice(request.body()).unwrap()
    }

    #[test]
    fn builds_a_request_with_system_tools_images_and_config() {
        let mut chat = ChatRequest {
            system: Some("Be brief.".into()),
            max_tokens: Some(64),
            temperature: Some(0.2),
            top_k: Some(40),
            n: Some(2),
            stop: vec!["END".into()],
            response_format: Some(ResponseFormat::JsonObject),
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            ..ChatRequest::default()
        };
        chat.tools.push(Tool::new(
            "get_weather",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![
                ContentPart::text("Weather in Paris?"),
                ContentPart::Image(ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0K".into(),
                }),
            ],
        ));
        chat.messages.push(Message::new(
            Role::Assistant,
            vec![ContentPart::ToolUse {
                id: "call_0".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::ToolResult {
                tool_use_id: "call_0".into(),
                content: vec![ContentPart::text(r#"{"temp_c":21}"#)],
                is_error: false,
            }],
        ));
        Gemini.check_request(&chat).unwrap();
        let request = Gemini.build_request(&chat, &settings()).unwrap();
        assert_eq!(
            request.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-3.5-flash:generateContent"
        );
        assert_eq!(request.headers()["x-goog-api-key"], "AIza-test");
        assert_eq!(
            body(&request),
            json!({
                "contents": [
                    {"role": "user", "parts": [
                        {"text": "Weather in Paris?"},
                        {"inline_data": {"mime_type": "image/png", "data": "iVBORw0K"}}]},
                    {"role": "model", "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"temp_c": 21}}}]}
                ],
                "system_instruction": {"parts": [{"text": "Be brief."}]},
                "tools": [{"functionDeclarations": [{"name": "get_weather",
                    "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
                "generationConfig": {"candidateCount": 2, "maxOutputTokens": 64, "stopSequences": ["END"],
                    "temperature": 0.2, "topK": 40, "responseMimeType": "application/json"}
            })
        );
    }

    #[test]
    fn the_client_model_and_streams_pick_the_url() {
        let mut settings = settings();
        settings.model_configured = false;
        let mut chat = ChatRequest {
            model: Some("gemini-2.5-pro".into()),
            temperature: Some(1.0),
            top_p: Some(0.9),
            stream: true,
            ..ChatRequest::default()
        };
        chat.messages.push(Message::user("hi"));
        let request = Gemini.build_request(&chat, &settings).unwrap();
        assert_eq!(
            request.uri(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            body(&request)["generationConfig"],
            json!({"temperature": 1.0, "topP": 0.9})
        );
    }

    #[test]
    fn the_model_is_read_from_a_configured_url() {
        assert_eq!(
            Gemini.model_from_endpoint(
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
            ),
            Some("gemini-2.5-flash".into())
        );
        assert_eq!(Gemini.model_from_endpoint("http://h/v1/chat"), None);
    }

    #[test]
    fn configured_endpoints_follow_the_stream_flag_and_keep_a_key_param() {
        assert_eq!(
            configured_url("http://127.0.0.1:9/v1beta/models/m:generateContent", true).unwrap(),
            "http://127.0.0.1:9/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            configured_url(
                "http://h/v1beta/models/m:streamGenerateContent?alt=sse&key=k",
                false
            )
            .unwrap(),
            "http://h/v1beta/models/m:generateContent?key=k"
        );
        let mut settings = settings();
        settings.endpoint = "http://h/v1beta/models/m:generateContent?key=abc".into();
        settings.endpoint_configured = true;
        let mut chat = ChatRequest::default();
        chat.messages.push(Message::user("hi"));
        let request = Gemini.build_request(&chat, &settings).unwrap();
        assert!(request.headers().get("x-goog-api-key").is_none());
        assert_eq!(
            request.uri(),
            "http://h/v1beta/models/m:generateContent?key=abc"
        );
    }

    #[test]
    fn what_gemini_cannot_express_is_refused() {
        let chat = ChatRequest {
            logprobs: true,
            ..ChatRequest::default()
        };
        assert_eq!(
            Gemini.check_request(&chat).unwrap_err().param.as_deref(),
            Some("logprobs")
        );
        let mut chat = ChatRequest::default();
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::Image(ImageSource::Url(
                "https://x/cat.png".into(),
            ))],
        ));
        let err = Gemini.build_request(&chat, &settings()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let mut chat = ChatRequest::default();
        chat.messages.push(Message::new(
            Role::User,
            vec![ContentPart::ToolResult {
                tool_use_id: "nowhere".into(),
                content: vec![ContentPart::text("1")],
                is_error: false,
            }],
        ));
        let err = Gemini.build_request(&chat, &settings()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tool_call_id"));
    }

    #[test]
    fn parses_text_tool_calls_and_usage() {
        let response = Gemini
            .parse_response(
                br#"{"candidates":[{"content":{"role":"model","parts":[
                    {"text":"thinking...","thought":true},
                    {"text":"Let me check."},
                    {"functionCall":{"name":"get_weather","args":{"city":"Paris"}}}]},
                    "finishReason":"STOP","index":0}],
                  "usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,
                    "cachedContentTokenCount":4,"thoughtsTokenCount":7,"totalTokenCount":22},
                  "modelVersion":"gemini-3.5-flash","responseId":"r-1"}"#,
            )
            .unwrap();
        assert_eq!(response.id.as_deref(), Some("r-1"));
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.text(), "Let me check.");
        assert_eq!(
            choice.content[1],
            ContentPart::ToolUse {
                id: "call_0".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }
        );
        assert_eq!(response.usage.input_tokens, Some(10));
        assert_eq!(response.usage.output_tokens, Some(12));
        assert_eq!(response.usage.cached_tokens, Some(4));
        assert_eq!(response.usage.reasoning_tokens, Some(7));
    }

    #[test]
    fn errors_keep_status_and_code_and_a_bad_key_is_401() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let err = Gemini.parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.kind, ErrorKind::RateLimit);
        assert_eq!(err.retry_after.as_deref(), Some("7"));
        assert_eq!(err.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        let err = Gemini.parse_error(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT",
                "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
        );
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let err = Gemini.parse_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            b"<html>",
        );
        assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    fn decode(stream: &str) -> Vec<StreamEvent> {
        let mut decoder = Gemini.stream_decoder();
        let mut out = Vec::new();
        decoder.decode(stream.as_bytes(), &mut out);
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn streams_text_calls_finish_and_usage() {
        let events = decode(concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"modelVersion\":\"gemini-3.5-flash\",\"responseId\":\"r1\"}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\"a\":1}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],",
            "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2}}\r\n\r\n"
        ));
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: Some("r1".into()),
                    model: Some("gemini-3.5-flash".into())
                },
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "Hel".into()
                },
                StreamEvent::ToolCallStart {
                    choice: 0,
                    index: 0,
                    id: "call_0".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: r#"{"a":1}"#.into()
                },
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Usage(TokenUsage::new(3, 2)),
            ]
        );
    }

    #[test]
    fn a_cut_or_failed_stream_ends_in_an_error() {
        let events =
            decode("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]}}]}\n\n");
        assert!(matches!(events.last(), Some(StreamEvent::Error(_))));
        let events = decode(
            "data: {\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}\n\n",
        );
        match events.as_slice() {
            [StreamEvent::Error(err)] => assert_eq!(err.status, StatusCode::SERVICE_UNAVAILABLE),
            other => panic!("{other:?}"),
        }
        let events = decode("data: {not json\n\n");
        assert!(matches!(events.as_slice(), [StreamEvent::Error(_)]));
    }
}
