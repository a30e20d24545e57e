//! Client formats: the API a client speaks to a unified endpoint, read into
//! the IR and written back from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};
use serde_json::{Value, json};
use switchboard_core::{Body, SHOULD_RETRY};

use crate::dialect::{anthropic, openai_chat};
use crate::ir::{ChatRequest, ChatResponse, ContentPart, LlmError, Message, StreamEvent};

/// The API a client speaks (`format` in the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientFormat {
    /// `format` unset: KrakenD's `{"instructions", "contents"}` body and
    /// `{"ai_gateway_response": [{"contents": [...]}], "usage": N}` answer;
    /// streams pass in the vendor's own format.
    Unified,
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ClientFormat {
    /// Reads a `format` value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            _ => None,
        }
    }

    /// Reads the client's request body.
    pub fn parse_request(self, body: &[u8]) -> Result<ChatRequest, LlmError> {
        match self {
            Self::Unified => parse_unified(body),
            Self::OpenAi => openai_chat::parse_request(body),
            Self::Anthropic => anthropic::parse_request(body),
        }
    }

    /// Writes a whole answer as the client's JSON body. `model` is what to
    /// report when the vendor named none.
    pub fn render_response(self, response: &ChatResponse, model: &str) -> Bytes {
        let model = response.model.as_deref().unwrap_or(model);
        let value = match self {
            Self::Unified => {
                let contents: Vec<Value> = response
                    .choices
                    .first()
                    .map(|c| {
                        c.content
                            .iter()
                            .filter_map(|p| match p {
                                ContentPart::Text(t) => Some(Value::String(t.clone())),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"ai_gateway_response": [{"contents": contents}], "usage": response.usage.total()})
            }
            Self::OpenAi => openai_chat::render_response(
                response,
                &openai_id(response.id.as_deref()),
                response.created.unwrap_or_else(now),
                model,
            ),
            Self::Anthropic => {
                anthropic::render_response(response, &anthropic_id(response.id.as_deref()), model)
            }
        };
        Bytes::from(value.to_string())
    }

    /// The error body in the client's shape.
    pub fn error_body(self, err: &LlmError) -> Value {
        match self {
            Self::Anthropic => anthropic::render_error(err),
            Self::Unified | Self::OpenAi => openai_chat::render_error(err),
        }
    }

    /// The error response: the client's shape, the status kept,
    /// `Retry-After` carried, `x-should-retry: false` on client mistakes.
    pub fn error_response(self, err: &LlmError) -> Response<Body> {
        let body = Bytes::from(self.error_body(err).to_string());
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = err.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(value) = err
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(RETRY_AFTER, value);
        }
        if err.status == StatusCode::BAD_REQUEST
            && err.code.as_deref() == Some("unsupported_parameter")
            || err.status == StatusCode::UNPROCESSABLE_ENTITY
        {
            headers.insert(SHOULD_RETRY, HeaderValue::from_static("false"));
        }
        response
    }

    /// A stream encoder for one answer, or `None` for the unified format
    /// (its streams pass through in the vendor's own format).
    /// `include_usage` is whether the client asked for usage in its stream.
    pub fn stream_encoder(self, model: &str, include_usage: bool) -> Option<StreamEncoder> {
        let inner = match self {
            Self::Unified => return None,
            Self::OpenAi => Encoder::OpenAi(openai_chat::ChunkEncoder::new(
                openai_id(None),
                now(),
                model.to_owned(),
                include_usage,
            )),
            Self::Anthropic => Encoder::Anthropic(anthropic::MessageEncoder::new(
                anthropic_id(None),
                model.to_owned(),
            )),
        };
        Some(StreamEncoder { inner })
    }
}

/// Writes IR stream events as the client's server-sent events.
pub struct StreamEncoder {
    inner: Encoder,
}

enum Encoder {
    OpenAi(openai_chat::ChunkEncoder),
    Anthropic(anthropic::MessageEncoder),
}

impl std::fmt::Debug for StreamEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamEncoder").finish_non_exhaustive()
    }
}

impl StreamEncoder {
    /// Appends the bytes for one event (possibly none: usage is held for
    /// the end). After an [`StreamEvent::Error`] nothing more is written.
    pub fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        match &mut self.inner {
            Encoder::OpenAi(e) => e.encode(event, out),
            Encoder::Anthropic(e) => e.encode(event, out),
        }
    }

    /// Appends the closing bytes of a stream that ended normally.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match &mut self.inner {
            Encoder::OpenAi(e) => e.finish(out),
            Encoder::Anthropic(e) => e.finish(out),
        }
    }
}

/// KrakenD's unified request: `{"instructions": "...", "contents": "..."}`
/// (`contents` may also be a list of strings, one user part each).
fn parse_unified(body: &[u8]) -> Result<ChatRequest, LlmError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Unified {
        instructions: Option<String>,
        contents: Contents,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Contents {
        One(String),
        Many(Vec<String>),
    }
    let unified: Unified = openai_chat::parse_json(body)?;
    let parts = match unified.contents {
        Contents::One(text) => vec![ContentPart::Text(text)],
        Contents::Many(texts) => texts.into_iter().map(ContentPart::Text).collect(),
    };
    Ok(ChatRequest {
        system: unified.instructions.filter(|s| !s.is_empty()),
        messages: vec![Message::new(crate::ir::Role::User, parts)],
        ..ChatRequest::default()
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A process-unique suffix for ids the gateway makes up.
fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:012x}{:08x}",
        nanos & 0xffff_ffff_ffff,
        count & 0xffff_ffff
    )
}

fn openai_id(vendor: Option<&str>) -> String {
    match vendor {
        Some(id) if !id.is_empty() => openai_chat::client_id(id),
        _ => format!("chatcmpl-{}", unique()),
    }
}

fn anthropic_id(vendor: Option<&str>) -> String {
    match vendor {
        Some(id) if !id.is_empty() => anthropic::client_id(id),
        _ => format!("msg_{}", unique()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Choice, TokenUsage};

    #[test]
    fn unified_round_trip() {
        let request = ClientFormat::Unified
            .parse_request(br#"{"instructions":"be kind","contents":"hello"}"#)
            .unwrap();
        assert_eq!(request.system.as_deref(), Some("be kind"));
        assert_eq!(request.messages[0].text(), "hello");
        let response = ChatResponse {
            choices: vec![Choice::new(0, vec![ContentPart::text("hi there")], None)],
            usage: TokenUsage::new(40, 12),
            ..ChatResponse::default()
        };
        let body: Value =
            serde_json::from_slice(&ClientFormat::Unified.render_response(&response, "m")).unwrap();
        assert_eq!(
            body,
            json!({"ai_gateway_response": [{"contents": ["hi there"]}], "usage": 52})
        );
    }

    #[test]
    fn errors_take_the_client_shape() {
        let err = LlmError::new(StatusCode::TOO_MANY_REQUESTS, "slow down")
            .with_retry_after(Some("7".into()));
        let response = ClientFormat::Anthropic.error_response(&err);
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "7");
        assert_eq!(
            ClientFormat::Anthropic.error_body(&err),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
        assert_eq!(
            ClientFormat::OpenAi.error_body(&err)["error"]["type"],
            "rate_limit_error"
        );
    }
}
