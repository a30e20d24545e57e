//! The two services: thin glue around [`Generator`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchboard_core::{Body, BodyLimit};
use tower::Service;

use crate::config::Generator;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Replaces the request body with a template's output before calling the
/// inner service. A template that reads `req_body` needs a JSON (or empty)
/// client body: anything else is answered 400, an oversize body 413.
#[derive(Clone)]
pub struct GenerateBody<S> {
    inner: S,
    generator: Arc<Generator>,
}

impl<S> GenerateBody<S> {
    pub(crate) fn new(inner: S, generator: Arc<Generator>) -> Self {
        Self { inner, generator }
    }
}

impl<S: fmt::Debug> fmt::Debug for GenerateBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for GenerateBody<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let generator = self.generator.clone();
        Box::pin(async move {
            match generator.rewrite_request(request).await {
                Ok(request) => inner.call(request).await,
                Err(rejection) => Ok(rejection.into_response()),
            }
        })
    }
}

/// Replaces the inner service's response body with a template's output.
/// Event streams pass through untouched; a body over the request's
/// [`BodyLimit`] is a 502.
#[derive(Clone)]
pub struct GenerateResponseBody<S> {
    inner: S,
    generator: Arc<Generator>,
}

impl<S> GenerateResponseBody<S> {
    pub(crate) fn new(inner: S, generator: Arc<Generator>) -> Self {
        Self { inner, generator }
    }
}

impl<S: fmt::Debug> fmt::Debug for GenerateResponseBody<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for GenerateResponseBody<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let generator = self.generator.clone();
        let data = generator.capture_request(&request);
        let secrets = request
            .extensions()
            .get::<std::sync::Arc<switchboard_core::secrets::Secrets>>()
            .cloned();
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or_default()
            .0;
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(generator
                .rewrite_response(response, data, limit, secrets)
                .await)
        })
    }
}
