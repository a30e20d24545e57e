//! The two services: thin glue around [`Generator`].

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use serde_json::{Map, Value};
use switchboard_core::future::{LayerFuture, OnResponse, Posted};
use switchboard_core::{Body, BodyLimit};
use tower::Service;

use crate::config::Generator;

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
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if !self.generator.must_read_body(&request) {
            return match self.generator.rewrite_request_now(request) {
                Ok(request) => LayerFuture::inner(self.inner.call(request)),
                Err(rejection) => LayerFuture::respond(rejection.into_response()),
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let generator = Arc::clone(&self.generator);
        LayerFuture::boxed(async move {
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
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, RenderResponse>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let step = RenderResponse {
            generator: Arc::clone(&self.generator),
            data: self.generator.capture_request(&request),
            limit: BodyLimit::of(request.extensions()),
        };
        LayerFuture::then(self.inner.call(request), step)
    }
}

/// The response template of a [`GenerateResponseBody`], with what it
/// captured of the request.
pub struct RenderResponse {
    generator: Arc<Generator>,
    data: Map<String, Value>,
    limit: usize,
}

impl fmt::Debug for RenderResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderResponse").finish_non_exhaustive()
    }
}

impl OnResponse for RenderResponse {
    fn on_response(self, response: Response<Body>) -> Posted {
        if !self.generator.must_read_response(&response) {
            return Posted::Ready(self.generator.rewrite_response_now(response, self.data));
        }
        Posted::Later(Box::pin(async move {
            self.generator
                .rewrite_response(response, self.data, self.limit)
                .await
        }))
    }
}
