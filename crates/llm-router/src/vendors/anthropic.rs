//! Anthropic Messages (`/v1/messages`), with `x-api-key` and
//! `anthropic-version`.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::dialect::anthropic::{self as dialect, DEFAULT_MAX_TOKENS, MessageDecoder};
use crate::ir::{ChatRequest, ChatResponse, LlmError};

/// The API version sent in `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// Anthropic's only API.
pub fn select(_endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    Ok(Arc::new(Anthropic))
}

/// The Anthropic Messages adapter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anthropic;

impl VendorAdapter for Anthropic {
    fn vendor(&self) -> &'static str {
        "anthropic"
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        "https://api.anthropic.com/v1/messages".to_owned()
    }

    fn default_model(&self) -> &'static str {
        "claude-haiku-4-5"
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(
            request,
            &[
                Feature::MultipleChoices,
                Feature::Seed,
                Feature::Logprobs,
                Feature::JsonMode,
                Feature::JsonSchema,
                Feature::Penalties,
                Feature::Metadata,
            ],
            "anthropic",
        )
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let default_max = provider
            .variable("max_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_MAX_TOKENS);
        let body = dialect::render_request(request, provider.model_for(request), default_max);
        let bytes = serde_json::to_vec(&Value::Object(body)).map_err(|err| {
            LlmError::invalid_request(format!("cannot encode the request: {err}"))
        })?;
        let mut upstream = http::Request::new(Bytes::from(bytes));
        *upstream.method_mut() = Method::POST;
        *upstream.uri_mut() = provider
            .endpoint
            .parse()
            .map_err(|_| LlmError::bad_upstream("the provider endpoint is not a valid URL"))?;
        let headers = upstream.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        if !provider.credentials.is_empty() {
            let mut key = HeaderValue::from_str(provider.credentials.expose()).map_err(|_| {
                LlmError::bad_upstream("the provider credentials are not a valid header")
            })?;
            key.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), key);
        }
        Ok(upstream)
    }

    fn parse_response(&self, body: &[u8]) -> Result<ChatResponse, LlmError> {
        dialect::parse_response(body)
    }

    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> LlmError {
        let mut err = upstream_error(status, headers, None);
        dialect::parse_error_body(&mut err, body);
        err
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(MessageDecoder::new())
    }
}
