//! Amazon Bedrock Converse (`/model/<id>/converse`) and ConverseStream
//! (`/model/<id>/converse-stream`, AWS event-stream framing).
//!
//! Credentials (`credentials`, one string):
//! - `<access key id>:<secret access key>` or
//!   `<access key id>:<secret access key>:<session token>`: the request is
//!   signed with AWS Signature Version 4 (service `bedrock`);
//! - anything without a `:` is a Bedrock API key, sent as
//!   `Authorization: Bearer` (what KrakenD's `bedrock-api-key-…` examples
//!   hold).
//!
//! The signing region is the one in the endpoint's host
//! (`bedrock-runtime.<region>.amazonaws.com`, FIPS and VPC endpoint names
//! included); for any other host (a proxy, a mock) it is `AWS_REGION`, else
//! `AWS_DEFAULT_REGION`, else `us-east-1`, read once when the provider is
//! loaded.

mod eventstream;
mod sigv4;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use switchboard_core::ConfigError;

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::ir::{
    ChatRequest, ChatResponse, Choice, ContentPart, ErrorKind, FinishReason, ImageSource, LlmError,
    Role, StreamEvent, TokenUsage, ToolChoice,
};
use crate::vendors::wire::{self, MAX_STREAM_EVENT, arguments_object};

pub(crate) use eventstream::{EventStreamDecoder, EventStreamError, Frame};
pub(crate) use sigv4::{AwsCredentials, region_from_host, sign_request};

const VENDOR: &str = "bedrock";
const DEFAULT_REGION: &str = "eu-west-1";

/// The variables Bedrock takes; KrakenD refuses any other.
const VARIABLES: &[&str] = &[
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_k",
    "top_p",
    "extra_payload",
];

/// What Converse cannot express.
const UNSUPPORTED: &[Feature] = &[
    Feature::MultipleChoices,
    Feature::Seed,
    Feature::Logprobs,
    Feature::JsonMode,
    Feature::JsonSchema,
    Feature::Penalties,
    Feature::ParallelToolCalls,
    Feature::Metadata,
    Feature::User,
];

/// Bedrock's only API. The fallback signing region is read here, at load.
pub fn select(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_owned());
    Ok(Arc::new(Bedrock::new(region)))
}

/// The Bedrock Converse adapter.
#[derive(Clone, Debug)]
pub struct Bedrock {
    fallback_region: String,
}

impl Bedrock {
    /// An adapter that signs for `fallback_region` when the endpoint's host
    /// names no region.
    pub fn new(fallback_region: impl Into<String>) -> Self {
        Self {
            fallback_region: fallback_region.into(),
        }
    }
}

/// How requests are authenticated, read from `credentials`.
enum Auth<'a> {
    None,
    ApiKey(&'a str),
    SigV4(AwsCredentials),
}

fn auth(credentials: &str) -> Result<Auth<'_>, LlmError> {
    if credentials.is_empty() {
        return Ok(Auth::None);
    }
    if !credentials.contains(':') {
        return Ok(Auth::ApiKey(credentials));
    }
    let mut parts = credentials.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(secret), token) if !id.is_empty() && !secret.is_empty() => {
            Ok(Auth::SigV4(AwsCredentials {
                access_key_id: id.to_owned(),
                secret_access_key: secret.to_owned(),
                session_token: token.filter(|t| !t.is_empty()).map(str::to_owned),
            }))
        }
        // Never echo the credentials themselves.
        _ => Err(LlmError::invalid_request(
            "the bedrock credentials must be an API key or \
             `<access key id>:<secret access key>[:<session token>]`",
        )),
    }
}

impl VendorAdapter for Bedrock {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn default_endpoint(&self, model: &str, streaming: bool) -> String {
        // The model id goes in one path segment; `:` is escaped as the AWS
        // SDKs do.
        let model: String = model
            .chars()
            .map(|c| match c {
                ':' => "%3A".to_owned(),
                '/' => "%2F".to_owned(),
                c => c.to_string(),
            })
            .collect();
        let action = if streaming {
            "converse-stream"
        } else {
            "converse"
        };
        format!("https://bedrock-runtime.{DEFAULT_REGION}.amazonaws.com/model/{model}/{action}")
    }

    fn default_model(&self) -> &'static str {
        "eu.amazon.nova-lite-v1:0"
    }

    fn check_variables(&self, variables: &Map<String, Value>) -> Result<(), ConfigError> {
        if let Some(key) = variables.keys().find(|k| !VARIABLES.contains(&k.as_str())) {
            return Err(ConfigError::new(
                key.clone(),
                format!(
                    "unknown bedrock variable; bedrock takes only {}",
                    VARIABLES.join(", ")
                ),
            ));
        }
        crate::config::check_common_variables(variables)
    }

    fn model_from_endpoint(&self, endpoint: &str) -> Option<String> {
        let path = super::endpoint_path(endpoint);
        let (_, rest) = path.rsplit_once("/model/")?;
        let (model, _) = rest.split_once('/')?;
        let model = percent_encoding::percent_decode_str(model)
            .decode_utf8()
            .ok()?;
        (!model.is_empty()).then(|| model.into_owned())
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, UNSUPPORTED, VENDOR)
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let model = provider.model_for(request);
        let body = wire::to_body(&request_body(request, model)?)?;
        let url = if provider.endpoint_configured {
            configured_url(&provider.endpoint, request.stream)
        } else {
            self.default_endpoint(model, request.stream)
        };
        let accept = if request.stream {
            "application/vnd.amazon.eventstream"
        } else {
            "application/json"
        };
        let mut upstream = http::Request::post(&url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body)
            .map_err(|_| LlmError::bad_upstream("the bedrock endpoint is not a valid URL"))?;
        match auth(provider.credentials.expose())? {
            Auth::None => {}
            Auth::ApiKey(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    LlmError::bad_upstream("the bedrock credentials are not a valid header")
                })?;
                value.set_sensitive(true);
                upstream.headers_mut().insert(AUTHORIZATION, value);
            }
            Auth::SigV4(credentials) => {
                let region = upstream
                    .uri()
                    .host()
                    .and_then(region_from_host)
                    .unwrap_or(&self.fallback_region)
                    .to_owned();
                let body = upstream.body().clone();
                sign_request(
                    &mut upstream,
                    &body,
                    &credentials,
                    &region,
                    "bedrock",
                    SystemTime::now(),
                )
                .map_err(|err| LlmError::bad_upstream(err.to_string()))?;
                for name in [AUTHORIZATION.as_str(), "x-amz-security-token"] {
                    if let Some(value) = upstream.headers_mut().get_mut(name) {
                        value.set_sensitive(true);
                    }
                }
            }
        }
        Ok(upstream)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        let answer: ConverseResponse = wire::parse_json(VENDOR, body)?;
        let Some(output) = answer.output else {
            let message = serde_json::from_slice::<AwsError>(body)
                .ok()
                .and_then(|e| e.message.or(e.message_upper))
                .map_or_else(String::new, |m| format!(": {m}"));
            return Err(LlmError::bad_upstream(format!(
                "{VENDOR} answered without an `output`{message}"
            )));
        };
        let mut content = Vec::new();
        let mut called_tools = false;
        for block in output.message.map(|m| m.content).unwrap_or_default() {
            if let Some(text) = block.text {
                match content.last_mut() {
                    Some(ContentPart::Text(last)) => last.push_str(&text),
                    _ => content.push(ContentPart::Text(text)),
                }
            }
            if let Some(tool) = block.tool_use {
                called_tools = true;
                content.push(ContentPart::ToolUse {
                    id: tool.tool_use_id,
                    name: tool.name,
                    arguments: tool
                        .input
                        .map_or_else(|| "{}".to_owned(), |v| v.to_string()),
                });
            }
        }
        let reason = answer
            .stop_reason
            .as_deref()
            .map(|r| stop_reason(r, called_tools));
        Ok(ChatResponse {
            id: None,
            model: None,
            created: None,
            choices: vec![Choice::new(0, content, reason)],
            usage: answer.usage.map(|u| u.usage()).unwrap_or_default(),
        })
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let message = serde_json::from_slice::<AwsError>(body)
            .ok()
            .and_then(|e| e.message.or(e.message_upper));
        // `x-amzn-ErrorType: ThrottlingException:http://internal.amazon.com/…`
        let code = headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_owned());
        let mut error = upstream_error(status, headers, message);
        if let Some(code) = code {
            apply_exception(&mut error, &code);
            error.code = Some(code);
        }
        error
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ConverseStream::default())
    }
}

/// Adjusts status and kind where AWS's own differ from what clients expect
/// (a bad signature is 403 at AWS, an authentication error for clients).
fn apply_exception(error: &mut LlmError, exception: &str) {
    let exception = exception.to_ascii_lowercase();
    let (status, kind) = match exception.trim_end_matches("exception") {
        "unrecognizedclient"
        | "invalidsignature"
        | "incompletesignature"
        | "expiredtoken"
        | "missingauthenticationtoken" => (StatusCode::UNAUTHORIZED, ErrorKind::Authentication),
        "accessdenied" => (StatusCode::FORBIDDEN, ErrorKind::Permission),
        "resourcenotfound" => (StatusCode::NOT_FOUND, ErrorKind::NotFound),
        "throttling" | "servicequotaexceeded" => {
            (StatusCode::TOO_MANY_REQUESTS, ErrorKind::RateLimit)
        }
        "validation" => (StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest),
        "modeltimeout" => (StatusCode::GATEWAY_TIMEOUT, ErrorKind::Timeout),
        "serviceunavailable" | "modelnotready" => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorKind::Overloaded)
        }
        "internalserver" => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Api),
        "modelstreamerror" | "modelerror" => (StatusCode::BAD_GATEWAY, ErrorKind::Api),
        _ => return,
    };
    error.status = status;
    error.kind = kind;
}

/// A configured endpoint, switched between `/converse` and
/// `/converse-stream` to match what the client asked for.
fn configured_url(endpoint: &str, stream: bool) -> String {
    let (path, query) = match endpoint.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (endpoint, None),
    };
    let path = if stream && path.ends_with("/converse") {
        format!("{path}-stream")
    } else if !stream && path.ends_with("/converse-stream") {
        path.trim_end_matches("-stream").to_owned()
    } else {
        path.to_owned()
    };
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

fn image_block(media_type: &str, data: &str) -> Result<Value, LlmError> {
    let format = match media_type {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => {
            return Err(LlmError::unsupported(
                "images other than png, jpeg, gif, webp",
                VENDOR,
            ));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn request_body(request: &ChatRequest, model: &str) -> Result<Value, LlmError> {
    let mut body = Map::new();
    let mut messages = Vec::with_capacity(request.messages.len());
    let mut has_tool_blocks = false;
    for message in &request.messages {
        let mut blocks = Vec::with_capacity(message.content.len());
        for part in &message.content {
            blocks.push(match part {
                ContentPart::Text(text) => json!({"text": text}),
                ContentPart::Image(ImageSource::Base64 { media_type, data }) => {
                    image_block(media_type, data)?
                }
                ContentPart::Image(ImageSource::Url(_)) => {
                    return Err(LlmError::unsupported("image_url with a remote URL", VENDOR));
                }
                ContentPart::ToolUse {
                    id,
                    name,
                    arguments,
                } => {
                    has_tool_blocks = true;
                    json!({"toolUse": {"toolUseId": id, "name": name, "input": arguments_object(arguments)?}})
                }
                ContentPart::ToolResult {
                    tool_use_id,
                    content,
                    is_error,
                } => {
                    has_tool_blocks = true;
                    let mut parts = Vec::with_capacity(content.len());
                    for piece in content {
                        parts.push(match piece {
                            ContentPart::Text(text) => json!({"text": text}),
                            ContentPart::Image(ImageSource::Base64 { media_type, data }) => {
                                image_block(media_type, data)?
                            }
                            _ => {
                                return Err(LlmError::unsupported(
                                    "tool result parts other than text and inline images",
                                    VENDOR,
                                ));
                            }
                        });
                    }
                    let mut result = json!({"toolUseId": tool_use_id, "content": parts});
                    if *is_error && let Some(object) = result.as_object_mut() {
                        object.insert("status".to_owned(), json!("error"));
                    }
                    json!({"toolResult": result})
                }
            });
        }
        let role = match message.role {
            Role::Assistant => "assistant",
            Role::User => "user",
        };
        messages.push(json!({"role": role, "content": blocks}));
    }
    body.insert("messages".to_owned(), Value::Array(messages));
    if let Some(system) = &request.system {
        body.insert("system".to_owned(), json!([{"text": system}]));
    }
    let mut inference = Map::new();
    wire::put(&mut inference, "maxTokens", request.max_tokens);
    wire::put(&mut inference, "temperature", request.temperature);
    wire::put(&mut inference, "topP", request.top_p);
    if !request.stop.is_empty() {
        inference.insert("stopSequences".to_owned(), json!(request.stop));
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".to_owned(), Value::Object(inference));
    }
    if let Some(top_k) = request.top_k {
        // Converse has no top-k of its own; each model family names it.
        let fields = if model.contains("amazon.nova") {
            json!({"inferenceConfig": {"topK": top_k}})
        } else {
            json!({"top_k": top_k})
        };
        body.insert("additionalModelRequestFields".to_owned(), fields);
    }
    let wants_no_tools = matches!(request.tool_choice, Some(ToolChoice::None));
    if wants_no_tools && has_tool_blocks {
        // Without toolConfig Bedrock refuses a conversation holding tool
        // blocks, and Converse has no "none" choice.
        return Err(LlmError::unsupported(
            "tool_choice \"none\" in a conversation with tool calls",
            VENDOR,
        ));
    }
    if (!request.tools.is_empty() || has_tool_blocks) && !wants_no_tools {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut spec = Map::new();
                spec.insert("name".to_owned(), json!(tool.name));
                wire::put(&mut spec, "description", tool.description.clone());
                let schema = if tool.parameters.is_object() {
                    tool.parameters.clone()
                } else {
                    json!({"type": "object", "properties": {}})
                };
                spec.insert("inputSchema".to_owned(), json!({"json": schema}));
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = Map::new();
        config.insert("tools".to_owned(), Value::Array(tools));
        match &request.tool_choice {
            Some(ToolChoice::Required) => {
                config.insert("toolChoice".to_owned(), json!({"any": {}}));
            }
            Some(ToolChoice::Tool(name)) => {
                config.insert("toolChoice".to_owned(), json!({"tool": {"name": name}}));
            }
            Some(ToolChoice::Auto) => {
                config.insert("toolChoice".to_owned(), json!({"auto": {}}));
            }
            _ => {}
        }
        body.insert("toolConfig".to_owned(), Value::Object(config));
    }
    for (key, value) in &request.extra {
        body.insert(key.clone(), value.clone());
    }
    Ok(Value::Object(body))
}

fn stop_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" if called_tools => FinishReason::ToolCalls,
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConverseResponse {
    /// Absent when AWS answers an error with a 200 (`{"message": ...}`).
    output: Option<Output>,
    stop_reason: Option<String>,
    usage: Option<BedrockUsage>,
}

#[derive(Default, Deserialize)]
struct Output {
    message: Option<OutputMessage>,
}

#[derive(Deserialize)]
struct OutputMessage {
    #[serde(default)]
    content: Vec<Block>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Block {
    text: Option<String>,
    tool_use: Option<ToolUseBlock>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseBlock {
    tool_use_id: String,
    name: String,
    input: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BedrockUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_write_input_tokens: Option<u64>,
}

impl BedrockUsage {
    /// Bedrock counts cache reads and writes apart from `inputTokens`; the
    /// shared input count includes them.
    fn usage(&self) -> TokenUsage {
        let input = self.input_tokens.map(|n| {
            n + self.cache_read_input_tokens.unwrap_or(0)
                + self.cache_write_input_tokens.unwrap_or(0)
        });
        TokenUsage {
            input_tokens: input,
            output_tokens: self.output_tokens,
            cached_tokens: self.cache_read_input_tokens,
            cache_creation_tokens: self.cache_write_input_tokens,
            reasoning_tokens: None,
        }
    }
}

#[derive(Deserialize)]
struct AwsError {
    message: Option<String>,
    #[serde(rename = "Message")]
    message_upper: Option<String>,
}

/// Reads ConverseStream's event-stream frames.
struct ConverseStream {
    decoder: EventStreamDecoder,
    started: bool,
    finished: bool,
    failed: bool,
    called_tools: bool,
    /// Content block index -> tool call index.
    tool_blocks: HashMap<u64, u32>,
}

impl Default for ConverseStream {
    fn default() -> Self {
        Self {
            decoder: EventStreamDecoder::new(MAX_STREAM_EVENT),
            started: false,
            finished: false,
            failed: false,
            called_tools: false,
            tool_blocks: HashMap::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamPayload {
    content_block_index: Option<u64>,
    start: Option<BlockStart>,
    delta: Option<BlockDelta>,
    stop_reason: Option<String>,
    usage: Option<BedrockUsage>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStart {
    tool_use: Option<ToolStart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolStart {
    tool_use_id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDelta {
    text: Option<String>,
    tool_use: Option<ToolDelta>,
}

#[derive(Deserialize)]
struct ToolDelta {
    #[serde(default)]
    input: String,
}

impl ConverseStream {
    fn fail(&mut self, error: LlmError, out: &mut Vec<StreamEvent>) {
        if !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(error));
        }
    }

    fn on_frame(&mut self, frame: Frame, out: &mut Vec<StreamEvent>) {
        let payload: StreamPayload = match serde_json::from_slice(&frame.payload) {
            Ok(payload) => payload,
            Err(err) => {
                self.fail(
                    LlmError::bad_upstream(format!("bedrock streamed unreadable JSON: {err}")),
                    out,
                );
                return;
            }
        };
        let kind = frame.kind.unwrap_or_default();
        if frame.message_type != "event" {
            let message = payload
                .message
                .or(frame.error_message)
                .unwrap_or_else(|| format!("bedrock stream failed: {kind}"));
            let mut error = LlmError::bad_upstream(message);
            apply_exception(&mut error, &kind);
            if !kind.is_empty() {
                error.code = Some(kind);
            }
            self.fail(error, out);
            return;
        }
        match kind.as_str() {
            "messageStart" if !self.started => {
                self.started = true;
                out.push(StreamEvent::Start {
                    id: None,
                    model: None,
                });
            }
            "contentBlockStart" => {
                if let Some(tool) = payload.start.and_then(|s| s.tool_use) {
                    let index = self.tool_blocks.len() as u32;
                    self.tool_blocks
                        .insert(payload.content_block_index.unwrap_or(0), index);
                    self.called_tools = true;
                    out.push(StreamEvent::ToolCallStart {
                        choice: 0,
                        index,
                        id: tool.tool_use_id,
                        name: tool.name,
                    });
                }
            }
            "contentBlockDelta" => match payload.delta {
                Some(BlockDelta {
                    text: Some(text), ..
                }) => out.push(StreamEvent::TextDelta { choice: 0, text }),
                Some(BlockDelta {
                    tool_use: Some(tool),
                    ..
                }) => {
                    let block = payload.content_block_index.unwrap_or(0);
                    match self.tool_blocks.get(&block) {
                        Some(&index) => out.push(StreamEvent::ToolCallDelta {
                            choice: 0,
                            index,
                            arguments: tool.input,
                        }),
                        None => self.fail(
                            LlmError::bad_upstream(
                                "bedrock streamed tool input for a block it never started",
                            ),
                            out,
                        ),
                    }
                }
                _ => {}
            },
            "messageStop" => {
                self.finished = true;
                let reason = payload.stop_reason.as_deref().unwrap_or("end_turn");
                out.push(StreamEvent::Finish {
                    choice: 0,
                    reason: stop_reason(reason, self.called_tools),
                });
            }
            "metadata" => {
                if let Some(usage) = payload.usage {
                    out.push(StreamEvent::Usage(usage.usage()));
                }
            }
            _ => {}
        }
    }
}

impl StreamDecoder for ConverseStream {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        match self.decoder.decode(chunk) {
            Ok(frames) => {
                for frame in frames {
                    if self.failed {
                        break;
                    }
                    self.on_frame(frame, out);
                }
            }
            Err(err) => self.fail(stream_error(&err), out),
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if self.failed {
            return;
        }
        if let Err(err) = self.decoder.finish() {
            self.fail(stream_error(&err), out);
        } else if !self.finished {
            self.fail(wire::cut_stream(VENDOR), out);
        }
    }
}

fn stream_error(err: &EventStreamError) -> LlmError {
    LlmError::bad_upstream(format!("unreadable bedrock stream: {err}"))
}

/// Encodes a ConverseStream event frame (tests, benches, mock vendors).
#[cfg(test)]
pub(crate) fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    eventstream::encode_frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Secret;
    use crate::ir::{Message, Tool};

    fn settings(credentials: &str) -> ProviderSettings {
        let mut settings = ProviderSettings::new(
            "br",
            Bedrock::new("us-east-1").default_endpoint("eu.amazon.nova-lite-v1:0", false),
            "eu.amazon.nova-lite-v1:0",
            Secret::new(credentials),
        );
        settings.endpoint_configured = false;
        settings
    }

    fn chat() -> ChatRequest {
        let mut chat = ChatRequest {
            system: Some("Be brief.".into()),
            ..ChatRequest::default()
        };
        chat.messages.push(Message::user("Hi"));
        chat
    }

    #[test]
    fn signs_with_sigv4_for_the_region_in_the_host() {
        let adapter = Bedrock::new("us-east-1");
        let request = adapter
            .build_request(&chat(), &settings("AKIDEXAMPLE:secret/key+1:SESSION"))
            .unwrap();
        assert_eq!(
            request.uri(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/eu.amazon.nova-lite-v1%3A0/converse"
        );
        let auth = request.headers()[AUTHORIZATION].to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
        assert!(!auth.contains("secret/key"));
        assert_eq!(request.headers()["x-amz-security-token"], "SESSION");
        assert!(request.headers().contains_key("x-amz-date"));
    }

    #[test]
    fn api_keys_are_bearer_tokens_and_bad_credentials_are_not_echoed() {
        let request = Bedrock::new("us-east-1")
            .build_request(&chat(), &settings("bedrock-api-key-abc"))
            .unwrap();
        assert_eq!(
            request.headers()[AUTHORIZATION],
            "Bearer bedrock-api-key-abc"
        );
        assert!(request.headers().get("x-amz-date").is_none());
        let err = Bedrock::new("us-east-1")
            .build_request(&chat(), &settings("AKID:"))
            .unwrap_err();
        assert!(!err.message.contains("AKID"));
    }

    #[test]
    fn builds_converse_bodies() {
        let mut chat = chat();
        chat.max_tokens = Some(50);
        chat.top_k = Some(5);
        chat.stop = vec!["STOP".into()];
        chat.tools.push(Tool::new("f", json!({"type": "object"})));
        chat.tool_choice = Some(ToolChoice::Required);
        chat.messages.push(Message::new(
            Role::Assistant,
            vec![ContentPart::ToolUse {
                id: "t1".into(),
                name: "f".into(),
                arguments: r#"{"x":1}"#.into(),
            }],
        ));
        chat.messages.push(Message::new(
            Role::User,
            vec![
                ContentPart::ToolResult {
                    tool_use_id: "t1".into(),
                    content: vec![ContentPart::text("boom")],
                    is_error: true,
                },
                ContentPart::Image(ImageSource::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/".into(),
                }),
            ],
        ));
        chat.temperature = Some(0.3);
        let request = Bedrock::new("us-east-1")
            .build_request(&chat, &settings("k"))
            .unwrap();
        let body: Value = serde_json::from_slice(request.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "messages": [
                    {"role": "user", "content": [{"text": "Hi"}]},
                    {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {"x": 1}}}]},
                    {"role": "user", "content": [
                        {"toolResult": {"toolUseId": "t1", "content": [{"text": "boom"}], "status": "error"}},
                        {"image": {"format": "jpeg", "source": {"bytes": "/9j/"}}}]}
                ],
                "system": [{"text": "Be brief."}],
                "inferenceConfig": {"maxTokens": 50, "temperature": 0.3, "stopSequences": ["STOP"]},
                "additionalModelRequestFields": {"inferenceConfig": {"topK": 5}},
                "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {"type": "object"}}}}],
                               "toolChoice": {"any": {}}}
            })
        );
    }

    #[test]
    fn the_model_is_read_from_a_configured_url() {
        let adapter = Bedrock::new("us-east-1");
        for url in [
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/eu.meta.llama3-2-1b-instruct-v1:0/converse",
            "https://bedrock-runtime.eu-west-1.amazonaws.com/model/eu.meta.llama3-2-1b-instruct-v1%3A0/converse-stream",
        ] {
            assert_eq!(
                adapter.model_from_endpoint(url).as_deref(),
                Some("eu.meta.llama3-2-1b-instruct-v1:0")
            );
        }
        assert_eq!(adapter.model_from_endpoint("http://h/converse"), None);
    }

    #[test]
    fn streams_switch_the_action_and_unknown_variables_are_refused() {
        assert_eq!(
            configured_url("http://127.0.0.1:1/model/m:0/converse", true),
            "http://127.0.0.1:1/model/m:0/converse-stream"
        );
        assert_eq!(
            configured_url("http://h/model/m/converse-stream", false),
            "http://h/model/m/converse"
        );
        let adapter = Bedrock::new("us-east-1");
        let ok: Map<String, Value> = serde_json::from_value(json!({"max_tokens": 5})).unwrap();
        adapter.check_variables(&ok).unwrap();
        let bad: Map<String, Value> = serde_json::from_value(json!({"model": "x"})).unwrap();
        assert_eq!(adapter.check_variables(&bad).unwrap_err().path, "model");
        let bad: Map<String, Value> = serde_json::from_value(json!({"seed": 1})).unwrap();
        assert!(adapter.check_variables(&bad).is_err());
        let err = adapter
            .check_request(&ChatRequest {
                seed: Some(3),
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("seed"));
    }

    #[test]
    fn an_answer_without_output_is_an_error_not_an_empty_success() {
        let err = Bedrock::new("us-east-1")
            .parse_response(
                br#"{"message": "The security token included in the request is invalid."}"#,
            )
            .unwrap_err();
        assert!(
            err.message.contains("without an `output`"),
            "{}",
            err.message
        );
        assert!(err.message.contains("security token"), "{}", err.message);
    }

    #[test]
    fn parses_responses_and_errors() {
        let response = Bedrock::new("us-east-1")
            .parse_response(
                br#"{"output":{"message":{"role":"assistant","content":[{"text":"Sure."},
                  {"toolUse":{"toolUseId":"tooluse_1","name":"f","input":{"a":"b"}}}]}},
                  "stopReason":"tool_use",
                  "usage":{"inputTokens":12,"outputTokens":8,"totalTokens":25,"cacheReadInputTokens":5},
                  "metrics":{"latencyMs":300}}"#,
            )
            .unwrap();
        let choice = &response.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.text(), "Sure.");
        assert_eq!(response.usage.input_tokens, Some(17));
        assert_eq!(response.usage.cached_tokens, Some(5));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static(
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        );
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let err = Bedrock::new("us-east-1").parse_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(err.kind, ErrorKind::RateLimit);
        assert_eq!(err.code.as_deref(), Some("ThrottlingException"));
        assert_eq!(err.retry_after.as_deref(), Some("3"));
        assert!(err.message.starts_with("Too many requests"));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amzn-errortype",
            HeaderValue::from_static("UnrecognizedClientException"),
        );
        let err = Bedrock::new("us-east-1").parse_error(
            StatusCode::FORBIDDEN,
            &headers,
            br#"{"Message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
    }

    fn decode(stream: &[u8]) -> Vec<StreamEvent> {
        let mut decoder = Bedrock::new("x").stream_decoder();
        let mut out = Vec::new();
        decoder.decode(stream, &mut out);
        decoder.finish(&mut out);
        out
    }

    #[test]
    fn decodes_converse_stream_events() {
        let mut stream = event_frame("messageStart", &json!({"role": "assistant", "p": "abc"}));
        stream.extend(event_frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ));
        stream.extend(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ));
        stream.extend(event_frame(
            "contentBlockStart",
            &json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "f"}}}),
        ));
        stream.extend(event_frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}}),
        ));
        stream.extend(event_frame(
            "contentBlockDelta",
            &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}),
        ));
        stream.extend(event_frame(
            "messageStop",
            &json!({"stopReason": "tool_use"}),
        ));
        stream.extend(event_frame(
            "metadata",
            &json!({"usage": {"inputTokens": 4, "outputTokens": 6, "totalTokens": 10}, "metrics": {"latencyMs": 1}}),
        ));
        let events = decode(&stream);
        assert_eq!(
            events,
            vec![
                StreamEvent::Start {
                    id: None,
                    model: None
                },
                StreamEvent::TextDelta {
                    choice: 0,
                    text: "Hi".into()
                },
                StreamEvent::ToolCallStart {
                    choice: 0,
                    index: 0,
                    id: "tu1".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: "{\"a\":".into()
                },
                StreamEvent::ToolCallDelta {
                    choice: 0,
                    index: 0,
                    arguments: "1}".into()
                },
                StreamEvent::Finish {
                    choice: 0,
                    reason: FinishReason::ToolCalls
                },
                StreamEvent::Usage(TokenUsage::new(4, 6)),
            ]
        );
        // Cut inside a frame, or before messageStop: an error, not a finish.
        let events = decode(&stream[..stream.len() - 3]);
        assert!(matches!(events.last(), Some(StreamEvent::Error(_))));
        let first = event_frame("messageStart", &json!({"role": "assistant"}));
        assert!(matches!(decode(&first).last(), Some(StreamEvent::Error(_))));
    }

    #[test]
    fn stream_exceptions_become_errors() {
        let mut stream = event_frame("messageStart", &json!({"role": "assistant"}));
        stream.extend(eventstream::encode_frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many tokens"}"#,
        ));
        let events = decode(&stream);
        match events.as_slice() {
            [StreamEvent::Start { .. }, StreamEvent::Error(err)] => {
                assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(err.message, "Too many tokens");
            }
            other => panic!("{other:?}"),
        }
    }
}
