//! Masking throughput: a buffered 1 MB JSON document and an event stream of
//! 2,000 events.

// A failed unwrap here is a broken bench, as in a test.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use switchboard_response_masker::ResponseMasker;

fn masker() -> ResponseMasker {
    ResponseMasker::try_from_config(&json!({
        "streaming": true,
        "modifiers": [
            {"regexp": {"field": "items.*.text", "find": "\\b(?:\\d[ -]?){13,16}\\b", "replace": "[card]"}},
            {"regexp": {"field": "choices.*.delta.content", "find": "\\b(?:\\d[ -]?){13,16}\\b", "replace": "[card]"}},
            {"literal": {"field": "items.*.text", "find": "secret", "replace": "******"}}
        ]
    }))
    .unwrap()
}

fn document() -> Vec<u8> {
    let mut items = Vec::new();
    let mut size = 0;
    let mut i = 0;
    while size < 1_000_000 {
        let text = format!(
            "item {i}: pay with 4111 1111 1111 1111 or keep the secret; plain words follow here"
        );
        size += text.len() + 32;
        items.push(json!({"id": i, "text": text}));
        i += 1;
    }
    serde_json::to_vec(&json!({"items": items})).unwrap()
}

fn event_stream() -> Vec<Vec<u8>> {
    (0..2000)
        .map(|i| {
            let content = if i % 10 == 3 {
                "card 4111 1111 ".to_owned()
            } else {
                format!("token {i} and words ")
            };
            format!(
                "data: {}\n\n",
                json!({"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]})
            )
            .into_bytes()
        })
        .chain(std::iter::once(b"data: [DONE]\n\n".to_vec()))
        .collect()
}

fn buffered(c: &mut Criterion) {
    let masker = masker();
    let body = document();
    let mut group = c.benchmark_group("buffered");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("json_1mb", |b| {
        b.iter(|| {
            let mut value: Value = serde_json::from_slice(black_box(&body)).unwrap();
            masker.mask_value(&mut value);
            serde_json::to_vec(&value).unwrap()
        })
    });
    group.finish();
}

fn streamed(c: &mut Criterion) {
    let masker = masker();
    let chunks = event_stream();
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("streamed");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("sse_2000_events", |b| {
        b.iter(|| {
            let mut stream = masker.sse_masker().unwrap();
            let mut out = 0;
            for chunk in &chunks {
                out += stream.push(black_box(chunk)).unwrap().len();
            }
            out + stream.finish().unwrap().len()
        })
    });
    group.finish();
}

criterion_group!(benches, buffered, streamed);
criterion_main!(benches);
