//! The tower layer.

use serde_json::Value;
use switchboard_core::ConfigError;
use tower::Layer;

use crate::{MaskResponse, ResponseMasker};

/// Applies `modifier/response-body` to responses: see [`MaskResponse`].
#[derive(Clone, Debug)]
pub struct MaskResponseLayer {
    masker: ResponseMasker,
}

impl MaskResponseLayer {
    /// Compiles the object under `modifier/response-body`. Errors name the
    /// field relative to it (`modifiers[1].regexp.find`).
    pub fn try_from_config(value: &Value) -> Result<Self, ConfigError> {
        ResponseMasker::try_from_config(value).map(Self::new)
    }

    /// A layer around an already compiled masker.
    pub fn new(masker: ResponseMasker) -> Self {
        Self { masker }
    }

    /// The compiled masker (e.g. to ask [`ResponseMasker::stream_refusal`]).
    pub fn masker(&self) -> &ResponseMasker {
        &self.masker
    }
}

impl<S> Layer<S> for MaskResponseLayer {
    type Service = MaskResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MaskResponse::new(inner, self.masker.clone())
    }
}
