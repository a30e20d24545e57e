//! The outermost service of an endpoint ([`EndpointEntry`]) and KrakenD's
//! answers to rejections ([`KrakendAnswers`], `X-Krakend`).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, RawPathParams};
use futures_util::FutureExt;
use http::header::HeaderValue;
use http::{Request, Response};
use switchboard_core::buffer::{check_content_length, collect};
use switchboard_core::future::LayerFuture;
use switchboard_core::secrets::Secrets;
use switchboard_core::{Body, BodyLimit, KrakendError, RouteParams};
use tower::Service;

use crate::config::Encoding;
use crate::namespaces::PipelineService;
use crate::upstream::CallBudget;

/// The outermost service of an endpoint: records the body limit and the
/// path parameters, and refuses oversized bodies before any layer runs. A
/// body without a declared length is buffered (bounded) so that nothing
/// reaches a backend until it is known to fit.
#[derive(Clone)]
pub(super) struct EndpointEntry<S> {
    /// KrakenD's answers to rejections, on KrakenD endpoints.
    pub(super) answers: KrakendAnswers,
    pub(super) limit: usize,
    /// Whether the path declares `{params}` (most do not: no extraction).
    pub(super) has_params: bool,
    /// Whether a backend calls the gateway itself: the request then gets
    /// the budget of internal calls its whole tree shares.
    pub(super) calls_gateway: bool,
    /// The endpoint's `security/bot-detector`.
    pub(super) bots: Option<Arc<crate::bot_detector::BotDetector>>,
    /// An `output_encoding` written after every layer (xml, negotiate,
    /// string).
    pub(super) render: Option<Encoding>,
    /// The config's secrets, for the body generators of this endpoint and
    /// its backends (only set when there are both).
    pub(super) secrets: Option<Arc<Secrets>>,
    pub(super) inner: S,
}

impl<S: PipelineService> Service<Request<Body>> for EndpointEntry<S> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = LayerFuture<S::Future, Infallible, KrakendAnswers>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        use http_body::Body as _;
        let limit = self.limit;
        if let Some(bots) = &self.bots
            && let Some(refusal) = bots.refuse(request.headers())
        {
            return LayerFuture::respond(refusal);
        }
        if let Some(output) = self
            .render
            .and_then(|encoding| crate::render::output_for(encoding, request.headers()))
        {
            let clone = self.clone();
            let mut plain = std::mem::replace(self, clone);
            plain.render = None;
            return LayerFuture::boxed(async move {
                let Ok(response) = plain.call(request).await;
                Ok(crate::render::render(output, response).await)
            });
        }
        let (mut parts, body) = request.into_parts();
        if let Err(error) = check_content_length(&parts.headers, limit) {
            return LayerFuture::respond(error.into_response());
        }
        if self.has_params {
            // The router put the matched values in the extensions: the
            // extractor is ready at once.
            let params = RawPathParams::from_request_parts(&mut parts, &())
                .now_or_never()
                .and_then(Result::ok)
                .map(|raw| {
                    raw.iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect::<RouteParams>()
                })
                .unwrap_or_default();
            parts.extensions.insert(params);
        }
        if limit != switchboard_core::DEFAULT_BODY_LIMIT {
            // Without one, readers take the default: one entry fewer, and
            // the request's extension map is not grown.
            parts.extensions.insert(BodyLimit(limit));
        }
        if let Some(secrets) = &self.secrets {
            parts.extensions.insert(Arc::clone(secrets));
        }
        if self.calls_gateway && parts.extensions.get::<CallBudget>().is_none() {
            parts.extensions.insert(CallBudget::default());
        }
        let answers = self.answers;
        if parts.headers.contains_key(http::header::CONTENT_LENGTH) || body.is_end_stream() {
            return LayerFuture::then(self.inner.call(Request::from_parts(parts, body)), answers);
        }
        // A body of unknown length is read (bounded) before anything goes
        // upstream.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        LayerFuture::boxed(async move {
            match collect(body, limit).await {
                Ok(bytes) => inner
                    .call(Request::from_parts(parts, Body::from(bytes)))
                    .await
                    .map(|response| answers.apply(response)),
                Err(error) => Ok(error.into_response()),
            }
        })
    }
}

/// The header KrakenD names itself in on endpoint answers.
const X_KRAKEND: http::HeaderName = http::HeaderName::from_static("x-krakend");

/// Rewrites a rejection the way KrakenD answers it (see
/// [`KrakendError`]), on KrakenD endpoints.
#[derive(Clone, Copy, Debug)]
pub(super) struct KrakendAnswers {
    pub(super) enabled: bool,
    pub(super) return_error_msg: bool,
    /// `X-Krakend` on the answers (not `router.hide_version_header`).
    pub(super) version_header: bool,
}

impl KrakendAnswers {
    fn apply(self, mut response: Response<Body>) -> Response<Body> {
        if !self.enabled {
            return response;
        }
        // KrakenD names itself on every endpoint answer (`X-Krakend:
        // Version 2.x`); Switchboard names itself there as it does in
        // `User-Agent`; `router.hide_version_header` leaves it out.
        if self.version_header {
            response.headers_mut().insert(
                X_KRAKEND,
                HeaderValue::from_static(crate::proxy::USER_AGENT_VALUE),
            );
        }
        if response.extensions().get::<KrakendError>().is_none() {
            return response;
        }
        let (mut parts, _json) = response.into_parts();
        let Some(answer) = parts.extensions.remove::<KrakendError>() else {
            return Response::from_parts(parts, Body::empty());
        };
        let headers = &mut parts.headers;
        headers.remove(http::header::CONTENT_TYPE);
        headers.remove(http::header::CONTENT_LENGTH);
        headers.remove(crate::proxy::COMPLETED);
        let body = match answer {
            KrakendError::Empty => Body::empty(),
            KrakendError::Message(message) => {
                headers.insert(crate::proxy::COMPLETED, HeaderValue::from_static("false"));
                if self.return_error_msg {
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                    Body::from(message)
                } else {
                    Body::empty()
                }
            }
        };
        Response::from_parts(parts, body)
    }
}

impl switchboard_core::future::OnResponse for KrakendAnswers {
    fn on_response(self, response: Response<Body>) -> switchboard_core::future::Posted {
        switchboard_core::future::Posted::Ready(self.apply(response))
    }
}
