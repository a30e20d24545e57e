//! The tower service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use switchboard_core::buffer::{is_event_stream, is_json_content_type, response_bytes, set_body_headers};
use switchboard_core::{Body, ErrorResponse};
use tower::Service;

use crate::body::MaskedSseBody;
use crate::config::NonJsonPolicy;
use crate::ResponseMasker;

/// Masks the fields of a response body that the config names.
///
/// - JSON bodies are buffered (bounded: over `max_body_size`, 502), parsed,
///   masked and re-emitted with a fixed `Content-Length`.
/// - `text/event-stream` bodies are masked event by event as they flow (see
///   [`crate::SseMasker`]), or refused with 502 when the config cannot mask
///   a stream.
/// - The request goes on without `Accept-Encoding`, so that the upstream
///   answers uncompressed; a response that is compressed all the same
///   (`Content-Encoding` other than `identity`) answers 502.
/// - A body whose `Content-Type` is neither JSON nor an event stream answers
///   502 unless the config sets `"non_json": "pass"`; a body without
///   `Content-Type` must parse as JSON. An empty body passes untouched.
///
/// Nothing passes unmasked by accident: every refusal is a 502 with code
/// `response_not_masked`.
#[derive(Clone, Debug)]
pub struct MaskResponse<S> {
    inner: S,
    masker: ResponseMasker,
}

impl<S> MaskResponse<S> {
    /// Wraps a service.
    pub fn new(inner: S, masker: ResponseMasker) -> Self {
        Self { inner, masker }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> Service<Request<Body>> for MaskResponse<S>
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

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        request.headers_mut().remove(ACCEPT_ENCODING);
        let head = request.method() == Method::HEAD;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let masker = self.masker.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(mask_response(&masker, response, head).await)
        })
    }
}

fn not_masked(reason: impl std::fmt::Display) -> Response<Body> {
    ErrorResponse::bad_gateway(format!("response could not be masked: {reason}"))
        .with_code("response_not_masked")
        .into_response()
}

async fn mask_response(masker: &ResponseMasker, response: Response<Body>, head: bool) -> Response<Body> {
    let headers = response.headers();
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let identity = encoding
            .to_str()
            .map(|e| e.trim().eq_ignore_ascii_case("identity"))
            .unwrap_or(false);
        if !identity {
            let name = encoding.to_str().unwrap_or("unknown");
            return not_masked(format!("the upstream body is compressed (Content-Encoding: {name})"));
        }
    }
    let no_body = head
        || matches!(response.status(), StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
        || response.body().is_end_stream();
    if no_body {
        return response;
    }
    if is_event_stream(headers) {
        let Some(sse) = masker.sse_masker() else {
            let reason = masker.stream_refusal().unwrap_or("streams are refused");
            return not_masked(format!("an event stream cannot be masked with this config ({reason})"));
        };
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(CONTENT_LENGTH);
        return Response::from_parts(parts, Body::new(MaskedSseBody::new(body, sse)));
    }
    if headers.contains_key(CONTENT_TYPE) && !is_json_content_type(headers) {
        return match masker.state.non_json {
            NonJsonPolicy::Pass => response,
            _ => not_masked("the upstream body is not JSON"),
        };
    }
    let (mut parts, bytes) = match response_bytes(response, masker.state.max_body_size).await {
        Ok(buffered) => buffered,
        Err(err) => return err.with_code("response_not_masked").into_response(),
    };
    if bytes.is_empty() {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let mut value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(err) => return not_masked(format!("the upstream body is not valid JSON ({err})")),
    };
    masker.mask_value(&mut value);
    let masked = value.to_string();
    set_body_headers(&mut parts.headers, masked.len(), None);
    Response::from_parts(parts, Body::from(masked))
}
