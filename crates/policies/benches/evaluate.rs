//! Cost of evaluating policies per request: the seed policy, a 3-policy set
//! reading the JSON body, and a JWT policy. The inner service answers at
//! once, so the numbers are the layer's own overhead.

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use serde_json::{Value, json};
use switchboard_core::{Body, Claims};
use switchboard_policies::EvaluatePoliciesLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn service(
    config: Value,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
    let layer = EvaluatePoliciesLayer::try_from_config(&config).unwrap();
    layer.layer(service_fn(|_request: Request<Body>| async {
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let seed = service(json!({
        "auto_join_policies": true,
        "req": {"policies": ["req_headers['X-Llm'][0] in ['gemini','openai']"]}
    }));
    c.bench_function("seed policy (req_headers)", |b| {
        b.iter(|| {
            let request = Request::builder()
                .uri("/multi-llm")
                .header("x-llm", "openai")
                .header("content-type", "application/json")
                .header("authorization", "Bearer x")
                .body(Body::empty())
                .unwrap();
            let response = runtime.block_on(seed.clone().oneshot(request)).unwrap();
            black_box(response);
        });
    });

    let body_set = service(json!({
        "req": {"policies": [
            "req_method == 'POST'",
            "req_body.model in ['gpt-4o', 'gpt-4o-mini']",
            "size(req_body.messages) <= 16 && between(req_body.temperature, 0.0, 1.0)"
        ]}
    }));
    let payload = json!({
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    })
    .to_string();
    c.bench_function("3 policies with req_body", |b| {
        b.iter(|| {
            let request = Request::builder()
                .method("POST")
                .header("content-type", "application/json")
                .body(Body::from(payload.clone()))
                .unwrap();
            let response = runtime.block_on(body_set.clone().oneshot(request)).unwrap();
            black_box(response);
        });
    });

    let jwt = service(json!({
        "jwt": {"policies": ["has(JWT.llm) && JWT.llm in ['gemini', 'openai'] && 'ai' in JWT.scopes"]}
    }));
    let claims = Claims::new(
        json!({"sub": "u1", "llm": "openai", "scopes": ["ai", "read"], "exp": 2000000000}),
    );
    c.bench_function("jwt policy", |b| {
        b.iter(|| {
            let request = Request::builder()
                .extension(claims.clone())
                .body(Body::empty())
                .unwrap();
            let response = runtime.block_on(jwt.clone().oneshot(request)).unwrap();
            black_box(response);
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
