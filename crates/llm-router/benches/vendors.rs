//! Translation cost per vendor: one recorded-shape answer read into the IR
//! and written as an OpenAI Chat Completions body (per response), and one
//! recorded stream decoded and re-encoded as OpenAI chunks (reported per
//! event). Fixtures come from `tests/fixtures/llm/<vendor>/`; Bedrock's
//! stream is encoded as AWS event-stream frames first.

#![allow(clippy::unwrap_used, missing_docs)] // a bench: a bad fixture should stop it

use std::hint::black_box;
use std::path::{Path, PathBuf};

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use switchboard_llm_router::{ClientFormat, StreamEvent, vendors};

/// (fixture directory, provider, endpoint, stream file)
const VENDORS: &[(&str, &str, Option<&str>, &str)] = &[
    ("gemini", "gemini", None, "stream.sse"),
    ("bedrock", "bedrock", None, "stream_tools.frames.json"),
    ("cohere", "cohere", None, "stream_tools.sse"),
    ("ollama", "ollama", Some("http://127.0.0.1:11434/api/chat"), "stream.ndjson"),
    ("openai-responses", "openai", Some("https://api.openai.com/v1/responses"), "stream.sse"),
];

fn fixture(vendor: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llm")
        .join(vendor)
        .join(name)
}

fn stream_bytes(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if !path.to_str().unwrap().ends_with(".frames.json") {
        return raw;
    }
    let frames: Vec<Value> = serde_json::from_slice(&raw).unwrap();
    let mut out = Vec::new();
    for frame in frames {
        let header = |name: &str, value: &str| {
            Header::new(name.to_owned(), HeaderValue::String(value.to_owned().into()))
        };
        let message = Message::new(frame["payload"].to_string().into_bytes())
            .add_header(header(":event-type", frame["event"].as_str().unwrap()))
            .add_header(header(":content-type", "application/json"))
            .add_header(header(":message-type", "event"));
        aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    }
    out
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
        let bytes = stream_bytes(&fixture(dir, stream));
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
