use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use serde_json::Value;
use switchboard_core::Claims;
use switchboard_core::future::LayerFuture;
use tower::Service;

use crate::validator::{Rejection, Validator};

/// The service [`ValidateJwtLayer`](crate::ValidateJwtLayer) builds: answers
/// 401/403 itself, and otherwise calls the inner service with the
/// [`Claims`] extension set and the claim headers propagated.
#[derive(Clone)]
pub struct ValidateJwt<S> {
    inner: S,
    validator: Arc<Validator>,
}

impl<S> ValidateJwt<S> {
    pub(crate) fn new(inner: S, validator: Arc<Validator>) -> Self {
        Self { inner, validator }
    }
}

impl<S: fmt::Debug> fmt::Debug for ValidateJwt<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateJwt")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Generic over both bodies: the layer reads only the request head, and
/// its refusals are JSON bytes in whatever body the inner service answers
/// with (`axum::body::Body`, `Full<Bytes>`, ...).
impl<S, B, ResBody> Service<Request<B>> for ValidateJwt<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, (), ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let validator = &*self.validator;
        let outcome = match validator.extract(request.headers()) {
            Ok(token) => validator.try_verify(token),
            Err(rejection) => Some(Err(rejection)),
        };
        match outcome {
            // The usual case: the key is cached, everything is decided now.
            Some(verified) => match verified.and_then(|claims| self.admit(claims, &mut request)) {
                Ok(()) => LayerFuture::inner(self.inner.call(request)),
                Err(rejection) => LayerFuture::respond(self.refuse(rejection)),
            },
            // The token names a key a download may bring: wait for it.
            None => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let this = ValidateJwt {
                    inner: (),
                    validator: Arc::clone(&self.validator),
                };
                LayerFuture::boxed(async move {
                    let verified = match this.validator.extract(request.headers()) {
                        Ok(token) => {
                            let token = token.to_owned();
                            this.validator.verify(&token).await
                        }
                        Err(rejection) => Err(rejection),
                    };
                    match verified.and_then(|claims| this.admit(claims, &mut request)) {
                        Ok(()) => inner.call(request).await,
                        Err(rejection) => Ok(this.refuse(rejection)),
                    }
                })
            }
        }
    }
}

impl<S> ValidateJwt<S> {
    /// Checks roles and scopes, then hands the claims on.
    fn admit<B>(&self, claims: Value, request: &mut Request<B>) -> Result<(), Rejection> {
        self.validator.authorize(&claims)?;
        self.validator.propagate(&claims, request.headers_mut());
        request.extensions_mut().insert(Claims::new(claims));
        Ok(())
    }

    fn refuse<ResBody: From<Bytes>>(&self, rejection: Rejection) -> Response<ResBody> {
        if self.validator.settings.operation_debug {
            tracing::warn!(?rejection, "auth/validator: request refused");
        } else {
            tracing::debug!(?rejection, "auth/validator: request refused");
        }
        rejection.into_error().into_response_with()
    }
}
