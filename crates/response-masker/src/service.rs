//! The tower service.

use std::task::{Context, Poll};

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use switchboard_core::buffer::{
    is_event_stream, is_json_content_type, response_bytes, set_body_headers,
};
use switchboard_core::future::{LayerFuture, OnResponse, Posted};
use switchboard_core::{Body, ErrorResponse};
use tower::Service;

use crate::ResponseMasker;
use crate::body::MaskedSseBody;
use crate::config::NonJsonPolicy;

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

impl<S> Service<Request<Body>> for MaskResponse<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = LayerFuture<S::Future, S::Error, MaskStep>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        request.headers_mut().remove(ACCEPT_ENCODING);
        let step = MaskStep {
            masker: self.masker.clone(),
            head: request.method() == Method::HEAD,
        };
        LayerFuture::then(self.inner.call(request), step)
    }
}

/// The masking a [`MaskResponse`] runs on the inner response.
pub struct MaskStep {
    masker: ResponseMasker,
    head: bool,
}

impl std::fmt::Debug for MaskStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskStep").finish_non_exhaustive()
    }
}

impl OnResponse for MaskStep {
    fn on_response(self, response: Response<Body>) -> Posted {
        match decide(&self.masker, response, self.head) {
            Decision::Done(response) => Posted::Ready(response),
            Decision::Buffer(response) => Posted::Later(Box::pin(async move {
                mask_buffered(&self.masker, response).await
            })),
        }
    }
}

fn not_masked(reason: impl std::fmt::Display) -> Response<Body> {
    ErrorResponse::bad_gateway(format!("response could not be masked: {reason}"))
        .with_code("response_not_masked")
        .into_response()
}

/// What the head of a response says: answered already, or a JSON body to
/// buffer and mask.
enum Decision {
    Done(Response<Body>),
    Buffer(Response<Body>),
}

fn decide(masker: &ResponseMasker, response: Response<Body>, head: bool) -> Decision {
    use Decision::Done;
    let no_body =
        head || matches!(
            response.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
        ) || response.body().is_end_stream();
    if no_body {
        return Done(response);
    }
    let headers = response.headers();
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        let identity = encoding
            .to_str()
            .map(|e| e.trim().eq_ignore_ascii_case("identity"))
            .unwrap_or(false);
        if !identity {
            let name = encoding.to_str().unwrap_or("unknown");
            return Done(not_masked(format!(
                "the upstream body is compressed (Content-Encoding: {name})"
            )));
        }
    }
    if is_event_stream(headers) {
        let Some(sse) = masker.sse_masker() else {
            let reason = masker.stream_refusal().unwrap_or("streams are refused");
            return Done(not_masked(format!(
                "an event stream cannot be masked with this config ({reason})"
            )));
        };
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(CONTENT_LENGTH);
        return Done(Response::from_parts(
            parts,
            Body::new(MaskedSseBody::new(body, sse)),
        ));
    }
    if headers.contains_key(CONTENT_TYPE) && !is_json_content_type(headers) {
        return match masker.state.non_json {
            NonJsonPolicy::Pass => Done(response),
            _ => Done(not_masked("the upstream body is not JSON")),
        };
    }
    Decision::Buffer(response)
}

/// Buffers a JSON answer (bounded), masks it and writes it once.
async fn mask_buffered(masker: &ResponseMasker, response: Response<Body>) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use std::convert::Infallible;
    use switchboard_core::sse::{Event, SseDecoder};
    use tower::{Layer, ServiceExt, service_fn};

    use crate::MaskResponseLayer;

    fn seed_layer() -> MaskResponseLayer {
        MaskResponseLayer::try_from_config(&json!({"modifiers": [
            {"regexp": {"field": "req_uri_details.path", "find": "\\b(\\d{13,16})\\b", "replace": "XXX-CREDIT-CARD-XXX"}},
            {"regexp": {"field": "req_uri_details.path", "find": "([\\d+\\-\\s]*)(\\d{4})", "replace": "XXX-$2"}}
        ]}))
        .unwrap()
    }

    fn card_stream_layer() -> MaskResponseLayer {
        MaskResponseLayer::try_from_config(&json!({"streaming": true, "modifiers": [
            {"regexp": {"field": "choices.*.delta.content", "find": "\\b(?:\\d[ -]?){13,16}\\b", "replace": "[card]"}}
        ]}))
        .unwrap()
    }

    async fn call(layer: &MaskResponseLayer, response: Response<Body>) -> Response<Body> {
        let response = std::sync::Arc::new(std::sync::Mutex::new(Some(response)));
        let inner = service_fn(move |request: Request<Body>| {
            assert!(request.headers().get(ACCEPT_ENCODING).is_none());
            let response = response.lock().unwrap().take().unwrap();
            async move { Ok::<_, Infallible>(response) }
        });
        let request = Request::builder()
            .uri("/resp-mask")
            .header(ACCEPT_ENCODING, "gzip, br")
            .body(Body::empty())
            .unwrap();
        layer.layer(inner).oneshot(request).await.unwrap()
    }

    fn json_response(value: &Value) -> Response<Body> {
        let body = value.to_string();
        Response::builder()
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap()
    }

    async fn body_json(response: Response<Body>) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn seed_echo_path_is_masked_and_length_fixed() {
        let echo = json!({"req_uri": "/__echo/123456789", "req_method": "GET",
                          "req_uri_details": {"host": "", "path": "/__echo/123456789", "query": ""}});
        let response = call(&seed_layer(), json_response(&echo)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let length: usize = response.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), length);
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["req_uri_details"]["path"], "/__echo/XXX-6789");
        assert_eq!(value["req_method"], "GET");
    }

    async fn assert_not_masked(response: Response<Body>) {
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let value = body_json(response).await;
        assert_eq!(value["error"]["code"], "response_not_masked", "{value}");
    }

    #[tokio::test]
    async fn compressed_bodies_are_refused() {
        let mut response = json_response(&json!({"req_uri_details": {"path": "/x"}}));
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, "gzip".parse().unwrap());
        assert_not_masked(call(&seed_layer(), response).await).await;
        let mut response = json_response(&json!({"a": 1}));
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, "identity".parse().unwrap());
        assert_eq!(call(&seed_layer(), response).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn non_json_bodies_are_refused_unless_passed_on_purpose() {
        let text = || {
            Response::builder()
                .header(CONTENT_TYPE, "text/plain")
                .body(Body::from("card 4111111111111111"))
                .unwrap()
        };
        assert_not_masked(call(&seed_layer(), text()).await).await;
        // No Content-Type: must parse as JSON.
        let untyped = Response::new(Body::from("<html>4111111111111111</html>"));
        assert_not_masked(call(&seed_layer(), untyped).await).await;
        // A JSON Content-Type whose body is not JSON.
        let broken = Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from("{\"a\":"))
            .unwrap();
        assert_not_masked(call(&seed_layer(), broken).await).await;

        let passing =
            MaskResponseLayer::try_from_config(&json!({"non_json": "pass", "modifiers": []}))
                .unwrap();
        let response = call(&passing, text()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"card 4111111111111111");
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let layer = MaskResponseLayer::try_from_config(&json!({"max_body_size": 64, "modifiers": [
            {"upper": {"field": "a"}}
        ]}))
        .unwrap();
        let big = json!({"a": "x".repeat(100)});
        assert_not_masked(call(&layer, json_response(&big)).await).await;
        // Without Content-Length too.
        let chunks =
            futures_util::stream::iter(vec![Ok::<_, Infallible>(Bytes::from(big.to_string()))]);
        let response = Response::builder()
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from_stream(chunks))
            .unwrap();
        assert_not_masked(call(&layer, response).await).await;
        let small = json!({"a": "yes"});
        assert_eq!(
            body_json(call(&layer, json_response(&small)).await).await,
            json!({"a": "YES"})
        );
    }

    #[tokio::test]
    async fn empty_bodies_pass() {
        let response = Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(CONTENT_TYPE, "text/plain")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            call(&seed_layer(), response).await.status(),
            StatusCode::NO_CONTENT
        );
    }

    fn sse_response(chunks: Vec<String>) -> Response<Body> {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(Bytes::from(c))),
        );
        Response::builder()
            .header(CONTENT_TYPE, "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap()
    }

    fn chunk(content: &str) -> String {
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"content": content}}]})
        )
    }

    #[tokio::test]
    async fn unbounded_config_refuses_streams() {
        let response = call(&seed_layer(), sse_response(vec![chunk("4111111111111111")])).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let value = body_json(response).await;
        let message = value["error"]["message"].as_str().unwrap();
        assert!(message.contains("modifiers[1].regexp.find"), "{message}");
    }

    #[tokio::test]
    async fn card_split_across_events_reaches_the_client_masked() {
        let input = vec![
            chunk("4111 11"),
            chunk("11 1111 "),
            chunk("1111"),
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            ),
            "data: [DONE]\n\n".to_owned(),
        ];
        let response = call(&card_stream_layer(), sse_response(input.clone())).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(CONTENT_LENGTH).is_none());
        // Frame by frame: one output event per input event.
        let mut frames = response.into_body().into_data_stream();
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events: Vec<Event> = Vec::new();
        let mut raw = Vec::new();
        while let Some(frame) = frames.next().await {
            let frame = frame.unwrap();
            raw.extend_from_slice(&frame);
            let decoded = decoder.decode(&frame).unwrap();
            assert_eq!(decoded.len(), 1);
            events.extend(decoded);
        }
        assert_eq!(events.len(), input.len());
        assert!(!String::from_utf8_lossy(&raw).contains("1111"));
        let text: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e.data.as_deref()?).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "[card]");
    }

    #[tokio::test]
    async fn oversized_event_ends_the_stream_with_an_error_event() {
        let layer =
            MaskResponseLayer::try_from_config(&json!({"max_event_size": 128, "modifiers": [
                {"upper": {"field": "choices.*.delta.content"}}
            ]}))
            .unwrap();
        let response = call(
            &layer,
            sse_response(vec![chunk("ok"), chunk(&"x".repeat(200)), chunk("never")]),
        )
        .await;
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let mut decoder = SseDecoder::new(1 << 20);
        let events = decoder.decode(&bytes).unwrap();
        assert_eq!(events.len(), 2);
        assert!(events[0].data.as_deref().unwrap().contains("\"OK\""));
        assert_eq!(events[1].event.as_deref(), Some("error"));
        assert!(!String::from_utf8_lossy(&bytes).contains("never"));
    }
}
