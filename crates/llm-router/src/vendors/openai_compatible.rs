//! Vendors that speak OpenAI Chat Completions with their own defaults and
//! gaps: Mistral, Deepseek, Alibaba (DashScope compatible mode), Ollama (its
//! `/v1` API) and `openai-compatible` (any such server at a configured
//! `endpoint`: vLLM, llama.cpp, LM Studio, OpenRouter, Together).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value};

use crate::adapter::{
    Feature, ProviderSettings, Secret, StreamDecoder, UpstreamRequest, VendorAdapter,
    check_features, upstream_error,
};
use crate::dialect::openai_chat::{self, ChunkDecoder, Dialect};
use crate::ir::{ChatRequest, ChatResponse, LlmError};

/// A Chat Completions vendor described by data.
#[derive(Clone, Copy, Debug)]
pub struct CompatibleVendor {
    vendor: &'static str,
    endpoint: &'static str,
    model: &'static str,
    dialect: Dialect,
    unsupported: &'static [Feature],
    requires_model: bool,
}

const MISTRAL: CompatibleVendor = CompatibleVendor {
    vendor: "mistral",
    endpoint: "https://api.mistral.ai/v1/chat/completions",
    model: "mistral-small-latest",
    dialect: Dialect {
        max_completion_tokens: false,
        // Mistral sends usage in its last chunk unasked and refuses the field.
        stream_options: false,
        seed_field: "random_seed",
        required_is_any: true,
    },
    unsupported: &[
        Feature::Logprobs,
        Feature::TopK,
        Feature::Metadata,
        Feature::User,
    ],
    requires_model: false,
};

const DEEPSEEK: CompatibleVendor = CompatibleVendor {
    vendor: "deepseek",
    endpoint: "https://api.deepseek.com/chat/completions",
    model: "deepseek-chat",
    dialect: Dialect::COMPATIBLE,
    unsupported: &[
        Feature::MultipleChoices,
        Feature::Seed,
        Feature::TopK,
        Feature::Images,
        Feature::JsonSchema,
        Feature::Metadata,
        Feature::ParallelToolCalls,
    ],
    requires_model: false,
};

/// Alibaba Cloud Model Studio, compatible mode.
const ALIBABA: CompatibleVendor = CompatibleVendor {
    vendor: "alibaba",
    endpoint: "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions",
    model: "qwen3.8-flash",
    dialect: Dialect::COMPATIBLE,
    unsupported: &[Feature::Metadata, Feature::JsonSchema],
    requires_model: false,
};

const OLLAMA: CompatibleVendor = CompatibleVendor {
    vendor: "ollama",
    endpoint: "http://127.0.0.1:11434/v1/chat/completions",
    model: "llama3.2",
    dialect: Dialect::COMPATIBLE,
    unsupported: &[
        Feature::MultipleChoices,
        Feature::Logprobs,
        Feature::TopK,
        Feature::Metadata,
        Feature::ParallelToolCalls,
    ],
    requires_model: false,
};

const GENERIC: CompatibleVendor = CompatibleVendor {
    vendor: "openai-compatible",
    endpoint: "",
    model: "",
    dialect: Dialect::COMPATIBLE,
    unsupported: &[],
    requires_model: false,
};

/// KrakenD's default Alibaba endpoint (its Responses-style API).
pub const ALIBABA_KRAKEND_ENDPOINT: &str =
    "https://token-plan.ap-southeast-1.maas.aliyuncs.com/compatible-mode/v1/responses";

/// Mistral.
pub fn mistral(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(MISTRAL))
}

/// Deepseek.
pub fn deepseek(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(DEEPSEEK))
}

/// Alibaba: Chat Completions in compatible mode, or its Responses-style API
/// for an endpoint ending in `/responses` (KrakenD's default).
pub fn alibaba(endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    match endpoint {
        Some(endpoint) if super::endpoint_path(endpoint).ends_with("/responses") => {
            Ok(Arc::new(super::openai_responses::OpenAiResponses::ALIBABA))
        }
        _ => Ok(Arc::new(ALIBABA)),
    }
}

/// Ollama through its OpenAI-compatible `/v1/chat/completions`.
pub fn ollama(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(OLLAMA))
}

/// Any Chat Completions server; `endpoint` is required.
pub fn generic(endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    match endpoint {
        Some(_) => Ok(Arc::new(GENERIC)),
        None => Err("provider \"openai-compatible\" needs an \"endpoint\"".to_owned()),
    }
}

/// A POST with a JSON body and, when the key is set, `Authorization: Bearer`.
pub(crate) fn json_request(
    endpoint: &str,
    key: Option<&Secret>,
    body: Map<String, Value>,
) -> Result<UpstreamRequest, LlmError> {
    let bytes = serde_json::to_vec(&Value::Object(body))
        .map_err(|err| LlmError::invalid_request(format!("cannot encode the request: {err}")))?;
    let mut request = http::Request::new(Bytes::from(bytes));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = endpoint
        .parse()
        .map_err(|_| LlmError::bad_upstream("the provider endpoint is not a valid URL"))?;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                LlmError::bad_upstream("the provider credentials are not a valid header")
            })?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(request)
}

impl VendorAdapter for CompatibleVendor {
    fn vendor(&self) -> &'static str {
        self.vendor
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        self.endpoint.to_owned()
    }

    fn default_model(&self) -> &'static str {
        self.model
    }

    fn requires_model(&self) -> bool {
        self.requires_model
    }

    fn native_dialect(&self) -> Option<crate::ir::WireDialect> {
        Some(crate::ir::WireDialect::OpenAiChat)
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, self.unsupported, self.vendor)
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let mut body =
            openai_chat::render_request(request, provider.model_for(request), self.dialect)?;
        if self.vendor == "mistral"
            && let Some(safe) = provider.variable("safe_prompt")
        {
            body.insert("safe_prompt".into(), safe.clone());
        }
        json_request(&provider.endpoint, Some(&provider.credentials), body)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        openai_chat::parse_response(body)
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let mut err = upstream_error(status, headers, None);
        openai_chat::parse_error_body(&mut err, body);
        err
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ChunkDecoder::new())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ir::{Message, Tool, ToolChoice};

    fn body_of(adapter: &dyn VendorAdapter, chat: &ChatRequest) -> Value {
        let settings = ProviderSettings::new(
            "p",
            adapter.default_endpoint("m", false),
            adapter.default_model(),
            Secret::new("key"),
        );
        let request = adapter.build_request(chat, &settings).unwrap();
        assert_eq!(request.headers()[AUTHORIZATION], "Bearer key");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
        serde_json::from_slice(request.body()).unwrap()
    }

    fn chat() -> ChatRequest {
        let mut chat = ChatRequest {
            seed: Some(9),
            stream: true,
            tool_choice: Some(ToolChoice::Required),
            ..ChatRequest::default()
        };
        chat.messages.push(Message::user("hi"));
        chat.tools
            .push(Tool::new("f", serde_json::json!({"type": "object"})));
        chat
    }

    #[test]
    fn mistral_spells_its_own_fields() {
        let adapter = mistral(None).unwrap();
        let body = body_of(adapter.as_ref(), &chat());
        assert_eq!(body["random_seed"], 9);
        assert!(body.get("seed").is_none());
        assert_eq!(body["tool_choice"], "any");
        assert!(body.get("stream_options").is_none());
        assert_eq!(body["model"], "mistral-small-latest");
        let mut with_logprobs = chat();
        with_logprobs.logprobs = true;
        let err = adapter.check_request(&with_logprobs).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logprobs"));
    }

    #[test]
    fn deepseek_and_ollama_refuse_what_they_lack() {
        let deepseek = deepseek(None).unwrap();
        assert_eq!(
            deepseek
                .check_request(&chat())
                .unwrap_err()
                .param
                .as_deref(),
            Some("seed")
        );
        let mut plain = chat();
        plain.seed = None;
        assert!(deepseek.check_request(&plain).is_ok());
        let body = body_of(deepseek.as_ref(), &plain);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["tool_choice"], "required");
        let ollama = ollama(None).unwrap();
        plain.n = Some(2);
        assert_eq!(
            ollama.check_request(&plain).unwrap_err().param.as_deref(),
            Some("n")
        );
    }

    #[test]
    fn generic_needs_an_endpoint_and_alibaba_responses_speaks_the_responses_api() {
        assert!(generic(None).is_err());
        assert!(generic(Some("http://127.0.0.1:8000/v1/chat/completions")).is_ok());
        let responses = alibaba(Some(ALIBABA_KRAKEND_ENDPOINT)).unwrap();
        let completions = alibaba(None).unwrap();
        assert!(
            responses
                .default_endpoint("qwen", false)
                .ends_with("/responses")
        );
        assert!(
            completions
                .default_endpoint("qwen", false)
                .ends_with("/chat/completions")
        );
        // Without a key, no Authorization header at all.
        let settings =
            ProviderSettings::new("p", "http://x/v1/chat/completions", "m", Secret::default());
        let request = GENERIC.build_request(&chat(), &settings).unwrap();
        assert!(request.headers().get(AUTHORIZATION).is_none());
    }
}
