//! Translation cost per vendor: one recorded-shape answer read into the IR
//! and written as an OpenAI Chat Completions body (per response), and one
//! recorded stream decoded and re-encoded as OpenAI chunks (reported per
//! event). Fixtures come from `tests/fixtures/llm/<vendor>/`.

#![allow(clippy::unwrap_used, missing_docs)] // a bench: a bad fixture should stop it

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchboard_llm_router::{ClientFormat, StreamEvent, vendors};

/// (fixture directory, provider, endpoint, stream file)
const VENDORS: &[(&str, &str, Option<&str>, &str)] = &[
    ("gemini", "gemini", None, "stream.sse"),
    ("bedrock", "bedrock", None, "stream_tools.bin"),
    ("cohere", "cohere", None, "stream_tools.sse"),
    (
        "ollama-native",
        "ollama",
        Some("http://127.0.0.1:11434/api/chat"),
        "stream.ndjson",
    ),
    (
        "openai-responses",
        "openai",
        Some("https://api.openai.com/v1/responses"),
        "stream.sse",
    ),
];

fn fixture(vendor: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llm")
        .join(vendor)
        .join(name)
}

fn bench(c: &mut Criterion) {
    let mut responses = c.benchmark_group("vendor_response_to_openai");
    for (dir, provider, endpoint, _) in VENDORS {
        let adapter = vendors::adapter_for(provider, *endpoint).unwrap();
        let body = std::fs::read(fixture(dir, "response.json")).unwrap();
        responses.throughput(Throughput::Elements(1));
        responses.bench_function(*dir, |b| {
            b.iter(|| {
                let response = adapter.parse_response(black_box(&body)).unwrap();
                black_box(ClientFormat::OpenAi.render_response(&response, "model"))
            });
        });
    }
    responses.finish();

    let mut streams = c.benchmark_group("vendor_stream_to_openai_per_event");
    for (dir, provider, endpoint, stream) in VENDORS {
        let adapter = vendors::adapter_for(provider, *endpoint).unwrap();
        let bytes = std::fs::read(fixture(dir, stream)).unwrap();
        let mut events = Vec::new();
        let mut decoder = adapter.stream_decoder();
        decoder.decode(&bytes, &mut events);
        decoder.finish(&mut events);
        assert!(!matches!(events.last(), Some(StreamEvent::Error(_))));
        streams.throughput(Throughput::Elements(events.len() as u64));
        streams.bench_function(*dir, |b| {
            let mut events = Vec::with_capacity(64);
            let mut out = Vec::with_capacity(4096);
            b.iter(|| {
                events.clear();
                out.clear();
                let mut decoder = adapter.stream_decoder();
                decoder.decode(black_box(&bytes), &mut events);
                decoder.finish(&mut events);
                let mut encoder = ClientFormat::OpenAi.stream_encoder("model", true).unwrap();
                for event in &events {
                    encoder.encode(event, &mut out);
                }
                encoder.finish(&mut out);
                black_box(out.len())
            });
        });
    }
    streams.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
