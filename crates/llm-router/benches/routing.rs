//! Routing decision cost: gates (header and CEL) and the route walk.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchboard_core::{Claims, JsonBody};
use switchboard_llm_router::routing::{Classifiers, ClassifiersConfig, Router, RouterConfig};

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

criterion_group!(benches, bench);
criterion_main!(benches);
