//! OpenAI. `provider: "openai"` speaks Chat Completions when its endpoint's
//! path ends in `/chat/completions`, and the Responses API when it ends in
//! `/responses` (KrakenD's default endpoint).

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use crate::adapter::{
    Feature, ProviderSettings, StreamDecoder, UpstreamRequest, VendorAdapter, check_features,
    upstream_error,
};
use crate::dialect::openai_chat::{self, ChunkDecoder, Dialect};
use crate::ir::{ChatRequest, ChatResponse, LlmError};

/// KrakenD's default OpenAI endpoint (the Responses API).
pub const DEFAULT_ENDPOINT: &str = "https://api.openai.com/v1/responses";
/// The Chat Completions endpoint.
pub const CHAT_COMPLETIONS_ENDPOINT: &str = "https://api.openai.com/v1/chat/completions";
/// KrakenD's default OpenAI model.
pub const DEFAULT_MODEL: &str = "gpt-5.4-mini";

/// Chooses Chat Completions or the Responses API by the endpoint's path.
pub fn select(endpoint: Option<&str>) -> Result<Arc<dyn VendorAdapter>, String> {
    let path = super::endpoint_path(endpoint.unwrap_or(DEFAULT_ENDPOINT));
    if path.ends_with("/responses") {
        responses_adapter()
    } else {
        Ok(Arc::new(OpenAiChat))
    }
}

/// The Responses API adapter. Until it is registered here, an endpoint
/// ending in `/responses` is refused at load with a pointer to Chat
/// Completions.
fn responses_adapter() -> Result<Arc<dyn VendorAdapter>, String> {
    Err(format!(
        "the OpenAI Responses API (an endpoint ending in /responses, KrakenD's default) is \
         not available yet; set \"endpoint\" to {CHAT_COMPLETIONS_ENDPOINT:?} for Chat Completions"
    ))
}

/// OpenAI Chat Completions (`/v1/chat/completions`), with a Bearer key.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAiChat;

impl VendorAdapter for OpenAiChat {
    fn vendor(&self) -> &'static str {
        "openai"
    }

    fn default_endpoint(&self, _model: &str, _streaming: bool) -> String {
        CHAT_COMPLETIONS_ENDPOINT.to_owned()
    }

    fn default_model(&self) -> &'static str {
        DEFAULT_MODEL
    }

    fn check_request(&self, request: &ChatRequest) -> Result<(), LlmError> {
        check_features(request, &[Feature::TopK], "openai")
    }

    fn build_request(
        &self,
        request: &ChatRequest,
        provider: &ProviderSettings,
    ) -> Result<UpstreamRequest, LlmError> {
        let body =
            openai_chat::render_request(request, provider.model_for(request), Dialect::OPENAI)?;
        super::openai_compatible::json_request(
            &provider.endpoint,
            Some(&provider.credentials),
            body,
        )
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
