//! The one future type every Switchboard layer returns.
//!
//! A layer decides most requests synchronously: it passes the request on
//! unchanged (or changed in place), or it answers itself (a 401, a policy
//! denial). Only some requests need async work of the layer's own before
//! the inner service is called (reading a body, fetching a key). And on the
//! way back, most layers either leave the response alone or change its
//! head synchronously; only some must read the body.
//!
//! [`LayerFuture`] covers all of these with one pin-projected state
//! machine, so a layer neither boxes nor clones its inner service on the
//! fast paths:
//!
//! | constructor | when | cost |
//! |---|---|---|
//! | [`LayerFuture::inner`] | the request goes on, the response comes back untouched | none |
//! | [`LayerFuture::then`] | the request goes on, an [`OnResponse`] step sees the response | none, or one box when that step must wait (buffer a body) |
//! | [`LayerFuture::pass`] | as `inner`, in a future typed for a step this request does not need | none |
//! | [`LayerFuture::respond`] | the layer answers itself | none |
//! | [`LayerFuture::boxed`] | the layer must wait before it can call the inner service | one box (and a clone of the inner service, which is cheap in a static pipeline) |
//!
//! ```
//! use std::task::{Context, Poll};
//! use http::{Request, Response};
//! use switchboard_core::future::LayerFuture;
//! use switchboard_core::{Body, ErrorResponse};
//! use tower::Service;
//!
//! #[derive(Clone)]
//! struct RequireHeader<S> { inner: S }
//!
//! impl<S> Service<Request<Body>> for RequireHeader<S>
//! where
//!     S: Service<Request<Body>, Response = Response<Body>>,
//! {
//!     type Response = Response<Body>;
//!     type Error = S::Error;
//!     type Future = LayerFuture<S::Future, S::Error>;
//!
//!     fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
//!         self.inner.poll_ready(cx)
//!     }
//!
//!     fn call(&mut self, request: Request<Body>) -> Self::Future {
//!         if request.headers().contains_key("x-tenant") {
//!             LayerFuture::inner(self.inner.call(request))
//!         } else {
//!             LayerFuture::respond(ErrorResponse::bad_request("x-tenant is missing").into_response())
//!         }
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::Body;

/// A boxed, `Send` future, as [`LayerFuture::boxed`] and [`Posted::Later`]
/// hold them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What an [`OnResponse`] step gives back: the response at once, or a
/// future for it when the step must wait (for a body, say).
///
/// `B` is the response body: Switchboard's [`Body`] unless a layer is
/// generic over it.
pub enum Posted<B = Body> {
    /// The (possibly changed) response.
    Ready(Response<B>),
    /// The response, once the step has read what it needs.
    Later(BoxFuture<Response<B>>),
}

impl<B> fmt::Debug for Posted<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(response) => f.debug_tuple("Ready").field(&response.status()).finish(),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A step a layer runs on the inner service's response, captured when the
/// request went in (it holds the layer's `Arc` state and what it noted of
/// the request).
pub trait OnResponse<B = Body>: Send + 'static {
    /// Looks at (and may replace) the response.
    fn on_response(self, response: Response<B>) -> Posted<B>;
}

/// No step: the response passes untouched, whatever its body.
impl<B> OnResponse<B> for () {
    fn on_response(self, response: Response<B>) -> Posted<B> {
        Posted::Ready(response)
    }
}

/// A plain function works as a step too.
impl<F, B> OnResponse<B> for F
where
    F: FnOnce(Response<B>) -> Posted<B> + Send + 'static,
{
    fn on_response(self, response: Response<B>) -> Posted<B> {
        self(response)
    }
}

pin_project! {
    /// The future of a Switchboard layer: see the [module docs](self).
    ///
    /// `F` is the inner service's future, `E` its error, `P` the step run on
    /// its response (none by default), `B` the response body
    /// (Switchboard's [`Body`] by default; a header-only layer is generic
    /// over it).
    #[must_use = "futures do nothing unless polled"]
    pub struct LayerFuture<F, E, P = (), B = Body> {
        #[pin]
        state: State<F, E, P, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E, P, B> {
        Inner {
            #[pin]
            future: F,
            step: Option<P>,
        },
        After {
            future: BoxFuture<Response<B>>,
        },
        Respond {
            response: Option<Response<B>>,
        },
        Boxed {
            future: BoxFuture<Result<Response<B>, E>>,
        },
    }
}

impl<F, E, P, B> LayerFuture<F, E, P, B> {
    /// Waits for the inner service and runs `step` on its response.
    pub fn then(future: F, step: P) -> Self {
        Self {
            state: State::Inner {
                future,
                step: Some(step),
            },
        }
    }

    /// The inner service's future, its response untouched, in a future
    /// whose type has room for a step that this request does not need.
    pub fn pass(future: F) -> Self {
        Self {
            state: State::Inner { future, step: None },
        }
    }

    /// Answers without calling the inner service.
    pub fn respond(response: Response<B>) -> Self {
        Self {
            state: State::Respond {
                response: Some(response),
            },
        }
    }

    /// The slow path: the layer's own async work, which calls the inner
    /// service itself.
    pub fn boxed(future: impl Future<Output = Result<Response<B>, E>> + Send + 'static) -> Self {
        Self {
            state: State::Boxed {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, E, B> LayerFuture<F, E, (), B> {
    /// The inner service's future, its response untouched.
    pub fn inner(future: F) -> Self {
        Self::then(future, ())
    }
}

impl<F, E, P, B> fmt::Debug for LayerFuture<F, E, P, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::After { .. } => "After",
            State::Respond { .. } => "Respond",
            State::Boxed { .. } => "Boxed",
        };
        f.debug_struct("LayerFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, E, P, B> Future for LayerFuture<F, E, P, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    P: OnResponse<B>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future, step } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(step) = step.take() else {
                        return Poll::Ready(Ok(response));
                    };
                    match step.on_response(response) {
                        Posted::Ready(response) => return Poll::Ready(Ok(response)),
                        Posted::Later(future) => {
                            this.state.set(State::After { future });
                        }
                    }
                }
                StateProj::After { future } => return future.as_mut().poll(cx).map(Ok),
                StateProj::Respond { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        // Polled after completion: a bug in the caller, but
                        // not a reason to panic.
                        None => Poll::Pending,
                    };
                }
                StateProj::Boxed { future } => return future.as_mut().poll(cx),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use std::convert::Infallible;

    fn ok() -> Response<Body> {
        Response::new(Body::empty())
    }

    #[tokio::test]
    async fn every_path_completes() {
        let inner = async { Ok::<_, Infallible>(ok()) };
        let response = LayerFuture::inner(inner).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let response = LayerFuture::<std::future::Ready<Result<_, Infallible>>, _>::respond({
            let mut r = ok();
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        })
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);

        let step = |mut r: Response<Body>| {
            *r.status_mut() = StatusCode::CREATED;
            Posted::Ready(r)
        };
        let response = LayerFuture::then(async { Ok::<_, Infallible>(ok()) }, step)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);

        let later = |mut r: Response<Body>| {
            Posted::Later(Box::pin(async move {
                *r.status_mut() = StatusCode::ACCEPTED;
                r
            }))
        };
        let response = LayerFuture::then(async { Ok::<_, Infallible>(ok()) }, later)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);

        let response =
            LayerFuture::<std::future::Ready<Result<_, Infallible>>, _>::boxed(async { Ok(ok()) })
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
