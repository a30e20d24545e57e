//! The service with an in-process vendor: usage reporting and body reading.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard_core::{Body, BodyLimit, Outcome, Usage, UsageReport};
use tower::{Layer, ServiceExt, service_fn};

use crate::{ClientFormat, Provider, Providers, RouteLlmLayer, Secret, SelectedProvider};

type Seen = Arc<Mutex<Option<(Usage, Outcome)>>>;

fn watched(report: &UsageReport) -> Seen {
    let seen: Seen = Arc::new(Mutex::new(None));
    let slot = seen.clone();
    report.on_finish(move |usage, outcome| {
        *slot.lock().unwrap() = Some((usage.clone(), outcome));
    });
    seen
}

fn provider(name: &str) -> Provider {
    Provider::builtin(
        name,
        "openai-compatible",
        Some("http://vendor.test/v1/chat/completions"),
        Some("m"),
        Secret::new("k"),
    )
    .unwrap()
    .with_format(ClientFormat::OpenAi)
}

fn chat(body: Value) -> (Request<Body>, UsageReport) {
    let mut request = Request::post("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap();
    let report = UsageReport::get_or_insert(request.extensions_mut());
    (request, report)
}

#[tokio::test]
async fn whole_answers_report_usage_once() {
    let vendor = service_fn(|request: Request<Body>| async move {
        assert_eq!(request.uri(), "http://vendor.test/v1/chat/completions");
        assert_eq!(request.headers()["authorization"], "Bearer k");
        let body = json!({"id": "x", "model": "m-2025", "choices": [{"index": 0,
            "message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 4}}});
        Ok::<_, Infallible>(Response::new(Body::from(body.to_string())))
    });
    let service = RouteLlmLayer::for_provider(provider("p")).layer(vendor);
    let (request, report) =
        chat(json!({"model": "m", "messages": [{"role": "user", "content": "hey"}]}));
    let seen = watched(&report);
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let (usage, outcome) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.cached_tokens),
        (5, 2, 4)
    );
    assert_eq!(usage.provider.as_deref(), Some("p"));
    assert_eq!(usage.model.as_deref(), Some("m-2025"));
}

#[tokio::test]
async fn a_cancelled_stream_reports_what_was_streamed() {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let vendor = service_fn(move |_request: Request<Body>| {
        let rx = rx.lock().unwrap().take().unwrap();
        async move {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
            });
            let mut response = Response::new(Body::new(http_body_util::StreamBody::new(stream)));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            Ok::<_, Infallible>(response)
        }
    });
    let service = RouteLlmLayer::for_provider(provider("p")).layer(vendor);
    let (request, report) = chat(json!({"model": "m", "stream": true,
        "messages": [{"role": "user", "content": "hey"}]}));
    let seen = watched(&report);
    drop(report);
    let response = service.oneshot(request).await.unwrap();
    let mut body = response.into_body();
    tx.send(Bytes::from_static(
        b"data: {\"id\":\"s\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"He\"}}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n",
    ))
    .await
    .unwrap();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&frame).contains("\"He\""));
    assert!(seen.lock().unwrap().is_none());
    drop(body);
    let (usage, outcome) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    assert_eq!((usage.input_tokens, usage.output_tokens), (9, 1));
}

#[tokio::test]
async fn selection_limits_and_listing() {
    let vendor = service_fn(|request: Request<Body>| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let answer = json!({"choices": [{"index": 0, "message": {"content": sent["model"]},
            "finish_reason": "stop"}]});
        Ok::<_, Infallible>(Response::new(Body::from(answer.to_string())))
    });
    let a = provider("a");
    let b = Provider::builtin(
        "b",
        "openai-compatible",
        Some("http://vendor.test/v1/chat/completions"),
        Some("model-of-b"),
        Secret::new("k"),
    )
    .unwrap();
    let layer = RouteLlmLayer::new(Providers::new(vec![a, b]));
    let answer = |response: Response<Body>| async move {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    };
    // The model naming an inventory provider chooses it.
    let (request, _) = chat(json!({"model": "b", "messages": [{"role": "user", "content": "x"}]}));
    let response = layer.layer(vendor).oneshot(request).await.unwrap();
    assert_eq!(
        answer(response).await["choices"][0]["message"]["content"],
        "model-of-b"
    );
    // A router's choice wins over the body.
    let (mut request, _) =
        chat(json!({"model": "b", "messages": [{"role": "user", "content": "x"}]}));
    request
        .extensions_mut()
        .insert(SelectedProvider("a".into()));
    let response = layer.layer(vendor).oneshot(request).await.unwrap();
    assert_eq!(
        answer(response).await["choices"][0]["message"]["content"],
        "m"
    );
    // Off, the body cannot pick another provider.
    let (request, _) = chat(json!({"model": "b", "messages": [{"role": "user", "content": "x"}]}));
    let pinned = layer.clone().route_by_model(false);
    let response = pinned.layer(vendor).oneshot(request).await.unwrap();
    assert_eq!(
        answer(response).await["choices"][0]["message"]["content"],
        "m"
    );
    // Over the body limit: 413 in the client's shape, vendor not called.
    let (mut request, _) =
        chat(json!({"model": "a", "messages": [{"role": "user", "content": "x".repeat(100)}]}));
    request.extensions_mut().insert(BodyLimit(50));
    let response = layer.layer(vendor).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer(response).await["error"]["message"].is_string());
    let response = layer
        .layer(vendor)
        .oneshot(Request::get("/v1/models").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let models = answer(response).await;
    assert_eq!(models["data"][1]["id"], "b");
    assert_eq!(models["data"][1]["owned_by"], "openai-compatible");
}
