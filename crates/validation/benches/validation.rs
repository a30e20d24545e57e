//! Cost of a schema check and of a regex + policy guard on a chat body.

use std::convert::Infallible;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use serde_json::json;
use switchboard_core::Body;
use switchboard_validation::{PromptGuards, ValidateJsonSchemaLayer};
use tower::{Layer, ServiceExt, service_fn};

fn bench(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "Explain token buckets in two sentences."}]}).to_string();
    let inner = service_fn(|_req: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    });
    let request = || {
        Request::post("/chat")
            .header("content-type", "application/json")
            .body(Body::from(body.clone()))
            .unwrap_or_default()
    };
    if let Ok(schema) = ValidateJsonSchemaLayer::try_from_config(
        &json!({"type": "object", "required": ["messages"],
        "properties": {"messages": {"type": "array", "items": {"type": "object", "required": ["role", "content"]}}}}),
    ) {
        let service = schema.layer(inner);
        c.bench_function("json-schema check", |b| {
            b.iter(|| runtime.block_on(service.clone().oneshot(request())))
        });
    }
    if let Ok(guards) = PromptGuards::try_from_config(&json!({"guards": [
        {"name": "keys", "kind": "regex", "severity": "critical", "config": {"patterns": ["sk-[A-Za-z0-9]{20,}", "(?i)password\\s*[:=]"]}},
        {"name": "size", "kind": "policy", "severity": "low", "config": {"expressions": ["body.messages.size() > 50"]}}]}))
        && let Ok(layer) = guards.layer(&json!({}))
    {
        let service = layer.layer(inner);
        c.bench_function("prompt guard regex + policy", |b| {
            b.iter(|| runtime.block_on(service.clone().oneshot(request())))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
