use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use sha2::{Digest, Sha256};
use switchboard_core::future::LayerFuture;
use switchboard_core::{ApiKeyIdentity, ErrorResponse};
use tower::Service;

use crate::extract::{TakeError, take_key};
use crate::layer::Endpoint;

/// The service [`ValidateApiKeyLayer`](crate::ValidateApiKeyLayer) builds:
/// removes the key from the request, answers 401 (no or unknown key) or 403
/// (no matching role) itself, and otherwise calls the inner service,
/// with the matching role in the `propagate_role` header when configured.
#[derive(Clone)]
pub struct ValidateApiKey<S> {
    inner: S,
    endpoint: Arc<Endpoint>,
}

impl<S> ValidateApiKey<S> {
    pub(crate) fn new(inner: S, endpoint: Arc<Endpoint>) -> Self {
        Self { inner, endpoint }
    }
}

impl<S: fmt::Debug> fmt::Debug for ValidateApiKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateApiKey")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Generic over both bodies: the layer reads only the request head, and
/// its refusals are JSON bytes in whatever body the inner service answers
/// with (`axum::body::Body`, `Full<Bytes>`, ...).
impl<S, B, ResBody> Service<Request<B>> for ValidateApiKey<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, (), ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match self.check(&mut request) {
            Ok(()) => LayerFuture::inner(self.inner.call(request)),
            Err(error) => {
                tracing::debug!(status = %error.status(), "auth/api-keys: request refused");
                LayerFuture::respond(error.into_response_with())
            }
        }
    }
}

impl<S> ValidateApiKey<S> {
    fn check<B>(&self, request: &mut Request<B>) -> Result<(), ErrorResponse> {
        let endpoint = &*self.endpoint;
        let shared = &*endpoint.shared;
        // Clients must not be able to choose the role the backend sees.
        if let Some(name) = &shared.propagate_role {
            request.headers_mut().remove(name);
        }
        let mut uri = request.uri().clone();
        let taken = take_key(&endpoint.location, request.headers_mut(), &mut uri);
        *request.uri_mut() = uri;
        let key = taken.map_err(|e| match e {
            TakeError::Missing => {
                ErrorResponse::unauthorized("missing API key").with_code("missing_api_key")
            }
            TakeError::Ambiguous => {
                ErrorResponse::unauthorized("more than one API key").with_code("invalid_api_key")
            }
        })?;
        let roles = shared.ring.roles_of(&key).ok_or_else(|| {
            ErrorResponse::unauthorized("invalid API key").with_code("invalid_api_key")
        })?;
        let role = if endpoint.roles.is_empty() {
            "ANY"
        } else {
            roles
                .iter()
                .find(|r| endpoint.roles.contains(r))
                .map(String::as_str)
                .ok_or_else(|| {
                    ErrorResponse::forbidden("the API key lacks a required role")
                        .with_code("insufficient_role")
                })?
        };
        if let Some(name) = &shared.propagate_role
            && let Ok(value) = HeaderValue::from_str(role)
        {
            request.headers_mut().insert(name.clone(), value);
        }
        request
            .extensions_mut()
            .insert(ApiKeyIdentity::new(key_id(&key), role));
        Ok(())
    }
}

/// A stable id for a key that does not reveal it: the first eight bytes of
/// its SHA-256, in hex (quotas and rate limits count per key with it).
fn key_id(key: &[u8]) -> String {
    Sha256::digest(key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
