//! A fixed number of renders, for instruction counts under callgrind:
//! `valgrind --tool=callgrind <bench binary> <case> <iterations>`; the count
//! per request is the difference between two iteration counts divided by
//! their difference. Cases: `render` (the `s2-tmpl` template on a parsed
//! 100 KB prompt), `dense` (the OpenAI seed template on a 100 KB text
//! with a quote every 24 bytes) and `request` (the same through the request layer, from
//! the client's bytes).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::path::Path;

use base64::Engine as _;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use switchboard_body_generator::{BodyTemplate, GenerateBodyLayer};
use switchboard_core::Body;
use tower::{Layer, ServiceExt, service_fn};

/// The template of the gateway benchmark's `s2-tmpl` scenario.
const S2_TEMPLATE: &str = r#"{"model": {{ .req_body.model | toJson }}, "messages": [{"role": "user", "content": {{ .req_body.prompt | toJson }}}], "max_tokens": {{ .req_body.max_tokens }}}"#;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`: nothing to count then.
    let (Some(case), Some(iterations)) = (args.get(1), args.get(2)) else {
        return;
    };
    let Ok(iterations) = iterations.parse::<usize>() else {
        return;
    };
    let words: String = "the quick brown fox jumps over the lazy dog "
        .chars()
        .cycle()
        .take(100 * 1024)
        .collect();
    match case.as_str() {
        "render" => {
            let template = BodyTemplate::compile(S2_TEMPLATE).unwrap();
            let data = json!({"req_body": {"model": "gpt-4o", "prompt": words, "max_tokens": 128}});
            for _ in 0..iterations {
                black_box(template.render(black_box(&data)).unwrap());
            }
        }
        "dense" => {
            // A quote every 24 bytes: the escape path rather than the scan.
            let template =
                BodyTemplate::compile(include_str!("../tests/templates/openai.tmpl")).unwrap();
            let text: String = "The quick brown fox \"jumps\" over the lazy dog.\n"
                .chars()
                .cycle()
                .take(100 * 1024)
                .collect();
            let data = json!({"req_body": {"content": text}});
            for _ in 0..iterations {
                black_box(template.render(black_box(&data)).unwrap());
            }
        }
        "request" => {
            let layer = GenerateBodyLayer::try_from_config(
                &json!({"template": base64::engine::general_purpose::STANDARD.encode(S2_TEMPLATE)}),
                Path::new("."),
            )
            .unwrap();
            let body = bytes::Bytes::from(
                json!({"model": "gpt-4o", "prompt": words, "max_tokens": 128}).to_string(),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for _ in 0..iterations {
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
                });
            }
        }
        other => panic!("unknown case {other}"),
    }
}
