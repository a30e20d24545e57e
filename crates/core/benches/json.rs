//! The request-body parse every JSON-reading layer shares
//! (`json::from_slice_unique`), with serde_json's reader and with
//! sonic-rs's SIMD reader driving the same duplicate-refusing visitor.
//! Run: `cargo bench -p switchboard-core --bench json`.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::de::DeserializeSeed;
use serde_json::{Value, json};
use switchboard_core::json::{UniqueSeed, from_slice_unique};

fn small_chat() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello to the gateway in one short sentence."}
        ],
        "temperature": 0.2,
        "max_tokens": 64,
        "stream": false
    }))
    .unwrap()
}

/// The s2-tmpl body: a 100 KB prompt of prose with quotes and newlines.
fn large_prompt() -> Vec<u8> {
    let sentence = "The gateway reads \"every\" prompt once,\nthen hands it on. ";
    let mut prompt = String::with_capacity(100 * 1024);
    while prompt.len() < 100 * 1024 {
        prompt.push_str(sentence);
    }
    serde_json::to_vec(&json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 256
    }))
    .unwrap()
}

fn sonic_unique(bytes: &[u8]) -> Value {
    let mut deserializer = sonic_rs::Deserializer::from_slice(bytes);
    let value = UniqueSeed.deserialize(&mut deserializer).unwrap();
    deserializer.end().unwrap();
    value
}

fn parse(c: &mut Criterion) {
    for (name, body) in [
        ("small_chat", small_chat()),
        ("prompt_100k", large_prompt()),
    ] {
        assert_eq!(from_slice_unique(&body).unwrap(), sonic_unique(&body));
        let mut group = c.benchmark_group(format!("parse/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("serde_json", |b| {
            b.iter(|| from_slice_unique(black_box(&body)).unwrap())
        });
        group.bench_function("sonic_rs", |b| b.iter(|| sonic_unique(black_box(&body))));
        let value = from_slice_unique(&body).unwrap();
        group.bench_function("serde_json_write", |b| {
            b.iter(|| serde_json::to_vec(black_box(&value)).unwrap())
        });
        group.bench_function("sonic_rs_write", |b| {
            b.iter(|| sonic_rs::to_vec(black_box(&value)).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);
