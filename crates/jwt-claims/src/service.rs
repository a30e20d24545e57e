use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchboard_core::{Body, Claims};
use tower::Service;

use crate::validator::Validator;

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

impl<S, B> Service<Request<B>> for ValidateJwt<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        Box::pin(async move {
            let outcome = match validator.extract(request.headers()) {
                Ok(token) => {
                    let token = token.to_owned();
                    match validator.verify(&token).await {
                        Ok(claims) => validator.authorize(&claims).map(|()| claims),
                        Err(rejection) => Err(rejection),
                    }
                }
                Err(rejection) => Err(rejection),
            };
            match outcome {
                Ok(claims) => {
                    validator.propagate(&claims, request.headers_mut());
                    request.extensions_mut().insert(Claims::new(claims));
                    inner.call(request).await
                }
                Err(rejection) => {
                    if validator.settings.operation_debug {
                        tracing::warn!(?rejection, "auth/validator: request refused");
                    } else {
                        tracing::debug!(?rejection, "auth/validator: request refused");
                    }
                    Ok(rejection.into_error().into_response())
                }
            }
        })
    }
}
