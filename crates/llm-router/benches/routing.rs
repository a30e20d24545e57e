//! Routing decision cost: gates (header and CEL) and the route walk.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchboard_core::{Body, Claims, JsonBody};
use switchboard_llm_router::routing::{Classifiers, ClassifiersConfig, Router, RouterConfig};
use switchboard_llm_router::{Providers, RouteLlmLayer};
use tower::{Layer, ServiceExt};

fn router() -> Router {
    let classifiers: ClassifiersConfig = serde_json::from_value(json!({"gates": [
        {"name": "pro", "rule": "header", "header": {"name": "X-Plan", "value": "pro"}},
        {"name": "code", "rule": "policy", "policy": {"value": "getHeader('X-Task') == 'code'"}},
        {"name": "gold", "rule": "policy", "policy": {"value": "JWT.tier == 'gold'"}},
        {"name": "long", "rule": "policy", "policy": {"value": "size(req_body.contents) > 100"}}
    ]}))
    .unwrap_or_default();
    let classifiers = Arc::new(Classifiers::from_config(&classifiers).unwrap_or_default());
    let config: RouterConfig = serde_json::from_value(json!({"failover": "fast", "routes": [
        {"gates": ["gold", "long"], "provider": "smart"},
        {"gates": ["pro"], "routes": [
            {"gates": ["code"], "provider": "smart", "failover": "cheap"},
            {"provider": "cheap"}]},
        {"provider": "fast"}]}))
    .expect("router config");
    Router::compile(&config, classifiers, &["fast", "smart", "cheap"]).expect("router")
}

fn bench(c: &mut Criterion) {
    let router = router();
    let mut request = http::Request::builder()
        .header("x-plan", "pro")
        .header("x-task", "code")
        .body(())
        .expect("request");
    request
        .extensions_mut()
        .insert(Claims::new(json!({"tier": "silver"})));
    let body = JsonBody::new(json!({"contents": "short"}));
    c.bench_function("decide/header_and_cel_gates", |b| {
        b.iter(|| router.decide(&request, Some(&body)))
    });
    let plain = http::Request::builder().body(()).expect("request");
    c.bench_function("decide/catch_all", |b| {
        b.iter(|| router.decide(&plain, None))
    });
}

/// The whole failover path in process: the primary answers 500, the
/// secondary answers; the inner service stands in for the HTTP client.
fn failover(c: &mut Criterion) {
    let providers = Providers::from_config(&json!({"providers": [
        {"name": "a", "provider": "openai-compatible", "model": "m",
         "endpoint": "http://a.invalid/v1/chat/completions", "credentials": "k", "format": "openai"},
        {"name": "b", "provider": "openai-compatible", "model": "m",
         "endpoint": "http://b.invalid/v1/chat/completions", "credentials": "k", "format": "openai"}
    ]}))
    .unwrap();
    let config: RouterConfig =
        serde_json::from_value(json!({"failover": "b", "routes": [{"provider": "a"}]})).unwrap();
    let layer = RouteLlmLayer::new(providers)
        .with_router(&config, Arc::new(Classifiers::default()))
        .unwrap();
    let answer = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
    .to_string();
    let inner = tower::service_fn(move |request: http::Request<Body>| {
        let answer = answer.clone();
        async move {
            let failed = request.uri().host() == Some("a.invalid");
            let mut response = http::Response::new(Body::from(if failed {
                r#"{"error": {"message": "down"}}"#.to_owned()
            } else {
                answer
            }));
            if failed {
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let service = layer.layer(inner);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;
    c.bench_function("failover/primary_500_secondary_answers", |b| {
        b.iter(|| {
            let request = http::Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            runtime.block_on(service.clone().oneshot(request)).unwrap()
        })
    });
}

criterion_group!(benches, bench, failover);
criterion_main!(benches);
