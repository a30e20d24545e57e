//! A vendor adapter written outside the workspace: [`AcmeAdapter`] teaches
//! Switchboard's [`RouteLlm`](switchboard_llm_router::RouteLlm) layer to
//! speak Acme, a made-up vendor with its own dialect, so that OpenAI and
//! Anthropic clients (and their SDKs) can call it unchanged.
//!
//! Acme's API:
//! - `POST <endpoint>` with `x-acme-key: <key>` and
//!   `{"engine", "preamble", "turns": [{"speaker": "human"|"bot", "text"}],
//!   "max_new_tokens", "stream"}`;
//! - answers `{"id", "output": {"text"}, "tokens": {"in", "out"}}`;
//! - streams newline-delimited JSON: `{"delta": "..."}` lines, then
//!   `{"done": true, "tokens": {...}}`, or `{"fault": {...}}` on failure;
//! - fails with `{"fault": {"reason": "..."}}`.
//!
//! The adapter is pure translation: no I/O, no tower types. It refuses
//! what Acme cannot express (tools, images, `n`, ...) with a 400 naming the
//! field, through [`switchboard_llm_router::check_features`].
//!
//! ```
//! use std::sync::Arc;
//!
//! use example_custom_vendor_layer::AcmeAdapter;
//! use switchboard_llm_router::{ChatRequest, Message, ProviderSettings, Secret, VendorAdapter};
//!
//! let settings = ProviderSettings::new("acme", "http://acme.test/v2/generate", "acme-large", Secret::new("k"));
//! let mut chat = ChatRequest::default();
//! chat.messages.push(Message::user("Hello"));
//! let request = AcmeAdapter.build_request(&chat, &settings).unwrap();
//! assert_eq!(request.headers()["x-acme-key"], "k");
//! let answer = AcmeAdapter
//!     .parse_response(br#"{"id": "a1", "output": {"text": "Hi!"}, "tokens": {"in": 3, "out": 1}}"#)
//!     .unwrap();
//! assert_eq!(answer.choices[0].text(), "Hi!");
//! assert_eq!(answer.usage.total(), 4);
//! ```

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use switchboard_llm_router::adapter::upstream_error;
use switchboard_llm_router::{
    ChatRequest, ChatResponse, Choice, ContentPart, Feature, FinishReason, LlmError,
    ProviderSettings, Role, StreamDecoder, StreamEvent, TokenUsage, UpstreamRequest, VendorAdapter,
    check_features,
};

/// The Acme adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcmeAdapter;

/// The largest NDJSON line Acme may stream.
const MAX_LINE: usize = 1024 * 1024;

impl VendorAdapter for AcmeAdapter {
    fn vendor(&self) -> &'static str {
        "acme"
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        "https://api.acme.example/v2/generate".to_owned()
    }

    fn default_model(&self) -> &'static str {
        "acme-small"
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(
            request,
            &[
                Feature::Tools,
                Feature::Images,
                Feature::MultipleChoices,
                Feature::Seed,
                Feature::Logprobs,
                Feature::JsonMode,
                Feature::JsonSchema,
                Feature::Penalties,
                Feature::TopK,
                Feature::Metadata,
            ],
            "acme",
        )?;
        if !request.stop.is_empty() {
            return Err(LlmError::unsupported("stop", "acme"));
        }
        Ok(())
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let turns: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let speaker = if m.role == Role::Assistant {
                    "bot"
                } else {
                    "human"
                };
                json!({"speaker": speaker, "text": m.text()})
            })
            .collect();
        let mut body = json!({
            "engine": provider.model_for(request),
            "turns": turns,
            "stream": request.stream,
        });
        if let Some(preamble) = &request.system {
            body["preamble"] = preamble.clone().into();
        }
        if let Some(max) = request.max_tokens {
            body["max_new_tokens"] = max.into();
        }
        if let Some(temperature) = request.temperature {
            body["temperature"] = temperature.into();
        }
        let mut upstream = http::Request::new(Bytes::from(body.to_string()));
        *upstream.method_mut() = http::Method::POST;
        *upstream.uri_mut() = provider
            .endpoint
            .parse()
            .map_err(|_| LlmError::bad_upstream("the Acme endpoint is not a URL"))?;
        let headers = upstream.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut key = HeaderValue::from_str(provider.credentials.expose())
            .map_err(|_| LlmError::bad_upstream("the Acme key is not a valid header"))?;
        key.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-acme-key"), key);
        Ok(upstream)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| LlmError::bad_upstream(format!("Acme answered invalid JSON: {e}")))?;
        let text = value["output"]["text"]
            .as_str()
            .ok_or_else(|| LlmError::bad_upstream("Acme's answer has no output.text"))?;
        let mut response = ChatResponse::default();
        response.id = value["id"].as_str().map(str::to_owned);
        response.choices.push(Choice::new(
            0,
            vec![ContentPart::text(text)],
            Some(FinishReason::Stop),
        ));
        response.usage = tokens(&value["tokens"]);
        Ok(response)
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let reason = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["fault"]["reason"].as_str().map(str::to_owned));
        upstream_error(status, headers, reason)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(AcmeStream::default())
    }
}

fn tokens(value: &Value) -> TokenUsage {
    TokenUsage::new(
        value["in"].as_u64().unwrap_or(0),
        value["out"].as_u64().unwrap_or(0),
    )
}

/// Acme's NDJSON stream: whole lines become events, a partial line waits
/// (bounded) for the rest.
#[derive(Default)]
struct AcmeStream {
    line: Vec<u8>,
    started: bool,
    done: bool,
    failed: bool,
}

impl AcmeStream {
    fn fail(&mut self, err: LlmError, out: &mut Vec<StreamEvent>) {
        if !self.failed {
            self.failed = true;
            out.push(StreamEvent::Error(err));
        }
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<StreamEvent>) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            return self.fail(LlmError::bad_upstream("Acme streamed invalid JSON"), out);
        };
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: None,
                model: None,
            });
        }
        if let Some(reason) = value["fault"]["reason"].as_str() {
            return self.fail(LlmError::bad_upstream(reason), out);
        }
        if let Some(delta) = value["delta"].as_str() {
            out.push(StreamEvent::TextDelta {
                choice: 0,
                text: delta.to_owned(),
            });
        }
        if value["done"] == true {
            self.done = true;
            out.push(StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Stop,
            });
            out.push(StreamEvent::Usage(tokens(&value["tokens"])));
        }
    }
}

impl StreamDecoder for AcmeStream {
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) {
        let mut rest = chunk;
        while !self.failed && !self.done && !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.line.extend_from_slice(&rest[..at]);
                    rest = &rest[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.line(&line, out);
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > MAX_LINE {
                        self.fail(
                            LlmError::bad_upstream("Acme streamed an overlong line"),
                            out,
                        );
                    }
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.line.is_empty() && !self.failed && !self.done {
            let line = std::mem::take(&mut self.line);
            self.line(&line, out);
        }
        if !self.done {
            self.fail(LlmError::bad_upstream("Acme's stream ended early"), out);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn any_split_gives_the_same_events() {
        let stream = b"{\"delta\":\"Hel\"}\n{\"delta\":\"lo\"}\n{\"done\":true,\"tokens\":{\"in\":2,\"out\":2}}\n";
        let decode = |chunks: Vec<&[u8]>| {
            let mut decoder = AcmeAdapter.stream_decoder();
            let mut events = Vec::new();
            for chunk in chunks {
                decoder.decode(chunk, &mut events);
            }
            decoder.finish(&mut events);
            events
        };
        let whole = decode(vec![stream]);
        assert_eq!(whole.len(), 5);
        assert_eq!(decode(stream.chunks(1).collect()), whole);
        assert_eq!(decode(stream.chunks(7).collect()), whole);
    }

    #[test]
    fn tools_are_refused_by_name() {
        let mut chat = ChatRequest::default();
        chat.tools
            .push(switchboard_llm_router::Tool::new("f", json!({})));
        let err = AcmeAdapter.check_request(&chat).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tools"));
    }
}
