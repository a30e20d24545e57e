//! Rendering the OpenAI seed template for a small and a 100 KB content, and
//! a 100 KB chat request through the request body generator layer with the
//! gateway benchmark's template (`s2-tmpl`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::path::Path;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use switchboard_body_generator::{BodyTemplate, GenerateBodyLayer};
use switchboard_core::Body;
use tower::{Layer, ServiceExt, service_fn};

/// The template of the gateway benchmark's `s2-tmpl` scenario.
const S2_TEMPLATE: &str = r#"{"model": {{ .req_body.model | toJson }}, "messages": [{"role": "user", "content": {{ .req_body.prompt | toJson }}}], "max_tokens": {{ .req_body.max_tokens }}}"#;

fn filler(len: usize) -> String {
    "The quick brown fox \"jumps\" over the lazy dog.\n"
        .chars()
        .cycle()
        .take(len)
        .collect()
}

fn render(c: &mut Criterion) {
    let source = include_str!("../tests/templates/openai.tmpl");
    let template = BodyTemplate::compile(source).unwrap_or_else(|err| panic!("{err}"));
    let small = json!({"req_body": {"content": "Tell me a \"joke\" about </script>"}});
    let large = json!({"req_body": {"content": filler(100 * 1024)}});
    // Prose as prompts usually are: a line break every ~80 bytes, few quotes.
    let prose_text: String = "Summarise the following report for the board, keeping every figure. "
        .chars()
        .chain("The quarter closed with revenue up 12% and costs flat.\n".chars())
        .cycle()
        .take(100 * 1024)
        .collect();
    let prose = json!({"req_body": {"content": prose_text}});
    c.bench_function("openai_small", |b| {
        b.iter(|| template.render(black_box(&small)))
    });
    c.bench_function("openai_100kb", |b| {
        b.iter(|| template.render(black_box(&large)))
    });
    c.bench_function("openai_100kb_prose", |b| {
        b.iter(|| template.render(black_box(&prose)))
    });

    let s2 = BodyTemplate::compile(S2_TEMPLATE).unwrap_or_else(|err| panic!("{err}"));
    let s2_data = json!({"req_body": {"model": "gpt-4o", "prompt": prose_text, "max_tokens": 128}});
    c.bench_function("s2_tmpl_render_100kb", |b| {
        b.iter(|| s2.render(black_box(&s2_data)))
    });

    // The whole request: the client's bytes read, parsed and rendered.
    let layer = GenerateBodyLayer::try_from_config(
        &json!({"template": base64::engine::general_purpose::STANDARD.encode(S2_TEMPLATE)}),
        Path::new("."),
    )
    .unwrap();
    // The gateway benchmark's prompt: words and spaces, nothing to escape.
    let words: String = "the quick brown fox jumps over the lazy dog "
        .chars()
        .cycle()
        .take(100 * 1024)
        .collect();
    let body = bytes::Bytes::from(
        json!({"model": "gpt-4o", "prompt": words, "max_tokens": 128}).to_string(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    c.bench_function("s2_tmpl_request_100kb", |b| {
        b.iter(|| {
            let inner = service_fn(|request: Request<Body>| async move {
                let bytes = request.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(Response::new(Body::from(bytes)))
            });
            let request = Request::post("/s2-tmpl")
                .header("content-type", "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            runtime.block_on(async {
                let response = layer.layer(inner).oneshot(request).await.unwrap();
                black_box(response.into_body().collect().await.unwrap().to_bytes())
            })
        })
    });
}

criterion_group!(benches, render);
criterion_main!(benches);
