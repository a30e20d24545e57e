//! The service: thin glue between tower and [`Modifiers`].

use std::fmt;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response, Uri};
use switchboard_core::Body;
use switchboard_core::future::{LayerFuture, OnResponse, Posted};
use tower::Service;

use crate::Modifiers;

/// The future [`ModifyHeaders`] returns: the inner future, then the
/// response modifiers, without a box.
pub type ResponseFuture<F, E> = LayerFuture<F, E, ResponseStep>;

/// The response scope of a [`ModifyHeaders`], run on the inner response.
pub struct ResponseStep {
    modifiers: Modifiers,
    /// The request as it was sent, when a response filter checks it.
    sent: Option<(Uri, HeaderMap)>,
}

impl fmt::Debug for ResponseStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseStep").finish_non_exhaustive()
    }
}

impl OnResponse for ResponseStep {
    fn on_response(self, response: Response<Body>) -> Posted {
        let (mut head, mut body) = response.into_parts();
        let (uri, headers) = self.sent.unwrap_or_default();
        if let Some(replaced) = self
            .modifiers
            .modify_response(&uri, &headers, &mut head.headers)
        {
            body = Body::from(replaced);
        }
        Posted::Ready(Response::from_parts(head, body))
    }
}

/// Middleware that applies `modifier/martian` modifiers to requests on the
/// way in and to responses on the way back. See
/// [`ModifyHeadersLayer`](crate::ModifyHeadersLayer).
#[derive(Clone)]
pub struct ModifyHeaders<S> {
    inner: S,
    modifiers: Modifiers,
}

impl<S> ModifyHeaders<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, modifiers: Modifiers) -> Self {
        Self { inner, modifiers }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for ModifyHeaders<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModifyHeaders")
            .field("inner", &self.inner)
            .field("modifiers", &self.modifiers)
            .finish()
    }
}

impl<S> Service<Request<Body>> for ModifyHeaders<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let (mut parts, mut body) = request.into_parts();
        if let Some(replaced) = self
            .modifiers
            .modify_request(&mut parts.uri, &mut parts.headers)
        {
            body = Body::from(replaced);
        }
        if !self.modifiers.has_response_modifiers() {
            let future = self.inner.call(Request::from_parts(parts, body));
            return LayerFuture::pass(future);
        }
        // Response filters may check the request as it was sent.
        let sent = self
            .modifiers
            .response_needs_request()
            .then(|| (parts.uri.clone(), parts.headers.clone()));
        let step = ResponseStep {
            modifiers: self.modifiers.clone(),
            sent,
        };
        LayerFuture::then(self.inner.call(Request::from_parts(parts, body)), step)
    }
}
