//! Rendering the OpenAI seed template for a small and a 100 KB content.

#![allow(clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use switchboard_body_generator::BodyTemplate;

fn render(c: &mut Criterion) {
    let source = include_str!("../tests/templates/openai.tmpl");
    let template = BodyTemplate::compile(source).unwrap_or_else(|err| panic!("{err}"));
    let small = json!({"req_body": {"content": "Tell me a \"joke\" about </script>"}});
    let large_text: String = "The quick brown fox \"jumps\" over the lazy dog.\n"
        .chars()
        .cycle()
        .take(100 * 1024)
        .collect();
    let large = json!({"req_body": {"content": large_text}});
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
}

criterion_group!(benches, render);
criterion_main!(benches);
