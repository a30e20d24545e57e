//! The service: thin glue between tower and the pure mapping in
//! `translate`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, RETRY_AFTER};
use http::{Request, Response, request};
use serde_json::Value;
use switchboard_core::buffer::{is_event_stream, json_request, response_bytes, set_body_headers};
use switchboard_core::sse::{Event, SseDecoder};
use switchboard_core::{Body, BoxError, ErrorResponse, JsonBody};
use tower::Service;

use crate::layer::State;
use crate::translate::{Invalid, acme_event_to_chunks, acme_fault, acme_to_chat, chat_to_acme};

/// Middleware that lets OpenAI-style clients talk to an Acme backend: it
/// rewrites the chat request into Acme's dialect on the way in and Acme's
/// answer (buffered JSON or an event stream, frame by frame) into OpenAI's
/// on the way out. Built by [`TranslateToAcmeLayer`](crate::TranslateToAcmeLayer).
#[derive(Clone, Debug)]
pub struct TranslateToAcme<S> {
    inner: S,
    state: Arc<State>,
}

impl<S> TranslateToAcme<S> {
    pub(crate) fn new(inner: S, state: Arc<State>) -> Self {
        Self { inner, state }
    }
}

impl<S> Service<Request<Body>> for TranslateToAcme<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The service that was polled ready goes into the future; a clone
        // stays behind for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let (parts, body, model) = match translate_request(request, &state).await {
                Ok(translated) => translated,
                // A rejection is a response, never an error.
                Err(error) => return Ok(error.into_response()),
            };
            let response = inner.call(Request::from_parts(parts, body)).await?;
            Ok(translate_response(response, model, &state)
                .await
                .unwrap_or_else(ErrorResponse::into_response))
        })
    }
}

/// Buffers the client's body (bounded by its `BodyLimit`: 413 over it),
/// rewrites it for Acme and fixes the body headers. Returns the model the
/// client asked for, to name it in the answer.
async fn translate_request(
    request: Request<Body>,
    state: &State,
) -> Result<(request::Parts, Body, String), ErrorResponse> {
    let (request, json) = json_request(request).await?;
    let Some(json) = json else {
        return Err(ErrorResponse::bad_request(
            "the body must be an OpenAI chat completion request in JSON",
        )
        .with_code("invalid_body"));
    };
    let acme = chat_to_acme(json.value(), &state.engines).map_err(|Invalid(message)| {
        ErrorResponse::bad_request(message).with_code("invalid_body")
    })?;
    let model = json
        .value()
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(&state.engines.default)
        .to_owned();
    let (mut parts, _client_body) = request.into_parts();
    let bytes = Bytes::from(acme.to_string());
    set_body_headers(&mut parts.headers, bytes.len(), Some("application/json"));
    // Later layers that read `JsonBody` must see the body actually sent.
    parts.extensions.insert(JsonBody::new(acme));
    Ok((parts, Body::from(bytes), model))
}

async fn translate_response(
    response: Response<Body>,
    model: String,
    state: &State,
) -> Result<Response<Body>, ErrorResponse> {
    if is_event_stream(response.headers()) {
        // Never buffered: translated event by event as chunks arrive.
        return Ok(translate_stream(response, model, state.max_response_size));
    }
    let (parts, bytes) = response_bytes(response, state.max_response_size).await?;
    let value = serde_json::from_slice::<Value>(&bytes).ok();
    if !parts.status.is_success() {
        // Acme's own error, in OpenAI's shape, with Acme's status and retry
        // advice: a 429 stays a 429.
        let reason = value
            .as_ref()
            .and_then(acme_fault)
            .unwrap_or("Acme answered an error");
        let mut error = ErrorResponse::new(parts.status, "upstream_error", reason);
        if let Some(retry_after) = parts.headers.get(RETRY_AFTER) {
            error = error.with_header(RETRY_AFTER, retry_after.clone());
        }
        return Err(error);
    }
    let value =
        value.ok_or_else(|| ErrorResponse::bad_gateway("Acme answered a body that is not JSON"))?;
    let chat = acme_to_chat(&value, &model)
        .map_err(|Invalid(message)| ErrorResponse::bad_gateway(message))?;
    let bytes = Bytes::from(chat.to_string());
    let mut response = Response::from_parts(parts, Body::from(bytes.clone()));
    set_body_headers(
        response.headers_mut(),
        bytes.len(),
        Some("application/json"),
    );
    Ok(response)
}

/// Rewrites an Acme event stream into OpenAI chunks as it flows. Only the
/// event being read is held (at most `max_event` bytes; a larger one ends
/// the stream with an error).
fn translate_stream(response: Response<Body>, model: String, max_event: usize) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut decoder = SseDecoder::new(max_event);
    let stream = body
        .into_data_stream()
        .map(move |chunk| -> Result<Bytes, BoxError> {
            let mut out = Vec::new();
            for event in decoder.decode(&chunk?)? {
                translate_event(&event, &model, created, &mut out);
            }
            Ok(Bytes::from(out))
        })
        // A chunk that completes no event yields nothing.
        .filter(|item| std::future::ready(!matches!(item, Ok(bytes) if bytes.is_empty())));
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(stream))
}

fn translate_event(event: &Event, model: &str, created: u64, out: &mut Vec<u8>) {
    let data = event
        .data
        .as_deref()
        .and_then(|data| serde_json::from_str::<Value>(data).ok());
    match data.and_then(|data| acme_event_to_chunks(event.event.as_deref(), &data, model, created))
    {
        Some(chunks) => {
            for chunk in chunks {
                Event::data(chunk).encode_into(out);
            }
        }
        // Keep-alive comments and events that are not Acme's pass as they came.
        None => event.encode_into(out),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http::StatusCode;
    use http::header::CONTENT_TYPE;
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::{Layer, ServiceExt, service_fn};

    use super::*;
    use crate::TranslateToAcmeLayer;

    fn layer() -> TranslateToAcmeLayer {
        TranslateToAcmeLayer::try_from_config(&json!({
            "engines": {"gpt-4o": "acme-large"}
        }))
        .unwrap()
    }

    fn chat_request(body: impl Into<Body>) -> Request<Body> {
        Request::post("/v1/chat/completions")
            .header(CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap()
    }

    fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(value.to_string()))
            .unwrap()
    }

    async fn body_json(response: Response<Body>) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn request_and_answer_are_translated() {
        let acme = service_fn(|request: Request<Body>| async move {
            let length: usize = request.headers()[CONTENT_LENGTH]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                request.extensions().get::<JsonBody>().unwrap().value()["engine"],
                "acme-large"
            );
            let bytes = request.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes.len(), length);
            let sent: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                sent,
                json!({"engine": "acme-large", "prompt": "user: Hello\nassistant:"})
            );
            let answer = json!({
                "id": "acme-42", "created": 1700000000,
                "output": {"text": "Hi!"}, "finish": "stop", "tokens": {"in": 3, "out": 1}
            });
            Ok::<_, Infallible>(json_response(StatusCode::OK, &answer))
        });
        let request = chat_request(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]})
                .to_string(),
        );
        let response = layer().layer(acme).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let chat = body_json(response).await;
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["id"], "acme-42");
        assert_eq!(chat["model"], "gpt-4o");
        assert_eq!(chat["choices"][0]["message"]["content"], "Hi!");
        assert_eq!(chat["usage"]["total_tokens"], 4);
    }

    #[tokio::test]
    async fn non_json_bodies_are_refused_before_the_vendor() {
        let called = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&called);
        let acme = service_fn(move |_request: Request<Body>| {
            seen.store(true, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Body::empty())) }
        });
        let service = layer().layer(acme);

        let response = service
            .clone()
            .oneshot(chat_request("model=gpt-4o"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-should-retry"], "false");
        let error = body_json(response).await;
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["code"], "invalid_body");

        let response = service
            .oneshot(chat_request(r#"{"model": "gpt-4o"}"#))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let error = body_json(response).await;
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("messages")
        );
        assert!(!called.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn vendor_errors_keep_status_and_retry_advice() {
        let acme = service_fn(|_request: Request<Body>| async {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"fault": {"reason": "slow down"}}),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, "3".parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        let request = chat_request(r#"{"messages": [{"role": "user", "content": "x"}]}"#);
        let response = layer().layer(acme).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert!(response.headers().get("x-should-retry").is_none());
        let error = body_json(response).await;
        assert_eq!(error["error"]["message"], "slow down");
    }

    #[tokio::test]
    async fn streams_are_translated_event_by_event() {
        let acme = service_fn(|request: Request<Body>| async move {
            let sent = request.into_body().collect().await.unwrap().to_bytes();
            let sent: Value = serde_json::from_slice(&sent).unwrap();
            assert_eq!(sent["stream"], true);
            // One event split across two chunks, and a keep-alive comment.
            let chunks: Vec<Result<Bytes, Infallible>> = vec![
                Ok(Bytes::from_static(b"event: token\ndata: {\"te")),
                Ok(Bytes::from_static(b"xt\": \"Hel\"}\n\n: ping\n\n")),
                Ok(Bytes::from_static(b"event: token\ndata: {\"text\": \"lo\"}\n\n")),
                Ok(Bytes::from_static(
                    b"event: end\ndata: {\"finish\": \"stop\", \"tokens\": {\"in\": 2, \"out\": 2}}\n\n",
                )),
            ];
            let response = Response::builder()
                .header(CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .unwrap();
            Ok::<_, Infallible>(response)
        });
        let request = chat_request(
            r#"{"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]}"#,
        );
        let response = layer().layer(acme).oneshot(request).await.unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "text/event-stream");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let mut decoder = SseDecoder::new(1024);
        let events = decoder.decode(&bytes).unwrap();
        assert_eq!(events.len(), 5, "{events:?}");
        let first: Value = serde_json::from_str(events[0].data.as_deref().unwrap()).unwrap();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(events[1].comments, vec![" ping".to_owned()]);
        let last: Value = serde_json::from_str(events[3].data.as_deref().unwrap()).unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[4].data.as_deref(), Some("[DONE]"));
    }
}
